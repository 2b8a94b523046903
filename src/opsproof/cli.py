"""The `opsproof` command. Errors end with one clear line on stderr: exit 2 for bad input, 1 for failures."""

from __future__ import annotations

import sys

import typer

from opsproof.errors import OpsproofError
from opsproof.stack.cli import app as stack_app

app = typer.Typer(help="Operate and prove a Supabase-backed autonomous TMS.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(stack_app, name="stack")


def _print_version(value: bool) -> None:
    if value:
        from opsproof import __version__

        typer.echo(f"opsproof {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Operate and prove a Supabase-backed autonomous TMS."""


def _suite_command(marker: str, help_text: str, with_plane: bool = True):
    @app.command(marker if marker != "drill" else "drills", help=help_text,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _run(ctx: typer.Context) -> None:
        from opsproof.runner import run_suite

        raise typer.Exit(run_suite(marker, list(ctx.args), with_plane=with_plane))

    return _run


_suite_command("daily", "Run `pytest -m daily` on the configured target (environment > .env > the embedded "
               "default, which it brings up). Every input is checked first: bad input is exit 2, nothing started.")
_suite_command("gate", "Run the CI gate subset `pytest -m gate`.")
_suite_command("drill", "Run the weekly drills `pytest -m drill`.")
_suite_command("acceptance", "Run the done-done acceptance `pytest -m acceptance`.")


def _mount_optional() -> None:
    """Sub-apps whose modules import heavier deps are mounted lazily, each on its own."""
    import importlib

    for name, module in (("evidence", "opsproof.evidence.cli"), ("plane", "opsproof.plane.cli"),
                         ("levers", "opsproof.levers.cli"), ("incident", "opsproof.levers.incident_cli"),
                         ("cadence", "opsproof.levers.cadence_cli"), ("catalog", "opsproof.catalog_cli"),
                         ("doctor", "opsproof.doctor"), ("watch", "opsproof.watch.cli"),
                         ("dashboard", "opsproof.dashboard.cli")):
        try:
            sub = importlib.import_module(module).app
        except ImportError:
            continue
        app.add_typer(sub, name=name)


def main() -> None:
    _mount_optional()
    try:
        from opsproof.config import apply_dotenv

        apply_dotenv()  # .env settings (OPSPROOF_HOME, ...) hold for every sub-command; the environment wins
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except OpsproofError as exc:
        print(f"opsproof: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("opsproof: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click's usage errors (typer vendors click): show one line, exit 2
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            print(f"opsproof: {exc.format_message() if hasattr(exc, 'format_message') else exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()

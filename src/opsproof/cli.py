"""The `opsproof` command. Errors end with one clear line on stderr: exit 2 for bad input, 1 for failures."""

from __future__ import annotations

import sys

import typer

from opsproof.errors import OpsproofError
from opsproof.stack.cli import app as stack_app

app = typer.Typer(help="Operate and prove a Supabase-backed autonomous TMS.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(stack_app, name="stack")


def _mount_optional() -> None:
    """Sub-apps whose modules may import heavier deps are mounted here."""
    from opsproof.plane.cli import app as plane_app

    app.add_typer(plane_app, name="plane")


def main() -> None:
    try:
        _mount_optional()
    except ImportError:
        pass
    try:
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

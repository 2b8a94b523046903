"""`opsproof plane up | down | status | logs` (mounted by the top-level CLI; also `python -m opsproof.plane.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from opsproof import paths
from opsproof.cliutil import run_or_exit
from opsproof.plane.supervisor import COMPONENTS, Supervisor

app = typer.Typer(help="The reference ops plane: worker, relay, replayer, ingest, sink, gate, traffic.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

DirOpt = typer.Option(None, "--dir", help="plane state dir (pid files, logs, env); default .opsproof/plane")
StackEnvOpt = typer.Option(None, "--stack-env", help="the stack's env file; default .opsproof/stack/env")


def _sup(base: Path | None, stack_env: Path | None) -> Supervisor:
    return Supervisor(base or paths.plane_dir(), stack_env)


@app.command()
def up(base: Path = DirOpt, stack_env: Path = StackEnvOpt,
       wait: float = typer.Option(30.0, help="seconds to wait for each component to come up")) -> None:
    """Start every component not already running (idempotent)."""
    run_or_exit(lambda: _sup(base, stack_env).up(log=typer.echo, wait_s=wait))


@app.command()
def down(base: Path = DirOpt, stack_env: Path = StackEnvOpt) -> None:
    """Stop every component (SIGTERM, then SIGKILL of the process groups)."""
    run_or_exit(lambda: _sup(base, stack_env).down(log=typer.echo))


@app.command()
def status(base: Path = DirOpt, stack_env: Path = StackEnvOpt) -> None:
    """Each component's pid, liveness and last heartbeat age; exit 1 if any is down."""
    rows = run_or_exit(lambda: _sup(base, stack_env).status())
    table = Table("component", "pid", "alive", "last heartbeat")
    for r in rows:
        age = "-" if r.heartbeat_age_s is None else f"{r.heartbeat_age_s:.1f}s ago"
        table.add_row(r.name, str(r.pid or "-"), "up" if r.alive else "DOWN", age)
    Console(width=100).print(table)
    if not all(r.alive for r in rows):
        raise typer.Exit(1)


@app.command()
def logs(component: str = typer.Argument(..., help=f"one of: {', '.join(COMPONENTS)}"),
         lines: int = typer.Option(50, "-n", "--lines"), base: Path = DirOpt) -> None:
    """Tail a component's log."""
    if component not in COMPONENTS:
        typer.echo(f"opsproof: unknown component {component!r} (one of: {', '.join(COMPONENTS)})", err=True)
        raise typer.Exit(2)
    path = _sup(base, None).logfile(component)
    if not path.exists():
        typer.echo(f"opsproof: no log yet at {path}", err=True)
        raise typer.Exit(1)
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        typer.echo(line)


if __name__ == "__main__":
    app()

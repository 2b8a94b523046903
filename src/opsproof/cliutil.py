"""One way for every sub-command to end on an OpsproofError: its message as one line, its exit code.

The same whether a sub-app runs mounted under `opsproof` or on its own (`python -m opsproof.plane.cli`).
"""

from __future__ import annotations

import functools

import typer

from opsproof.errors import OpsproofError


def run_or_exit(fn):
    """Call fn(); an OpsproofError becomes one line on stderr and exit 2 (usage) or 1 (failure)."""
    try:
        return fn()
    except OpsproofError as exc:
        typer.echo(f"opsproof: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def one_line_errors(fn):
    """Decorator form of run_or_exit for typer commands."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return run_or_exit(lambda: fn(*args, **kwargs))

    return wrapper

"""`opsproof stack up | down | status | reset | env | seed`."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console

from opsproof.stack.manager import Stack
from opsproof.stack.secrets import SECRET_KEYS

app = typer.Typer(help="The embedded default target: a private Supabase-shaped PostgreSQL + streaming replica.",
                  no_args_is_help=True)
err = Console(stderr=True)


def _log(msg: str) -> None:
    err.print(f"[dim]stack:[/dim] {msg}")


@app.command()
def up(port: Optional[int] = typer.Option(None, help="primary port (default: a free loopback port)"),
       days: int = typer.Option(35, help="days of telemetry to seed on a fresh stack (0 = none)"),
       requests_per_day: int = typer.Option(20000, help="seeded requests per day"),
       seed: int = typer.Option(42, help="seeder seed (same seed, same rows)")) -> None:
    """Create (first time) or start the stack. Idempotent."""
    status = Stack().up(port=port, seed_days=days, requests_per_day=requests_per_day, seed=seed, log=_log)
    if not status["healthy"]:
        err.print("stack unhealthy: " + "; ".join(status["problems"]))
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop every process the stack started (data is kept)."""
    Stack().down(log=_log)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Report the stack; exit 1 when it is not healthy. Never prints secrets."""
    st = Stack().status()
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
    elif st.get("created"):
        typer.echo(f"primary  127.0.0.1:{st['port']}  {'running pid ' + str(st['primary']['pid']) if st['primary']['running'] else 'DOWN'}")
        typer.echo(f"replica  127.0.0.1:{st['replica_port']}  {'running pid ' + str(st['replica']['pid']) if st['replica']['running'] else 'DOWN'}")
        for r in st.get("replication", []):
            typer.echo(f"replication {r['application']}: {r['state']}, replay lag {r['replay_lag_bytes']} bytes")
        if "migrations_applied" in st:
            typer.echo(f"migrations applied: {st['migrations_applied']}")
        typer.echo(f"data {st['datadir']} (server runs as {st['runs_as']})")
    if not st["healthy"]:
        err.print("unhealthy: " + "; ".join(st["problems"]))
        raise typer.Exit(1)
    typer.echo("healthy")


@app.command()
def reset(days: int = typer.Option(35), requests_per_day: int = typer.Option(20000),
          seed: int = typer.Option(42)) -> None:
    """Drop all stack data and rebuild it from scratch."""
    Stack().reset(seed_days=days, requests_per_day=requests_per_day, seed=seed, log=_log)


@app.command()
def env(show_secrets: bool = typer.Option(False, "--show-secrets", help="print secret values too")) -> None:
    """Print the connection settings (secrets masked unless --show-secrets)."""
    values = Stack().env()
    if not values:
        err.print("stack not created: run `opsproof stack up`")
        raise typer.Exit(1)
    for key, value in values.items():
        if not show_secrets and (key in SECRET_KEYS or key.endswith("_DB_URL")):
            value = _mask(key, value)
        typer.echo(f"{key}={value}")


def _mask(key: str, value: str) -> str:
    if key.endswith("_DB_URL"):
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        return value.replace(f":{parts.password}@", ":***@") if parts.password else value
    return "***"


@app.command("seed")
def seed_cmd(days: int = typer.Option(35), requests_per_day: int = typer.Option(20000),
             seed: int = typer.Option(42), clear: bool = typer.Option(True, help="truncate telemetry first")) -> None:
    """(Re)seed deterministic healthy telemetry into the running stack."""
    import psycopg

    from opsproof.stack import seed as seeder

    stack = Stack()
    with psycopg.connect(stack.admin_dsn()) as conn:
        if clear:
            seeder.clear(conn)
        counts = seeder.seed(conn, days=days, requests_per_day=requests_per_day, seed=seed)
    typer.echo(json.dumps(counts))

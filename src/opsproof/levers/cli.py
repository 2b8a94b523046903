"""`opsproof levers list | release` (mounted by the top-level CLI; also `python -m opsproof.levers.cli`)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from opsproof.cliutil import run_or_exit
from opsproof.errors import UsageError

app = typer.Typer(help="Leased flag overrides and other levers: list them, release stale ones.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _dsns() -> tuple[str, str | None]:
    from opsproof.config import load_settings

    s = load_settings()
    if s.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    return s.db_url.get_secret_value(), (s.replica_db_url.get_secret_value() if s.replica_db_url else None)


@app.command("list")
def list_cmd(all_: bool = typer.Option(False, "--all", help="include released overrides"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             limit: int = typer.Option(50, help="at most this many rows")) -> None:
    """Overrides with their state: active (counts now), stale (lease expired, not released), released."""
    from opsproof.levers import overrides

    def go():
        dsn, _ = _dsns()
        return overrides.list_overrides(dsn, include_released=all_, limit=limit)

    rows = run_or_exit(go)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        typer.echo("no overrides" + ("" if all_ else " (unreleased); --all for history"))
        return
    table = Table("id", "key", "value", "state", "owner", "run", "expires", "reason")
    for r in rows:
        exp = r["expires_in_s"]
        when = (f"in {exp:.0f}s" if exp > 0 else f"{-exp:.0f}s ago") if r["state"] != "released" else "-"
        table.add_row(str(r["id"]), r["key"], json.dumps(r["value"]), r["state"], r["owner"], r["run_id"],
                      when, r["reason"][:40])
    Console(width=160).print(table)


@app.command()
def release(stale: bool = typer.Option(False, "--stale", help="release overrides whose lease expired "
                                       "(and resume a replica left paused by an expired drill lease)"),
            run: str = typer.Option(None, "--run", help="release every override of this run id"),
            ids: list[int] = typer.Option(None, "--id", help="release this override id (repeatable)")) -> None:
    """Release overrides: the stale ones (a killed runner's), one run's, or given ids. Always audited."""
    from opsproof.levers import overrides, replica

    if not (stale or run or ids):
        typer.echo("opsproof: say what to release: --stale, --run RUN_ID or --id N", err=True)
        raise typer.Exit(2)

    def go():
        dsn, replica_dsn = _dsns()
        out = {}
        if stale:
            rows = overrides.release_stale(dsn)
            out["stale_released"] = [r["id"] for r in rows]
            for r in rows:
                typer.echo(f"released stale override #{r['id']} {r['key']}={json.dumps(r['value'])} "
                           f"(owner {r['owner']}, run {r['run_id']}, expired {r['expires_at']})")
            try:
                pause = replica.release_stale_pause(dsn, replica_dsn)
            except Exception as exc:  # noqa: BLE001 - the replica is optional; say so, don't hide the flags part
                pause = {"error": f"{type(exc).__name__}"}
            if pause and pause.get("resumed"):
                typer.echo(f"resumed WAL replay left paused by {pause['owner']} (run {pause['run_id']})")
            out["replica"] = pause
        if run:
            out["run_released"] = overrides.releaserun_or_exit(dsn, run, f"released by operator (release --run {run})")
            typer.echo(f"released {len(out['run_released'])} override(s) of run {run}")
        if ids:
            out["id_released"] = overrides.release(dsn, list(ids), "levers-cli", "released by operator (release --id)")
            typer.echo(f"released {len(out['id_released'])} override(s): {out['id_released']}")
        if stale and not out["stale_released"]:
            typer.echo("no stale overrides")
        return out

    run_or_exit(go)


if __name__ == "__main__":
    app()

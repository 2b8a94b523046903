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
    from opsproof.config import resolve_settings

    s = resolve_settings()  # environment > .env > embedded stack files; a configured target never falls back
    if s.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    s.require_reachable()
    return s.db_url.get_secret_value(), (s.replica_db_url.get_secret_value() if s.replica_db_url else None)


@app.command("list")
def list_cmd(all_: bool = typer.Option(False, "--all", help="include released overrides"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             limit: int = typer.Option(50, min=1, max=10000, help="at most this many rows")) -> None:
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


RUN_ID_RE = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"


def _bad(msg: str) -> None:
    typer.echo(f"opsproof: {msg}", err=True)
    raise typer.Exit(2)


@app.command()
def release(stale: bool = typer.Option(False, "--stale", help="release overrides whose lease expired "
                                       "(and resume a replica left paused by an expired drill lease)"),
            run: str = typer.Option(None, "--run", help="release every override of this run id (and resume a "
                                    "replica pause it still holds)"),
            ids: list[int] = typer.Option(None, "--id", help="release this override id (repeatable)")) -> None:
    """Release overrides: the stale ones (a killed runner's), one run's, or given ids. Always audited.
    Every input is checked before anything changes: bad input is one line and exit 2."""
    import re

    from opsproof.levers import overrides, replica

    if not (stale or run is not None or ids):
        _bad("say what to release: --stale, --run RUN_ID or --id N")
    if run is not None and not re.fullmatch(RUN_ID_RE, run):
        _bad(f"--run: not a run id: {run[:40]!r} (letters, digits and . _ : @ -, at most 128)")
    if ids and any(i <= 0 for i in ids):
        _bad(f"--id: override ids are positive integers, got {sorted(i for i in ids if i <= 0)}")

    def go():
        dsn, replica_dsn = _dsns()
        # validate against the target before changing anything
        if run is not None and not overrides.run_known(dsn, run):
            raise UsageError(f"unknown run id {run!r}: it never took an override or paused the replica "
                             "(see `opsproof levers list --all`)")
        if ids:
            missing = overrides.missing_ids(dsn, list(ids))
            if missing:
                raise UsageError(f"no override with id {', '.join(map(str, missing))} "
                                 "(see `opsproof levers list --all`)")
        out: dict = {}
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
                typer.echo(f"opsproof: could not check the replica for a stale pause ({pause['error']})", err=True)
            if pause and pause.get("resumed"):
                typer.echo(f"resumed WAL replay left paused by {pause['owner']} (run {pause['run_id']})")
            out["replica"] = pause
            if not out["stale_released"]:
                typer.echo("no stale overrides")
        if run is not None:
            out["run_released"] = overrides.release_run(dsn, run, f"released by operator (release --run {run})")
            typer.echo(f"released {len(out['run_released'])} override(s) of run {run}"
                       + (f": {out['run_released']}" if out["run_released"] else " (none was still held)"))
            try:
                pause = replica.release_run_pause(dsn, replica_dsn, run)
            except Exception as exc:  # noqa: BLE001
                pause = {"error": f"{type(exc).__name__}"}
                typer.echo(f"opsproof: could not check the replica for a pause of run {run} ({pause['error']})",
                           err=True)
            if pause and pause.get("resumed"):
                typer.echo(f"resumed WAL replay paused by run {run}")
            out["run_replica"] = pause
        if ids:
            out["id_released"] = overrides.release(dsn, list(ids), "levers-cli", "released by operator (release --id)")
            typer.echo(f"released {len(out['id_released'])} override(s): {out['id_released']}")
        return out

    run_or_exit(go)


if __name__ == "__main__":
    app()

"""`opsproof incident handle | resume | list | snapshot | test` (mounted by the top-level CLI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from opsproof.errors import OpsproofError, UsageError

app = typer.Typer(help="Incident levers: real, persistent flag/budget writes, undone only by `resume`.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _ctx(policy_path: Optional[Path] = None, **overrides):
    """The levers' context on the one resolution of settings (environment > .env > embedded stack files);
    the target must answer before anything is written."""
    from opsproof import paths, policy
    from opsproof.config import resolve_settings
    from opsproof.levers.incident import context_from_settings

    settings = resolve_settings()
    pol = policy.load(policy_path or paths.project_dir() / "opsproof.toml")
    ctx = context_from_settings(settings, pol, **overrides)
    settings.require_reachable()
    return ctx


def _fail(exc: OpsproofError) -> None:
    typer.echo(f"opsproof: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _print(doc, as_json: bool) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


@app.command()
def handle(incident: str = typer.Argument(..., help='JSON: {"level": critical|high|medium|low, "type": '
                                          'emergency_stop|soft_degrade|rollback|system_failure|..., "description": "..."}'
                                          " ('-' reads stdin)"),
           no_verify: bool = typer.Option(False, "--no-verify", help="apply without waiting for the live proof "
                                          "(for targets without the plane's heartbeats; recorded as unverified)"),
           policy: Optional[Path] = typer.Option(None, "--policy", help="opsproof.toml")) -> None:
    """Open an incident and apply its response; exit 0 only when it is verified live within the level's timeout."""
    from opsproof.levers import incident as inc

    try:
        req = inc.parse_request(sys.stdin.read() if incident == "-" else incident)  # exit 2 before any connection
        ctx = _ctx(policy, verify=not no_verify)
        doc = inc.handle(ctx, req)
    except OpsproofError as exc:
        _fail(exc)
        return
    r = doc["response"]
    changed = [f"{c['key']} {json.dumps(c['before'])}->{json.dumps(c['after'])}" for c in doc["changes"] if "before" in c]
    typer.echo(f"incident {doc['id']} ({doc['level']}/{doc['type']}): plan {r['plan']}; "
               f"changed {', '.join(changed) or 'nothing (already in place)'}")
    typer.echo(f"in effect after {r['time_to_effect_s']}s (limit {r['timeout_s']:.0f}s): "
               f"{'VERIFIED' if r['verified'] else 'NOT VERIFIED'}")
    if not r["verified"]:
        typer.echo("opsproof: incident response not verified: " + "; ".join(r["problems"]), err=True)
        raise typer.Exit(1)
    typer.echo(f"resume with: opsproof incident resume {doc['id']}")


@app.command()
def resume(incident_id: str = typer.Argument(..., help="the incident's id (see `opsproof incident list`)"),
           force: bool = typer.Option(False, "--force", help="restore the incident's before-values even where "
                                      "someone else changed them since"),
           policy: Optional[Path] = typer.Option(None, "--policy", help="opsproof.toml")) -> None:
    """Restore exactly what the incident changed (and nothing else), then resolve it."""
    from opsproof.levers import incident as inc

    try:
        res = inc.resume_or_report(_ctx(policy), incident_id, force=force)
    except OpsproofError as exc:
        _fail(exc)
        return
    restored = ", ".join(f"{r['key']}={json.dumps(r['value'])}" for r in res["restored"]) or "nothing"
    typer.echo(f"incident {res['id']} resolved: restored {restored}")
    for h in res["handed_over"]:
        typer.echo(f"  {h['key']} kept: still needed by open incident {h['to']}")
    ver = res["verification"]
    if not ver["verified"]:
        typer.echo("opsproof: restored, but the plane did not confirm in time: " + "; ".join(ver["problems"]), err=True)
        raise typer.Exit(1)


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             days: int = typer.Option(7, "--days", help="resolved incidents of the last N days too"),
             limit: int = typer.Option(20, "--limit")) -> None:
    """Open and recent incidents."""
    from opsproof.levers import incident as inc

    try:
        rows = inc.list_incidents(_ctx().dsn, limit=limit, days=days)
    except OpsproofError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no open incidents, none in the last {days} days")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "level", "type", "status", "plan", "opened", "effect", "verified", "description")
    for r in rows:
        status = r["status"] + (" OVERDUE" if r["overdue"] else "")
        eff = f"{r['time_to_effect_s']:.1f}s" if r["time_to_effect_s"] is not None else "-"
        table.add_row(r["id"], r["level"], r["type"], status, r["plan"] or "-", r["opened_at"].strftime("%Y-%m-%d %H:%M:%S"),
                      eff, {True: "yes", False: "NO", None: "-"}[r["verified"]], r["description"][:40])
    Console(width=200).print(table)


@app.command()
def snapshot(reason: str = typer.Option("operator: known good", "--reason"),
             not_good: bool = typer.Option(False, "--not-known-good", help="record only (not a rollback target)")) -> None:
    """Record the current flags and budgets as the last known-good snapshot (the rollback target)."""
    from opsproof.levers import incident as inc

    try:
        snap = inc.take_snapshot(_ctx().dsn, reason, known_good=not not_good)
    except OpsproofError as exc:
        _fail(exc)
        return
    typer.echo(f"snapshot #{snap['id']} ({len(snap['flags'])} flags, {len(snap['budgets'])} budgets) "
               f"{'known good' if snap['known_good'] else 'recorded'}")


@app.command("test")
def test_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Run every lever against the embedded target and restore it (needs `opsproof stack up` + `plane up`);
    exit 1 when any lever's rehearsal is not a pass."""
    from opsproof.config import resolve_settings
    from opsproof.levers import incident as inc

    try:
        settings = resolve_settings()
        if settings.target != "embedded" or settings.production:
            raise UsageError("incident test runs against the embedded target only (OPSPROOF_TARGET=embedded)")
        results = inc.rehearse(_ctx(), log=(lambda m: None) if as_json else typer.echo)
    except OpsproofError as exc:
        _fail(exc)
        return
    if as_json:  # one journal entry (kind "rehearsal") per lever
        typer.echo(json.dumps([e.model_dump(mode="json") for e in results.values()], indent=2, default=str))
    bad = [name for name, e in results.items() if e.verdict != "pass"]
    if bad:
        typer.echo(f"opsproof: incident levers failed: {', '.join(bad)}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

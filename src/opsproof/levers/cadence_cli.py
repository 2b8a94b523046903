"""`opsproof cadence daily | weekly | monthly` (mounted by the top-level CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from opsproof.errors import OpsproofError

app = typer.Typer(help="The operational cadence: daily / weekly / monthly tasks, each recorded in today's "
                       "evidence pack (cadence/<task>.json) and audited.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _go(schedule: str, only: Optional[List[str]], evidence_dir: Optional[Path], no_pack: bool, as_json: bool,
        policy_path: Optional[Path], drill_args: Optional[List[str]] = None, target: Optional[str] = None) -> None:
    from opsproof import paths, policy
    from opsproof.config import resolve_settings
    from opsproof.levers import cadence
    from opsproof.runner import check_evidence_dir

    try:
        # every input is checked before any task runs: settings, policy, evidence dir, the target answers
        settings = resolve_settings(target)
        pol = policy.load(policy_path or paths.project_dir() / "opsproof.toml")
        root = evidence_dir or paths.project_dir() / "reports" / "evidence"
        if not no_pack:
            check_evidence_dir(root)
        overrides = {"drill_args": list(drill_args)} if drill_args else {}
        ctx = cadence.context_from_settings(settings, pol, **overrides)
        settings.require_reachable()
        if not as_json:
            typer.echo(f"opsproof: {settings.describe_line()}")
        records = cadence.run(ctx, schedule, only, log=(lambda m: None) if as_json else typer.echo)
        pack = None
        pack_error = None
        if not no_pack:
            try:
                pack = cadence.amend_today_pack(root, records, {"by": f"opsproof cadence {schedule}",
                                                                "run_id": ctx.run_id, "target": settings.target,
                                                                "host": settings.host(),
                                                                "target_detail": settings.describe()},
                                                settings.secret_values())
            except OpsproofError as exc:
                pack_error = str(exc)
    except OpsproofError as exc:
        typer.echo(f"opsproof: {exc}", err=True)
        raise typer.Exit(exc.exit_code)
    failed = [r["task"] for r in records if not r["ok"]]
    if as_json:
        typer.echo(json.dumps({"schedule": schedule, "pack": str(pack) if pack else None, "pack_error": pack_error,
                               "tasks": records}, indent=2, default=str))
    elif pack:
        typer.echo(f"evidence: {pack}/cadence/")
    if pack_error:
        typer.echo(f"opsproof: cadence records NOT written to the evidence pack: {pack_error}", err=True)
    if failed:
        typer.echo(f"opsproof: {schedule} cadence: {len(failed)} task(s) failed: {', '.join(failed)}", err=True)
    if failed or pack_error:
        raise typer.Exit(1)


_ONLY = typer.Option(None, "--only", help="run only this task (repeatable)")
_DIR = typer.Option(None, "--evidence-dir", help="evidence root [default: <project>/reports/evidence]")
_NOPACK = typer.Option(False, "--no-pack", help="do not amend today's evidence pack")
_JSON = typer.Option(False, "--json", help="machine-readable output")
_POLICY = typer.Option(None, "--policy", help="opsproof.toml")
_TARGET = typer.Option(None, "--target", help="embedded or env [default: OPSPROOF_TARGET from the environment, "
                       ".env, else embedded]")


@app.command()
def daily(only: Optional[List[str]] = _ONLY, evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK,
          as_json: bool = _JSON, policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET) -> None:
    """TTL cleanup of agent_logs, partition rotation, backup freshness, budget drift, known-good snapshot."""
    _go("daily", only, evidence_dir, no_pack, as_json, policy, target=target)


@app.command()
def weekly(only: Optional[List[str]] = _ONLY, evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK,
           as_json: bool = _JSON, policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET,
           drill_arg: Optional[List[str]] = typer.Option(None, "--drill-arg", help="pytest args for the DR drill "
                                                         "[default: -m drill] (repeatable)")) -> None:
    """DR drill (pytest -m drill), portal audit, canary ramp sanity, secrets scan of evidence and logs."""
    _go("weekly", only, evidence_dir, no_pack, as_json, policy, drill_arg, target=target)


@app.command()
def monthly(only: Optional[List[str]] = _ONLY, evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK,
            as_json: bool = _JSON, policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET) -> None:
    """Key rotation rehearsal, restore test (RPO/RTO), cost & SLO review."""
    _go("monthly", only, evidence_dir, no_pack, as_json, policy, target=target)


if __name__ == "__main__":
    app()

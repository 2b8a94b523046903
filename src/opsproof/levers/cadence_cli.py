"""`opsproof cadence daily | weekly | monthly` (mounted by the top-level CLI).

daily: maintenance (TTL cleanup, partitions, a fresh backup on the embedded target, the known-good snapshot).
weekly: bandit's static analysis of the TMS's code (SARIF for SEC-007), the weekly reviews as checks
(`pytest -m weekly`, 7-day window: SEC-003, SEC-007/008, CAD-005, CAD-006) and the drills
(`opsproof drills`), each run writing its own files in the day's pack.
monthly: the rehearsals (key rotation, restore test), the cost artifact, and `pytest -m monthly` over 30 days
(SLO-001..003). The cadence's own entries go to cadence/<schedule>/ in the day's pack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from opsproof.errors import OpsproofError, UsageError

app = typer.Typer(help="The operational cadence: maintenance, rehearsals and the weekly/monthly suite runs, recorded "
                       "in today's evidence pack (cadence/<schedule>/) and audited.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _suite_args(settings, policy_path: Path, root: Path) -> list[str]:
    """What `opsproof daily` hands its pytest run (opsproof.runner.preflight parses these)."""
    return [f"--target={settings.name}", f"--policy={policy_path}", f"--evidence-dir={root}"]


def _go(schedule: str, only: Optional[List[str]], evidence_dir: Optional[Path], no_pack: bool, as_json: bool,
        policy_path: Optional[Path], target: Optional[str] = None, no_suites: bool = False) -> None:
    from opsproof import paths, policy
    from opsproof.config import resolve_settings
    from opsproof.levers import cadence
    from opsproof.runner import check_evidence_dir, run_suite

    say = (lambda m: None) if as_json else typer.echo
    suites: list[dict] = []
    pack = pack_error = None
    try:
        # every input is checked before any task runs: settings, policy, evidence dir, the task names, the target
        settings = resolve_settings(target)
        policy_path = (policy_path or paths.project_dir() / "opsproof.toml").expanduser().resolve()
        pol = policy.load(policy_path)
        root = (evidence_dir or paths.project_dir() / "reports" / "evidence").expanduser().resolve()
        if not no_pack:
            check_evidence_dir(root)
        ctx = cadence.context_from_settings(settings, pol)
        cadence.tasks_of(schedule, ctx.target)
        unknown = [o for o in (only or []) if o not in cadence.SCHEDULES[schedule]]
        if unknown:
            raise UsageError(f"unknown {schedule} task(s) {unknown} "
                                     f"(one of: {', '.join(cadence.SCHEDULES[schedule]) or 'none'})")
        settings.require_reachable()
        say(f"opsproof: {settings.describe_line()}")
        entries = cadence.run(ctx, schedule, only, log=say)
        artifacts = {}
        if schedule == "monthly" and not only:
            try:
                artifacts["cost_review.json"] = cadence.cost_review(ctx)
            except Exception as exc:  # noqa: BLE001 - an artifact, not a verdict: say it is missing
                artifacts["cost_review.json"] = {"error": f"not measured: {type(exc).__name__}"}
        if not only and not no_suites:
            for kind, extra in cadence.SUITE_RUNS[schedule]:
                say(f"opsproof: cadence {schedule}: running the {kind} suite")
                run = {"run": kind, "command": f"pytest -m {kind} {' '.join(extra)}".strip(),
                       "evidence": f"results-{kind}.json (and that run's reports) in the day's pack"}
                try:
                    run["exit_code"] = run_suite(kind, [*_suite_args(settings, policy_path, root), *extra])
                except OpsproofError as exc:  # the other runs and the cadence's own entries still count
                    run.update(exit_code=exc.exit_code, error=str(exc))
                suites.append(run)
        if suites:
            artifacts["suite_runs.json"] = suites
        if not no_pack and (entries or artifacts):
            from opsproof.evidence.signing import signer_for

            try:
                from opsproof.targets import evidence_root

                pack = cadence.write_pack(evidence_root(root, settings.name), schedule, ctx.run_id, entries,
                                          {"by": f"opsproof cadence {schedule}", "target": settings.target,
                                           "host": settings.host(), "target_detail": settings.describe(),
                                           "policy": str(pol.source), "policy_sha256": pol.sha256},
                                          settings.secret_values(), artifacts=artifacts, signer=signer_for(settings))
            except OpsproofError as exc:
                pack_error = str(exc)
    except OpsproofError as exc:
        typer.echo(f"opsproof: {exc}", err=True)
        raise typer.Exit(exc.exit_code)
    bad = [e["task"] for e in entries if e["verdict"] not in ("pass", "skipped")]
    red_runs = [s["run"] for s in suites if s["exit_code"] != 0]
    if as_json:
        typer.echo(json.dumps({"schedule": schedule, "pack": str(pack) if pack else None, "pack_error": pack_error,
                               "tasks": entries, "suite_runs": suites}, indent=2, default=str))
    elif pack:
        typer.echo(f"evidence: {pack}/cadence/{schedule}/")
    if pack_error:
        typer.echo(f"opsproof: cadence records NOT written to the evidence pack: {pack_error}", err=True)
    if bad:
        typer.echo(f"opsproof: {schedule} cadence: {len(bad)} task(s) not passed: {', '.join(bad)}", err=True)
    if red_runs:
        typer.echo(f"opsproof: {schedule} cadence: suite run(s) not green: {', '.join(red_runs)}", err=True)
    if bad or pack_error or red_runs:
        raise typer.Exit(1)


_ONLY = typer.Option(None, "--only", help="run only this task (repeatable; no suite run then)")
_DIR = typer.Option(None, "--evidence-dir", help="evidence root [default: <project>/reports/evidence]")
_NOPACK = typer.Option(False, "--no-pack", help="do not write the cadence's entries into today's evidence pack")
_JSON = typer.Option(False, "--json", help="machine-readable output")
_POLICY = typer.Option(None, "--policy", help="opsproof.toml")
_TARGET = typer.Option(None, "--target", help="embedded, env or a named target of targets.toml [default: OPSPROOF_TARGET from the environment, "
                       ".env, else embedded]")
_NOSUITES = typer.Option(False, "--no-suites", help="only the cadence's own tasks, not the suite runs it schedules")


@app.command()
def daily(only: Optional[List[str]] = _ONLY, evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK,
          as_json: bool = _JSON, policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET) -> None:
    """TTL cleanup of agent_logs, partition rotation, a fresh backup when stale (embedded), known-good snapshot."""
    _go("daily", only, evidence_dir, no_pack, as_json, policy, target=target)


@app.command()
def weekly(evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK, as_json: bool = _JSON,
           policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET) -> None:
    """bandit over [code_scans] static_scan_paths (SARIF to reports/scans/), then the weekly checks over 7 days
    (`pytest -m weekly`: portal audit SEC-003, code scans SEC-007/008, canary CAD-005, secrets CAD-006) and the
    drills (`opsproof drills`)."""
    _go("weekly", None, evidence_dir, no_pack, as_json, policy, target=target)


@app.command()
def monthly(only: Optional[List[str]] = _ONLY, evidence_dir: Optional[Path] = _DIR, no_pack: bool = _NOPACK,
            as_json: bool = _JSON, policy: Optional[Path] = _POLICY, target: Optional[str] = _TARGET,
            no_suites: bool = _NOSUITES) -> None:
    """Key rotation rehearsal, restore test (RPO/RTO), the cost artifact, and `pytest -m monthly` over 30 days."""
    _go("monthly", only, evidence_dir, no_pack, as_json, policy, target=target, no_suites=no_suites)


if __name__ == "__main__":
    app()

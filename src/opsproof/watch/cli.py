"""`opsproof watch [--once] [--interval S] [--target NAME]` (mounted by the top-level CLI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from opsproof.errors import OpsproofError, UsageError

app = typer.Typer(help="The green-posture watch: measure the gate and watchlist controls every interval, score, "
                       "alert, act per policy.", pretty_exceptions_enable=False)


def interval_of(cli: float | None, policy) -> float:
    """--interval > OPSPROOF_WATCH_INTERVAL_S (environment, else the embedded stack's env file) > [watch] interval_s."""
    if cli is not None:
        value, where = cli, "--interval"
    else:
        from opsproof import paths
        from opsproof.envfile import read_env

        raw = os.environ.get("OPSPROOF_WATCH_INTERVAL_S") or read_env(paths.stack_env_file()).get("OPSPROOF_WATCH_INTERVAL_S")
        if not raw:
            return float(policy.watch.interval_s)
        try:
            value, where = float(raw), "OPSPROOF_WATCH_INTERVAL_S"
        except ValueError:
            raise UsageError(f"OPSPROOF_WATCH_INTERVAL_S={raw!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise UsageError(f"{where}: interval must be > 0 and <= 86400 seconds, got {value:g}")
    return float(value)


def build(*, target: str | None, policy_path: Path | None, evidence_dir: Path | None, interval: float | None, log=None):
    from opsproof import catalog, paths, policy, targets
    from opsproof.config import resolve_settings
    from opsproof.watch.loop import Watcher

    settings = resolve_settings(target)
    pol = policy.load(policy_path or paths.project_dir() / "opsproof.toml")
    cat = catalog.load()
    every = interval_of(interval, pol)
    base = evidence_dir.expanduser().resolve() if evidence_dir else paths.project_dir() / "reports" / "evidence"
    if base.exists() and not base.is_dir():
        raise UsageError(f"--evidence-dir {base} is not a directory")
    settings.require_reachable()
    root = targets.evidence_root(base, settings.name)
    return Watcher(settings=settings, policy=pol, catalog=cat, evidence_root=root,
                   state_dir=paths.state_dir() / "watch" / settings.name, interval_s=every,
                   **({"log": log} if log else {}))


@app.callback(invoke_without_command=True)
def watch(once: bool = typer.Option(False, "--once", help="one tick, then exit (exit 1 when the score is capped "
                                    "by a failing or unmeasured control)"),
          interval: Optional[float] = typer.Option(None, "--interval", help="seconds between ticks (default: "
                                                   "OPSPROOF_WATCH_INTERVAL_S, else the policy's watch.interval_s)"),
          target: Optional[str] = typer.Option(None, "--target", help="embedded, env, or a named target"),
          policy: Optional[Path] = typer.Option(None, "--policy", help="opsproof.toml"),
          evidence_dir: Optional[Path] = typer.Option(None, "--evidence-dir",
                                                      help="evidence root (default reports/evidence); samples go "
                                                           "to <root>/watch/YYYY-MM-DD.jsonl")) -> None:
    """Measure the gate + watchlist controls every interval, write a posture sample, print one line per tick."""
    try:
        w = build(target=target, policy_path=policy, evidence_dir=evidence_dir, interval=interval,
                  log=lambda s: typer.echo(s))
        typer.echo(f"opsproof watch: {w.settings.describe_line()}; every {w.interval_s:g}s; mode "
                   f"{w.policy.watch.mode}; samples in {w.evidence_root / 'watch'}")
        last = w.run(once=once)
    except OpsproofError as exc:
        typer.echo(f"opsproof: {exc}", err=True)
        raise typer.Exit(exc.exit_code)
    if once and last is not None and any(c["cap"] < 100 for c in last["caps"]):
        raise typer.Exit(1)

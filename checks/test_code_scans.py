"""Weekly security scans of the TMS's code: static analysis (SEC-007) and secrets (SEC-008).

Reads what the TMS's CI produced (SARIF 2.1.0 from CodeQL, semgrep, gitleaks...) and what GitHub code/secret
scanning serves, and runs detect-secrets itself over the configured paths (measure/code_scans.py). Fail closed:
nothing configured, an undated or failed scan = error; a scan older than max_age_days or an open finding at a
fail_on severity = fail. Records name rule ids, files and lines, never a secret.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opsproof import clock
from opsproof.measure import code_scans as cs_measure

SKEW = timedelta(hours=1)  # a scan time further in the future than this is not a time
EXTERNAL = ("sarif", "github-code-scanning")  # scans the TMS ran (dated by the scan); the others are read now


def _base(policy) -> Path:
    """Paths in [code_scans] are relative to the policy file's directory."""
    if policy.source and policy.source != "<defaults>":
        return Path(policy.source).resolve().parent
    from opsproof.paths import project_dir

    return project_dir()


def _sarif(cfg, base: Path) -> list[cs_measure.ScanReading]:
    return cs_measure.read_sarif_globs(cfg.sarif, base) if cfg.sarif else []


def _judge_times(readings, cfg, now) -> tuple[list[str], list[str]]:
    """(stale, not-a-scan) descriptions; a scan must be dated, successful and not in the future."""
    stale, bad = [], []
    for r in readings:
        if r.scanned_at is None:
            bad.append(f"{r.tool} ({r.query}): undated: {r.timestamp_source}")
        elif r.scanned_at > now + SKEW:
            bad.append(f"{r.tool} ({r.query}): scan time {r.scanned_at.isoformat()} lies in the future")
        elif r.detail.get("execution_failed"):
            bad.append(f"{r.tool} ({r.query}): the scanner reported a failed run {r.detail['execution_failed']}")
        elif now - r.scanned_at > timedelta(days=cfg.max_age_days):
            stale.append(f"{r.tool}: last scan {r.age_days(now)} d ago ({r.scanned_at.isoformat()})")
    return stale, bad


def _brief(findings, limit: int = 10) -> list[str]:
    return [f"{f.severity} {f.rule_id} {f.file or f.ref}{f':{f.line}' if f.line else ''}" for f in findings[:limit]]


@pytest.mark.weekly
@pytest.mark.security
@pytest.mark.control("SEC-007")
def test_static_analysis_recent_and_clean(policy, evidence):
    cfg = policy.code_scans
    evidence.require(bool(cfg.sarif or cfg.github_repo),
                     "[code_scans] configures neither sarif files nor github_repo: cannot show that the TMS's "
                     "code was scanned")
    now = clock.now()
    readings = _sarif(cfg, _base(policy))
    if cfg.github_repo:
        with cs_measure.GitHub(cfg.github_repo, cfg.github_token_env) as gh:
            readings += gh.code_scanning()
    static = [r for r in readings if r.kind == "static"]
    evidence.artifact("code_scans.json", {
        "control": "SEC-007", "measured_at": now.isoformat(), "max_age_days": cfg.max_age_days,
        "fail_on": list(cfg.fail_on), "readings": [r.evidence(now) for r in readings]})
    evidence.require(bool(static), f"no static analyzer among the scans read (tools: "
                                   f"{sorted({r.tool for r in readings}) or 'none'}): only secrets scanners")
    stale, bad = _judge_times(static, cfg, now)
    blocking = []
    for r in static:
        hits = [f for f in r.findings if f.severity in cfg.fail_on]
        blocking += hits
        age = r.age_days(now)
        fresh = age is not None and age <= cfg.max_age_days and not r.detail.get("execution_failed")
        evidence.record(name=f"{r.label} scan", measured={"age_days": age, "open": r.by_severity()},
                        threshold=f"age <= {cfg.max_age_days} d; 0 open at {'/'.join(cfg.fail_on)}",
                        verdict=fresh and not hits, query=r.query,
                        detail={"scanned_at": r.scanned_at.isoformat() if r.scanned_at else None,
                                "timestamp_source": r.timestamp_source, "blocking": [f.as_dict() for f in hits[:25]]})
    problems = ([f"stale: {s}" for s in stale]
                + ([f"{len(blocking)} open finding(s) at {'/'.join(cfg.fail_on)}: {_brief(blocking)}"]
                   if blocking else []))
    assert not problems, f"static analysis: measured {problems}, required scans <= {cfg.max_age_days} d old " \
                         f"with 0 open findings at {'/'.join(cfg.fail_on)}"
    evidence.require(not bad, f"cannot establish that these scans ran: {bad}")


@pytest.mark.weekly
@pytest.mark.security
@pytest.mark.control("SEC-008")
def test_secrets_scanning_clean(policy, evidence):
    cfg = policy.code_scans
    evidence.require(bool(cfg.secrets_scan_paths),
                     "[code_scans] secrets_scan_paths is empty: opsproof would run no secrets scanner")
    base = _base(policy)
    now = clock.now()
    baseline = (base / cfg.secrets_baseline) if cfg.secrets_baseline else None
    readings = [cs_measure.run_detect_secrets(base / p, baseline) for p in cfg.secrets_scan_paths]
    # the TMS's own secrets scanner, where configured: its SARIF and GitHub (secrets tools uploaded to code
    # scanning, and GitHub secret scanning's open alerts)
    readings += [r for r in _sarif(cfg, base) if r.kind == "secrets"]
    if cfg.github_repo:
        with cs_measure.GitHub(cfg.github_repo, cfg.github_token_env) as gh:
            readings += [r for r in gh.code_scanning() if r.kind == "secrets"]
            readings.append(gh.secret_scanning())
    evidence.artifact("secret_scans.json", {
        "control": "SEC-008", "measured_at": now.isoformat(), "max_age_days": cfg.max_age_days,
        "tms_secrets_scanners": sorted({r.tool for r in readings if r.source != "detect-secrets"}) or None,
        "readings": [r.evidence(now) for r in readings]})
    external = [r for r in readings if r.source in EXTERNAL]
    stale, bad = _judge_times(external, cfg, now)
    secrets = []
    for r in readings:
        secrets += r.findings
        age = r.age_days(now)
        is_ext = r.source in EXTERNAL
        fresh = not is_ext or (age is not None and age <= cfg.max_age_days)
        evidence.record(name=f"{r.label} open secrets", measured=len(r.findings),
                        threshold="== 0" + (f"; scan <= {cfg.max_age_days} d old" if is_ext else ""),
                        verdict=fresh and not r.findings, query=r.query,
                        detail={"age_days": age, "timestamp_source": r.timestamp_source,
                                "findings": [f.as_dict() for f in r.findings[:25]],
                                **({k: r.detail[k] for k in ("files", "accepted_by_baseline_audit",
                                                             "unaudited_in_baseline") if k in r.detail})})
    problems = ([f"stale: {s}" for s in stale]
                + ([f"{len(secrets)} open secret(s): {_brief(secrets)}"] if secrets else []))
    assert not problems, f"secrets scanning: measured {problems}, required 0 open secrets"
    evidence.require(not bad, f"cannot establish that these scans ran: {bad}")

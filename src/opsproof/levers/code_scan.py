"""The weekly static analysis of the TMS's code: a real SAST (bandit) whose SARIF SEC-007 judges. A scan, not a
verdict."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from opsproof import clock
from opsproof.errors import OpsproofError
from opsproof.levers.cadence_context import CadenceContext, TaskError, record


STATIC_SCAN_SARIF = "reports/scans/bandit.sarif"   # relative to the policy file's directory, like [code_scans]


def _policy_dir(c: CadenceContext) -> Path:
    src = getattr(c.policy, "source", None)
    return Path(src).resolve().parent if src and src != "<defaults>" else Path(c.project_dir)


def static_scan(c: CadenceContext, timeout: float = 600.0) -> dict:
    """bandit (a real SAST) over [code_scans] static_scan_paths; its SARIF 2.1.0, with the run's start and end time
    in `invocations`, goes to reports/scans/bandit.sarif where the default policy's `sarif` glob reads it. The task
    passes when the scan ran (whatever it found: SEC-007 judges the findings); a scan that could not run writes no
    SARIF (the previous one ages until SEC-007 calls it stale) and is an error."""
    import sys

    from opsproof.measure.code_scans import read_sarif

    base = _policy_dir(c)
    paths = [(base / p).resolve() for p in c.policy.code_scans.static_scan_paths]
    if not paths:
        raise TaskError("[code_scans] static_scan_paths is empty: nothing to scan")
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise TaskError(f"static scan path(s) not a directory: {missing}")
    out = base / STATIC_SCAN_SARIF
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [sys.executable, "-m", "bandit", "-r", *map(str, paths), "-f", "sarif", "-o", str(tmp), "-q"]
    shown = "bandit -r " + " ".join(map(str, paths)) + f" -f sarif -o {out}"
    started = clock.now()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise TaskError(f"{shown}: still running after {timeout:.0f} s") from None
    ended = clock.now()
    # bandit exits 0 (no issue) or 1 (issues found); anything else, or no SARIF, is a scan that did not happen
    if proc.returncode not in (0, 1) or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        if "No module named bandit" in proc.stderr:
            last = "bandit is not installed (pip install 'bandit[sarif]')"
        raise TaskError(f"{shown}: exit {proc.returncode}: {last}")
    try:
        doc = json.loads(tmp.read_text())
        run0 = doc["runs"][0]
        inv = (run0.get("invocations") or [{}])[0]
        # the times opsproof measured around the process (bandit writes only its end time)
        inv.setdefault("startTimeUtc", started.strftime("%Y-%m-%dT%H:%M:%SZ"))
        inv.setdefault("endTimeUtc", ended.strftime("%Y-%m-%dT%H:%M:%SZ"))
        inv.setdefault("executionSuccessful", True)
        run0["invocations"] = [inv, *(run0.get("invocations") or [])[1:]]
        tmp.write_text(json.dumps(doc, indent=2))
        readings = read_sarif(tmp)
    except (ValueError, KeyError, IndexError, TypeError, OpsproofError) as exc:
        tmp.unlink(missing_ok=True)
        raise TaskError(f"{shown}: unreadable SARIF ({type(exc).__name__}: {str(exc)[:200]})") from None
    os.replace(tmp, out)
    counts = readings[0].by_severity()
    return {"ok": True, "summary": f"bandit scanned {len(paths)} path(s): open findings {counts} -> {out}",
            "records": [record("static analysis ran (bandit, SARIF for SEC-007)", counts,
                               "the scan ran and wrote its SARIF", True, query=shown,
                               detail={"sarif": str(out), "started": started.isoformat(),
                                       "ended": ended.isoformat(), "exit_code": proc.returncode})],
            "sarif": str(out), "paths": [str(p) for p in paths]}

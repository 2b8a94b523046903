"""Run the real suite (`pytest -m ...` in a subprocess) against the test session's stack and read its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_suite(home: Path, evidence_dir: Path, *args: str, env: dict | None = None, timeout: float = 600):
    """Returns (completed process, results dict or None). The suite writes its pack under evidence_dir."""
    full = dict(os.environ, OPSPROOF_HOME=str(home), OPSPROOF_PROJECT_DIR=str(REPO), OPSPROOF_NO_ALLURE_HTML="1")
    full.pop("PYTEST_XDIST_WORKER", None)
    full.pop("PYTEST_CURRENT_TEST", None)
    full.update(env or {})
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--evidence-dir={evidence_dir}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full, cwd=REPO)
    results = None
    packs = sorted(p for p in evidence_dir.glob("????-??-??") if p.is_dir())
    if packs:
        files = sorted(packs[-1].glob("results*.json"))
        if files:
            results = json.loads(files[0].read_text())
    return proc, results


def verdicts(results: dict) -> dict[str, str]:
    """nodeid -> verdict, plus control id -> worst verdict."""
    out: dict[str, str] = {}
    rank = {"pass": 0, "skipped": 1, "fail": 2, "error": 3, "pending": 3}
    for c in results["controls"]:
        out[c["nodeid"]] = c["verdict"]
        cid = c.get("id")
        if cid and rank[c["verdict"]] >= rank.get(out.get(cid, "pass"), 0):
            out[cid] = c["verdict"]
    return out

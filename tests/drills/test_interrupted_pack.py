"""Any suite run stopped by SIGINT or SIGTERM -- also one started with SIGINT inherited as ignored (cron,
nohup, `&` jobs) -- commits a pack that says interrupted, names the controls that never ran, and is never
green; its verdict line says INTERRUPTED. (The drills' own interruption proofs are in test_drill_safety.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from drill_helpers import REPO, wait_for


@pytest.mark.parametrize("sig,ignored", [("SIGINT", True), ("SIGTERM", False)])
def test_interrupted_daily_run_commits_an_interrupted_pack(drill_home, tmp_path, sig, ignored):
    evidence = tmp_path / "evidence"
    out_path = tmp_path / "daily.out"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-m", "daily", "-v",
            f"--opsproof-policy={drill_home.policy}", f"--opsproof-evidence-dir={evidence}"]
    signum = getattr(signal, sig)

    def preexec():
        if ignored:
            signal.signal(signum, signal.SIG_IGN)

    with out_path.open("w") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, env=drill_home.env(), stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=preexec)
        try:
            # mid-run: at least one control has reported
            wait_for(lambda: " PASSED" in out_path.read_text(errors="replace")
                     or " FAILED" in out_path.read_text(errors="replace")
                     or " ERROR" in out_path.read_text(errors="replace") or proc.poll() is not None,
                     300, "the first control's result")
            assert proc.poll() is None, "the daily run ended before it could be interrupted"
            proc.send_signal(signum)
            rc = proc.wait(180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    out = out_path.read_text(errors="replace")
    assert rc == 2, (rc, out[-3000:])
    packs = sorted(evidence.glob("*/results.json"))
    assert packs, f"no pack committed for the interrupted run: {out[-3000:]}"
    results = json.loads(packs[-1].read_text())
    assert results["interrupted"] is True and results["green"] is False, {k: results[k] for k in ("interrupted", "green")}
    assert results["interrupted_by"] == sig
    assert results["not_run"], "an interrupted daily run has controls that never ran; the pack must name them"
    assert all(c["verdict"] != "pending" for c in results["controls"])
    assert f"INTERRUPTED by {sig}" in out and "(GREEN" not in out, out[-2000:]
    manifest = json.loads((packs[-1].parent / "manifest.json").read_text())
    assert manifest.get("metadata", manifest).get("green", False) is False

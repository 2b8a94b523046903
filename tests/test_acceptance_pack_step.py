"""Acceptance step 5 fails closed: a missing pack, a pack that does not verify, or a red daily pack fails
the step and names why."""

from __future__ import annotations

import json

from suite_runner import run_suite


def _step5(stack_home, evidence_dir):
    proc, results = run_suite(stack_home, evidence_dir, "-m", "acceptance", "-k", "todays_pack",
                              "--opsproof-no-evidence")
    return proc


def test_missing_pack_fails_and_says_so(stack, stack_home, tmp_path):
    proc = _step5(stack_home, tmp_path)
    assert proc.returncode == 1
    assert "no evidence pack for" in proc.stdout


def test_red_daily_pack_fails_naming_the_red_controls(stack, stack_home, tmp_path):
    # a real daily pack, then one control turned red by a violation
    proc, results = run_suite(stack_home, tmp_path, "-m", "daily")  # a whole daily: a -k subset is adhoc
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _step5(stack_home, tmp_path).returncode == 0
    import psycopg

    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute("insert into ops.ci_events (branch, kind, at, detail) values "
                     "('main', 'self_heal', now() - interval '1 hour', '{\"acceptance-test\": true}')")
        try:
            run_suite(stack_home, tmp_path, "-m", "daily")
        finally:
            conn.execute("delete from ops.ci_events where detail ? 'acceptance-test'")
    proc = _step5(stack_home, tmp_path)
    assert proc.returncode == 1
    assert "not green: WCH-004 fail" in proc.stdout


def test_tampered_pack_fails_naming_the_file(stack, stack_home, tmp_path):
    proc, results = run_suite(stack_home, tmp_path, "-m", "daily")
    assert proc.returncode == 0
    slo = tmp_path / results["date"] / "results.json"
    doc = json.loads(slo.read_text())
    doc["green"] = True
    slo.write_text(json.dumps(doc) + " ")
    proc = _step5(stack_home, tmp_path)
    assert proc.returncode == 1
    assert "does not verify" in proc.stdout and "results.json" in proc.stdout

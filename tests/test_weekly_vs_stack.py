"""The weekly suite (`pytest -m weekly --opsproof-suite=weekly`) is GREEN on a healthy target, and each case below
breaks ONE weekly control and turns exactly it red while the rest of the weekly suite stays green.

The scan SEC-007 reads is real: the cadence's weekly task (levers/cadence.py `static_scan`, what `opsproof cadence
weekly` runs first) runs bandit over the fixture TMS repository and writes its SARIF where the policy's
`[code_scans] sarif` glob reads it. Every case uses its own policy file in tmp_path (never a tracked file); DB
changes are undone in `finally`. Like tests/test_controls_vs_stack.py, each case runs the WHOLE weekly suite.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from suite_runner import REPO, run_suite, verdicts
from violation_cases import all_cases

from opsproof import clock, policy
from opsproof.levers import cadence

WEEKLY = ("SEC-003", "SEC-007", "SEC-008", "CAD-005", "CAD-006")
TMS = REPO / "fixtures" / "tms-repo"
PLANTED_KEY = "AKIA" + "R4W7KD2LQZ9PXM3T"   # AWS access key id shape; assembled so no scanner flags this file


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def write_policy(folder: Path, **code_scans) -> Path:
    """opsproof.toml with [code_scans] keys replaced (absolute paths; `sarif` globs stay relative to `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO / "opsproof.toml").read_text()
    head, sep, tail = text.partition("\n[code_scans]\n")
    assert sep, "opsproof.toml has no [code_scans] section"
    body, nxt, rest = tail.partition("\n[")
    values = {"sarif": ["reports/scans/*.sarif"], "secrets_scan_paths": [TMS], "static_scan_paths": [TMS],
              **code_scans}
    for key, value in values.items():
        line = f"{key} = {_toml_list(value)}"
        body, n = re.subn(rf"(?m)^{key}\s*=.*$", lambda _m: line, body)
        if not n:
            body += f"\n{line}"
    f = folder / "opsproof.toml"
    f.write_text(head + sep + body + nxt + rest)
    return f


def scan(policy_file: Path, stack) -> dict:
    """The cadence's weekly task, for real (bandit; one audit row): its entry."""
    ctx = cadence.CadenceContext(dsn=stack.admin_dsn(), policy=policy.load(policy_file), project_dir=REPO)
    [entry] = cadence.run(ctx, "weekly", log=lambda m: None)
    assert entry["task"] == "static_scan" and entry["verdict"] == "pass", entry
    return entry


def weekly(stack_home, evidence_dir: Path, policy_file: Path):
    return run_suite(stack_home, evidence_dir, "-m", "weekly", "--opsproof-suite=weekly",
                     f"--opsproof-policy={policy_file}")


def assert_only(results, proc, red: dict[str, str]) -> dict:
    assert results is not None and results["suite"] == "weekly", proc.stdout[-3000:] + proc.stderr[-2000:]
    v = verdicts(results)
    assert {c["id"] for c in results["controls"]} == set(WEEKLY), sorted(v)
    got = {cid: v.get(cid) for cid in WEEKLY}
    want = {cid: red.get(cid, "pass") for cid in WEEKLY}
    msgs = {c["id"]: (c.get("message") or "")[:300] for c in results["controls"] if c["verdict"] != "pass"}
    assert got == want, (got, msgs)
    if red:
        assert proc.returncode != 0 and not results["green"]
        assert all(msgs[cid].strip() for cid in red), msgs
    else:
        assert proc.returncode == 0 and results["green"], msgs
    return {c["id"]: c for c in results["controls"]}


@pytest.fixture(scope="module")
def healthy(stack, stack_home, tmp_path_factory):
    """A policy dir whose reports/scans/bandit.sarif the cadence task just wrote, and the healthy weekly run."""
    folder = tmp_path_factory.mktemp("weekly-healthy")
    pol = write_policy(folder)
    entry = scan(pol, stack)
    proc, results = weekly(stack_home, folder / "evidence", pol)
    return pol, Path(entry["detail"]["sarif"]), proc, results


def test_healthy_weekly_run_is_green_with_a_real_bandit_scan(healthy):
    pol, sarif, proc, results = healthy
    assert sarif == pol.parent / cadence.STATIC_SCAN_SARIF and sarif.is_file()
    run = json.loads(sarif.read_text())["runs"][0]
    assert run["tool"]["driver"]["name"] == "Bandit"
    assert {"startTimeUtc", "endTimeUtc"} <= set(run["invocations"][0])
    by_id = assert_only(results, proc, {})
    sec7 = json.dumps(by_id["SEC-007"]["records"])
    assert "Bandit" in sec7 and "bandit.sarif" in sec7


def test_sec007_open_high_finding(stack, stack_home, tmp_path):
    repo = tmp_path / "tms-high"
    shutil.copytree(TMS, repo)
    (repo / "src" / "tms" / "export.py").write_text(
        "import subprocess\n\n\ndef export(reference: str) -> int:\n"
        "    return subprocess.call(f\"tms-export {reference}\", shell=True)\n")
    pol = write_policy(tmp_path / "p", static_scan_paths=[repo])   # SEC-008 still scans the clean fixture
    scan(pol, stack)
    proc, results = weekly(stack_home, tmp_path / "evidence", pol)
    by_id = assert_only(results, proc, {"SEC-007": "fail"})
    assert "B602" in by_id["SEC-007"]["message"] and "export.py" in by_id["SEC-007"]["message"]


def test_sec007_stale_scan(healthy, stack_home, tmp_path):
    _, sarif, _, _ = healthy
    doc = json.loads(sarif.read_text())
    old = clock.now() - timedelta(days=10)
    doc["runs"][0]["invocations"][0].update(startTimeUtc=old.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                            endTimeUtc=(old + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    pol = write_policy(tmp_path / "p")
    (tmp_path / "p" / "reports" / "scans").mkdir(parents=True)
    (tmp_path / "p" / "reports" / "scans" / "bandit.sarif").write_text(json.dumps(doc))
    proc, results = weekly(stack_home, tmp_path / "evidence", pol)
    by_id = assert_only(results, proc, {"SEC-007": "fail"})
    assert "stale" in by_id["SEC-007"]["message"]


def test_sec007_no_scan_yet_is_an_error(stack_home, tmp_path):
    """Nothing ran the cadence's scan yet: no SARIF, no green. SEC-008 reads the same configured SARIF globs (for a
    secrets scanner's runs), so a glob that matches nothing is its error too: fail closed, never a pass."""
    pol = write_policy(tmp_path / "p")
    proc, results = weekly(stack_home, tmp_path / "evidence", pol)
    by_id = assert_only(results, proc, {"SEC-007": "error", "SEC-008": "error"})
    assert "no SARIF file matches" in by_id["SEC-007"]["message"]


def test_sec008_planted_aws_key(healthy, stack_home, tmp_path):
    _, sarif, _, _ = healthy
    repo = tmp_path / "tms-leak"
    shutil.copytree(TMS, repo)
    (repo / "src" / "tms" / "cloud.py").write_text(f'REGION = "eu-central-1"\nKEY_ID = "{PLANTED_KEY}"\n')
    pol = write_policy(tmp_path / "p", secrets_scan_paths=[repo], sarif=[sarif])
    proc, results = weekly(stack_home, tmp_path / "evidence", pol)
    by_id = assert_only(results, proc, {"SEC-008": "fail"})
    assert "cloud.py" in json.dumps(by_id["SEC-008"]) and PLANTED_KEY not in json.dumps(results)


def test_cad005_canary_flag_overridden(healthy, stack, stack_home, tmp_path):
    _, sarif, _, _ = healthy
    pol = write_policy(tmp_path / "p", sarif=[sarif])
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        oid = conn.execute("""insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
                              values ('canary.rollout_percentage', '"RAMP_50"', 'weekly-proof', 'weekly-proof',
                                      'CAD-005 proof', now() + interval '10 minutes') returning id""").fetchone()[0]
        try:
            proc, results = weekly(stack_home, tmp_path / "evidence", pol)
        finally:
            conn.execute("delete from ops.flag_overrides where id = %s", (oid,))
        assert conn.execute("select count(*) from ops.flag_overrides where owner = 'weekly-proof'").fetchone()[0] == 0
    by_id = assert_only(results, proc, {"CAD-005": "fail"})
    assert "canary.rollout_percentage" in by_id["CAD-005"]["message"]


def test_cad006_secret_in_the_evidence(healthy, stack, stack_home, tmp_path):
    _, sarif, _, _ = healthy
    pol = write_policy(tmp_path / "p", sarif=[sarif])
    secret = stack.env()["SUPABASE_DB_PASSWORD"] if "SUPABASE_DB_PASSWORD" in stack.env() else sorted(
        v for k, v in stack.env().items() if k.endswith(("PASSWORD", "SECRET", "_KEY")))[0]
    evidence_dir = tmp_path / "evidence"
    (evidence_dir / "exports").mkdir(parents=True)
    (evidence_dir / "exports" / "leak.log").write_text(f"connecting with {secret}\n")
    proc, results = weekly(stack_home, evidence_dir, pol)
    by_id = assert_only(results, proc, {"CAD-006": "fail"})
    assert "exports/leak.log" in json.dumps(by_id["CAD-006"]) and secret not in json.dumps(results)


def test_sec003_portal_grant_differs_from_the_role_matrix(healthy, stack, stack_home, tmp_path):
    _, sarif, _, _ = healthy
    case = next(c for c in all_cases() if c.name == "SEC-003")   # the daily violation case, reused
    pol = write_policy(tmp_path / "p", sarif=[sarif])
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(case.inject)
        try:
            proc, results = weekly(stack_home, tmp_path / "evidence", pol)
        finally:
            conn.execute(case.undo)
    assert_only(results, proc, dict(case.red))

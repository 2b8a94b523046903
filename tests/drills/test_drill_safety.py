"""Proof that the drills are safe by construction: each runs the real drills (`pytest -m drill`) in a
subprocess against the isolated stack + plane, and checks the target afterwards.

- the four drills pass in < 3 minutes and leave the flag tables' md5 exactly as before (each drill too);
- --dry-run changes nothing; a production target is refused unless doubly allowed;
- a plane component stopped midway -> the drill fails, its levers are released, steady state comes back;
- SIGINT mid-drill -> released before the process exits; SIGKILL -> the lease runs out on its own
  (effective flags back to base with no human action), `opsproof levers release --stale` clears the rows;
- two concurrent runs -> the second fails fast naming the holder (or waits with --drill-wait);
- a worker that ignores the kill switch -> the drill FAILS saying what did not happen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from drill_helpers import LEASE_S, REPO, DrillRun, active_override, audit_actions, effective, unreleased, wait_for

from opsproof.levers import overrides, replica, steady_state
from opsproof.plane.supervisor import Supervisor

DRILLS = ("kill_switch", "region_wobble", "replay_rails", "idempotency")
KEY = "autonomy.emergencyStop"


def _rid(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:8]}"


def _kill_component(dh, name: str) -> int:
    pid = Supervisor(dh.home / "plane").alive(name)
    assert pid, f"{name} not running"
    os.killpg(pid, signal.SIGKILL)
    return pid


def _assert_restored(dh, run_id: str, before: dict, policy_flags: dict) -> None:
    with dh.conn() as conn:
        assert unreleased(conn, run_id) == [], "the drill left an unreleased override"
        assert effective(conn, KEY) == (False, False, False)
    assert not replica.is_paused(dh.replica_dsn), "the drill left WAL replay paused"
    assert overrides.fingerprint(dh.dsn) == before
    up = dh.cli("plane", "up")
    assert up.returncode == 0, up.stderr
    rep = steady_state.wait_steady(dh.dsn, policy_flags, timeout_s=30, replica_dsn=dh.replica_dsn)
    assert rep.ok, rep.problems


def test_four_drills_pass_in_under_3_minutes_and_leave_the_flags_unchanged(drill_home, healthy, tmp_path):
    run = DrillRun(drill_home, tmp_path, run_id=_rid("all"))
    rc = run.wait(300)
    out = run.output()
    assert rc == 0, out[-4000:]
    assert run.duration < 180, f"the four drills took {run.duration:.0f}s"
    assert overrides.fingerprint(drill_home.dsn) == healthy
    for name in DRILLS:
        rec = run.record(name)
        assert rec is not None, f"no drills/{name}.json in the pack"
        assert rec["verdict"] == "pass", (name, rec["failure"])
        assert rec["flags_fingerprint"]["equal"] is True, name
        assert rec["flags_fingerprint"]["before"] == rec["flags_fingerprint"]["after"]
        assert rec["steady_state"]["after_ok"] is True
        assert all(o["released_at"] for o in rec["overrides"]), rec["overrides"]
        assert rec["steps"] and rec["started"] and rec["ended"] and rec["measured"]
    ks = run.record("kill_switch")
    assert ks["overrides"] and ks["overrides"][0]["key"] == KEY
    assert ks["measured"]["halt_latency_cycles"]["value"] <= 1.1
    rw = run.record("region_wobble")
    assert rw["measured"]["failed_probes_before_cutover"]["value"] == 3
    assert rw["measured"]["lost_writes"]["value"] == 0
    results = run.results()
    assert {c["id"]: c["verdict"] for c in results["controls"]} == {
        "DRL-001": "pass", "DRL-002": "pass", "DRL-003": "pass", "DRL-004": "pass"}
    with drill_home.conn() as conn:
        acts = audit_actions(conn, run.run_id)
        if conn.execute("select to_regprocedure('ops.verify_audit_chain()')").fetchone()[0]:
            ok, checked, bad, why = conn.execute("select * from ops.verify_audit_chain()").fetchone()
            assert ok, f"audit chain broken at row {bad}: {why}"
    for a in ("drill.lock.acquire", "flag.override.take", "flag.override.release", "replica.replay.pause",
              "replica.replay.resume", "drill.lock.release"):
        assert a in acts, (a, acts)
    print(f"\nfour drills: {run.duration:.1f}s")


def test_dry_run_prints_the_plan_and_changes_nothing(drill_home, healthy, tmp_path):
    with drill_home.conn() as conn:
        audit0 = conn.execute("select max(id) from ops.audit_log").fetchone()[0]
        tasks0 = conn.execute("select count(*) from ops.agent_tasks").fetchone()[0]
    run = DrillRun(drill_home, tmp_path, "--dry-run", "-rs", run_id=_rid("dry"))
    assert run.wait(120) == 0, run.output()[-3000:]
    out = run.output()
    assert "4 skipped" in out and "[dry-run] kill_switch would:" in out
    assert "override autonomy.emergencyStop = true" in out and "pause WAL replay" in out
    assert overrides.fingerprint(drill_home.dsn) == healthy
    with drill_home.conn() as conn:
        assert audit_actions(conn, run.run_id) == []
        assert conn.execute("select count(*) from ops.audit_log where id > %s and run_id like 'dry%%'",
                            (audit0,)).fetchone()[0] == 0
        assert conn.execute("select count(*) from ops.agent_tasks where payload->>'drill' = %s",
                            (run.run_id,)).fetchone()[0] == 0
        assert conn.execute("select count(*) from ops.agent_tasks").fetchone()[0] >= tasks0


def test_production_target_is_refused_unless_doubly_allowed(drill_home, healthy, tmp_path):
    r1 = DrillRun(drill_home, tmp_path, "--no-evidence", run_id=_rid("prod"), OPSPROOF_PRODUCTION="true")
    assert r1.wait(60) == 2
    assert "refusing to run drills on a production target" in r1.output()
    r2 = DrillRun(drill_home, tmp_path, "--no-evidence", "--allow-drills-on-production", run_id=_rid("prod"),
                  OPSPROOF_PRODUCTION="true")
    assert r2.wait(60) == 2
    assert "allow_on_production = true" in r2.output() and "--allow-drills-on-production and" not in r2.output()
    allowed = tmp_path / "allowed.toml"
    allowed.write_text(drill_home.policy.read_text().replace("allow_on_production = false", "allow_on_production = true"))
    r3 = DrillRun(drill_home, tmp_path, "--no-evidence", "--allow-drills-on-production", "--dry-run",
                  run_id=_rid("prod"), policy=allowed, OPSPROOF_PRODUCTION="true")
    assert r3.wait(60) == 0, r3.output()[-2000:]
    assert "4 skipped" in r3.output()
    with drill_home.conn() as conn:
        for r in (r1, r2, r3):
            assert audit_actions(conn, r.run_id) == []


@pytest.mark.parametrize("drill,component,trigger", [
    ("kill_switch", "worker", "override"),
    ("region_wobble", "gate", "replica.replay.pause"),
])
def test_fault_midway_releases_levers_and_steady_state_returns(drill_home, healthy, policy_flags, tmp_path,
                                                                drill, component, trigger):
    run = DrillRun(drill_home, tmp_path, f"drills/test_{drill}.py", run_id=_rid("fault"))
    try:
        with drill_home.conn() as conn:
            if trigger == "override":
                wait_for(lambda: active_override(conn, run.run_id), 30, "the drill's override")
            else:
                wait_for(lambda: trigger in audit_actions(conn, run.run_id), 30, "the drill's replica pause")
        _kill_component(drill_home, component)
        rc = run.wait(120)
    finally:
        run.kill()
    out = run.output()
    assert rc == 1, out[-3000:]
    rec = run.record(drill)
    assert rec["verdict"] in ("fail", "error"), rec
    assert "did NOT" in (rec["failure"] or ""), rec["failure"]
    assert f"component plane.{component} is down" in out, out[-3000:]  # steady state after: fails loudly
    with drill_home.conn() as conn:
        acts = audit_actions(conn, run.run_id)
    assert "flag.override.release" in acts or "replica.replay.resume" in acts, acts
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)


def test_sigint_mid_drill_releases_before_exit(drill_home, healthy, policy_flags, tmp_path):
    run = DrillRun(drill_home, tmp_path, "drills/test_kill_switch.py", run_id=_rid("int"))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: active_override(conn, run.run_id), 30, "the drill's override")
            run.proc.send_signal(signal.SIGINT)
            rc = run.wait(60)
            # checked the instant the process is gone: released before exit, nobody else acted
            assert unreleased(conn, run.run_id) == []
            assert effective(conn, KEY)[0] is False
            released = conn.execute(
                "select reason from ops.audit_log where run_id = %s and action = 'flag.override.release'",
                (run.run_id,)).fetchall()
    finally:
        run.kill()
    out = run.output()
    assert rc != 0
    assert "SIGINT received: levers released" in out, out[-3000:]
    assert released, "no audited release"
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)


def test_sigkill_mid_drill_lease_expires_by_itself_then_release_stale(drill_home, healthy, policy_flags, tmp_path):
    run = DrillRun(drill_home, tmp_path, "drills/test_kill_switch.py", run_id=_rid("kill"))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: active_override(conn, run.run_id), 30, "the drill's override")
            run.proc.send_signal(signal.SIGKILL)
            run.wait(30)
            t_kill = time.monotonic()
            assert effective(conn, KEY)[0] is True, "the override should still be leased right after the kill"
            # no human action: the lease runs out and every reader is back on the base flags
            wait_for(lambda: effective(conn, KEY) == (False, False, False), LEASE_S + 3,
                     "the effective flags to return to base")
            back_after = time.monotonic() - t_kill
            assert back_after <= LEASE_S + 1
            rows = unreleased(conn, run.run_id)
            assert rows, "the killed runner's override rows stay (stale) until release --stale"
    finally:
        run.kill()
    listed = drill_home.cli("levers", "list")
    assert "stale" in listed.stdout and run.run_id in listed.stdout, listed.stdout
    rel = drill_home.cli("levers", "release", "--stale")
    assert rel.returncode == 0, rel.stderr
    assert "released stale override" in rel.stdout and run.run_id in rel.stdout
    with drill_home.conn() as conn:
        assert unreleased(conn, run.run_id) == []
        assert "flag.override.release_stale" in [r[0] for r in conn.execute(
            "select action from ops.audit_log where detail->'runs' ? %s", (run.run_id,))]
    # the lock died with the runner: the next run is not blocked
    nxt = DrillRun(drill_home, tmp_path, "drills/test_idempotency.py", run_id=_rid("next"))
    assert nxt.wait(120) == 0, nxt.output()[-3000:]
    print(f"\neffective flags back to base {back_after:.1f}s after SIGKILL (lease {LEASE_S}s)")
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)


def test_concurrent_runs_second_fails_fast_naming_the_holder_or_waits(drill_home, healthy, policy_flags, tmp_path):
    a = DrillRun(drill_home, tmp_path, "drills/test_kill_switch.py", run_id=_rid("A"))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: "drill.lock.acquire" in audit_actions(conn, a.run_id), 30, "run A's lock")
        b = DrillRun(drill_home, tmp_path, run_id=_rid("B"))
        rc_b = b.wait(60)
        out_b = b.output()
        assert rc_b == 75, out_b[-2000:]
        assert b.duration < 15, f"the second run took {b.duration:.1f}s to give up"
        assert f"run {a.run_id}" in out_b and f"pid {a.proc.pid}" in out_b, out_b[-2000:]
        w = DrillRun(drill_home, tmp_path, "--drill-wait=120", "drills/test_idempotency.py", run_id=_rid("W"))
        assert a.wait(120) == 0, a.output()[-3000:]
        assert w.wait(120) == 0, w.output()[-3000:]
    finally:
        a.kill()
    assert a.record("kill_switch")["verdict"] == "pass"
    with drill_home.conn() as conn:
        assert audit_actions(conn, b.run_id) == [], "the refused run must not have written anything"
        waited = conn.execute("select (detail->>'waited_s')::float8 from ops.audit_log where run_id = %s and "
                              "action = 'drill.lock.acquire'", (w.run_id,)).fetchone()[0]
        assert waited > 0.5
    assert w.record("idempotency")["verdict"] == "pass"
    _assert_restored(drill_home, a.run_id, healthy, policy_flags)


def test_a_worker_that_ignores_the_kill_switch_fails_the_drill(drill_home, healthy, policy_flags, tmp_path):
    log = (tmp_path / "rogue.log").open("w")
    rogue = subprocess.Popen([sys.executable, str(Path(__file__).with_name("rogue_worker.py"))], cwd=REPO,
                             env=drill_home.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: conn.execute("select count(*) from ops.heartbeats where detail->>'worker' like 'rogue-%%'"
                                          ).fetchone()[0], 20, "the rogue worker's heartbeat")
        run = DrillRun(drill_home, tmp_path, "drills/test_kill_switch.py", run_id=_rid("rogue"))
        rc = run.wait(120)
    finally:
        os.killpg(rogue.pid, signal.SIGTERM)
        rogue.wait(15)
        log.close()
    out = run.output()
    assert rc == 1, out[-3000:]
    rec = run.record("kill_switch")
    assert rec["verdict"] == "fail"
    assert "kill switch did NOT halt the worker pool" in rec["failure"], rec["failure"]
    assert "rogue-" in rec["failure"], rec["failure"]
    assert "kill switch did NOT halt the worker pool" in out
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)

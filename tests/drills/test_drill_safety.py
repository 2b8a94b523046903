"""Proof that the drills are safe by construction: each runs the real drills (`pytest -m drill`) in a
subprocess against the isolated stack + plane, and checks the target afterwards.

- the four drills pass in < 3 minutes and leave the flag tables' md5 exactly as before (each drill too);
- --opsproof-dry-run changes nothing; a production target is refused unless doubly allowed;
- a plane component stopped midway -> the drill fails, its levers are released, steady state comes back;
- SIGINT mid-drill -> released before the process exits, the pack says interrupted (never green), the drill
  concludes nothing; the same with SIGINT inherited as ignored (cron, nohup, `&`) and with SIGTERM;
- SIGKILL -> the lease runs out on its own within seconds (effective flags back to base with no human
  action), `opsproof levers release --stale` clears the rows; SIGKILL mid region wobble -> the plane's gate
  resumes WAL replay by itself once the pause's lease expires, and reads return to the replica;
- two concurrent runs -> the second fails fast naming the holder (or waits with --opsproof-drill-wait);

Every wait is on an event or a polled state with a generous deadline (a busy 2-core machine).
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

from opsproof.levers import overrides, replica
from opsproof.measure import steady_state
from opsproof.plane.supervisor import Supervisor

DRILLS = ("kill_switch", "region_wobble", "replay_rails", "idempotency")
DRILL_IDS = {"kill_switch": "DRL-001", "region_wobble": "DRL-002", "replay_rails": "DRL-003", "idempotency": "DRL-004"}
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
    run = DrillRun(drill_home, tmp_path, "--opsproof-dry-run", "-rs", run_id=_rid("dry"))
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
    r1 = DrillRun(drill_home, tmp_path, "--opsproof-no-evidence", run_id=_rid("prod"), OPSPROOF_PRODUCTION="true")
    assert r1.wait(60) == 2
    assert "refusing to run drills on a production target" in r1.output()
    r2 = DrillRun(drill_home, tmp_path, "--opsproof-no-evidence", "--opsproof-allow-drills-on-production", run_id=_rid("prod"),
                  OPSPROOF_PRODUCTION="true")
    assert r2.wait(60) == 2
    assert "allow_on_production = true" in r2.output() and "--opsproof-allow-drills-on-production and" not in r2.output()
    allowed = tmp_path / "allowed.toml"
    allowed.write_text(drill_home.policy.read_text().replace("allow_on_production = false", "allow_on_production = true"))
    r3 = DrillRun(drill_home, tmp_path, "--opsproof-no-evidence", "--opsproof-allow-drills-on-production", "--opsproof-dry-run",
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
            wait_for(lambda: active_override(conn, run.run_id), 60, "the drill's override")
            run.proc.send_signal(signal.SIGINT)
            rc = run.wait(120)
            # checked the instant the process is gone: released before exit, nobody else acted
            assert unreleased(conn, run.run_id) == []
            assert effective(conn, KEY)[0] is False
            released = conn.execute(
                "select reason from ops.audit_log where run_id = %s and action = 'flag.override.release'",
                (run.run_id,)).fetchall()
    finally:
        run.kill()
    out = run.output()
    assert rc == 2, (rc, out[-3000:])  # pytest's INTERRUPTED
    assert "SIGINT received: levers released" in out, out[-3000:]
    assert released, "no audited release"
    _assert_interrupted(run, "SIGINT", "kill_switch")
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)


def _assert_interrupted(run: DrillRun, sig: str, drill: str, not_run: tuple[str, ...] = ()) -> None:
    """The pack says interrupted (never green), the interrupted drill concludes nothing, and the controls
    that never ran are named."""
    out = run.output()
    results = run.results()
    assert results is not None, f"no pack written for the interrupted run: {out[-3000:]}"
    assert results["interrupted"] is True and results["green"] is False, results
    assert results["interrupted_by"] == sig, results["interrupted_by"]
    verdicts = {c["id"]: c["verdict"] for c in results["controls"]}
    assert verdicts[DRILL_IDS[drill]] == "interrupted", verdicts
    never_ran = [c["id"] for c in results["not_run"] if c.get("reason") == "collected, never ran"]
    assert sorted(never_ran) == sorted(DRILL_IDS[d] for d in not_run), results["not_run"]
    # a one-file drill run also names the catalog's drills it did not collect (never a GREEN drill run)
    assert all(c.get("reason") in ("collected, never ran", "in the catalog for the drill suite, not collected")
               for c in results["not_run"]), results["not_run"]
    assert f"INTERRUPTED by {sig}" in out, out[-2000:]
    assert "GREEN" not in out
    rec = run.record(drill)
    assert rec is not None, f"no drills/{drill}.json"
    assert rec["verdict"] == "interrupted" and rec["interrupted"] == sig, rec
    assert not rec["failure"], f"an interrupted drill must not blame anything: {rec['failure']}"
    assert "did NOT" not in out, "the drill went on after its levers were released and judged the system"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_inherited_as_ignored_still_stops_the_run_as_interrupted(drill_home, healthy, policy_flags, tmp_path,
                                                                        sig):
    """Started the way cron, nohup and `&` jobs start (SIGINT and SIGTERM ignored): the guard releases the
    override AND the run stops; the kill switch drill must not go on to blame a healthy worker."""
    signum = getattr(signal, sig)
    run = DrillRun(drill_home, tmp_path, run_id=_rid("ign"), ignore_signals=(signal.SIGINT, signal.SIGTERM))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: active_override(conn, run.run_id), 120, "the kill switch drill's override")
            run.proc.send_signal(signum)
            rc = run.wait(120)
            assert unreleased(conn, run.run_id) == []
            assert effective(conn, KEY)[0] is False
            acts = audit_actions(conn, run.run_id)
    finally:
        run.kill()
    out = run.output()
    assert rc == 2, (rc, out[-3000:])
    assert f"{sig} received: levers released" in out, out[-3000:]
    assert "flag.override.release" in acts, acts
    ends = [a for a in acts if a == "drill.kill_switch.end"]
    assert ends, acts
    with drill_home.conn() as conn:
        verdict = conn.execute("select detail->>'verdict' from ops.audit_log where run_id = %s and "
                               "action = 'drill.kill_switch.end'", (run.run_id,)).fetchone()[0]
    assert verdict == "interrupted", verdict
    # idempotency ran (and passed) first; region wobble and replay rails never ran
    _assert_interrupted(run, sig, "kill_switch", not_run=("region_wobble", "replay_rails"))
    assert run.record("idempotency")["verdict"] == "pass"
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)


def test_sigkill_mid_drill_lease_expires_by_itself_then_release_stale(drill_home, healthy, policy_flags, tmp_path):
    run = DrillRun(drill_home, tmp_path, "drills/test_kill_switch.py", run_id=_rid("kill"))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: active_override(conn, run.run_id), 60, "the drill's override")
            run.proc.send_signal(signal.SIGKILL)
            run.wait(30)
            t_kill = time.monotonic()
            # no human action: the lease runs out and every reader is back on the base flags within one lease
            wait_for(lambda: effective(conn, KEY) == (False, False, False), LEASE_S + 30,
                     "the effective flags to return to base")
            back_after = time.monotonic() - t_kill
            rows = unreleased(conn, run.run_id)
            assert rows, "the killed runner's override rows stay (stale) until release --stale"
            # it was the lease that ended it (SIGKILL runs no handler): no release row, the row expired
            assert "flag.override.release" not in audit_actions(conn, run.run_id)
            assert all(conn.execute("select expires_at <= now() from ops.flag_overrides where id = %s",
                                    (r[0],)).fetchone()[0] for r in rows)
            # and it expired within one lease of the runner's last heartbeat (database clock, load-proof)
            gap = conn.execute(
                """select extract(epoch from o.expires_at - coalesce(
                          (select max(at) from ops.audit_log a where a.run_id = o.run_id
                              and a.action in ('flag.override.renew', 'flag.override.take')), o.created_at))
                     from ops.flag_overrides o where o.id = %s""", (rows[0][0],)).fetchone()[0]
            assert float(gap) <= LEASE_S + 0.5, gap
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
        rc_b = b.wait(120)
        out_b = b.output()
        assert rc_b == 75, out_b[-2000:]
        # fail fast = it did not wait for A (which holds the lock for the whole kill switch drill)
        assert a.proc.poll() is None, "run A finished before B gave up: B did not fail fast"
        assert f"run {a.run_id}" in out_b and f"pid {a.proc.pid}" in out_b, out_b[-2000:]
        w = DrillRun(drill_home, tmp_path, "--opsproof-drill-wait=120", "drills/test_idempotency.py", run_id=_rid("W"))
        assert a.wait(120) == 0, a.output()[-3000:]
        assert w.wait(120) == 0, w.output()[-3000:]
    finally:
        a.kill()
    assert a.record("kill_switch")["verdict"] == "pass"
    with drill_home.conn() as conn:
        assert audit_actions(conn, b.run_id) == [], "the refused run must not have written anything"
        # W got the lock only after A let it go (ordering on the audit chain, not a wall-clock guess)
        a_rel = conn.execute("select id from ops.audit_log where run_id = %s and action = 'drill.lock.release'",
                             (a.run_id,)).fetchone()[0]
        w_acq = conn.execute("select id from ops.audit_log where run_id = %s and action = 'drill.lock.acquire'",
                             (w.run_id,)).fetchone()[0]
        assert w_acq > a_rel
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


def test_sigkill_mid_region_wobble_the_plane_resumes_replay_by_itself(drill_home, healthy, policy_flags, tmp_path):
    """The runner dies holding a WAL replay pause: nobody runs `levers release --stale`; the plane's health gate
    resumes replay once the pause's lease has expired, and reads return to the replica."""
    run = DrillRun(drill_home, tmp_path, "drills/test_region_wobble.py", run_id=_rid("wob"))
    try:
        with drill_home.conn() as conn:
            wait_for(lambda: "replica.replay.pause" in audit_actions(conn, run.run_id), 120, "the drill's pause")
            wait_for(lambda: replica.is_paused(drill_home.replica_dsn), 30, "replay to be paused")
            run.proc.send_signal(signal.SIGKILL)
            run.wait(30)
            t_kill = time.monotonic()
            wait_for(lambda: not replica.is_paused(drill_home.replica_dsn), LEASE_S + 60,
                     "the plane to resume replay by itself")
            healed_after = time.monotonic() - t_kill
            who = conn.execute("select actor, detail->>'healed_by' from ops.audit_log where run_id = %s and "
                               "action = 'replica.replay.resume'", (run.run_id,)).fetchall()
            assert who == [("system@", "plane.gate")], who
            wait_for(lambda: conn.execute("select target from ops.read_routing where region = 'replica'"
                                          ).fetchone()[0] == "replica", 60, "reads to return to the replica")
    finally:
        run.kill()
    print(f"\nreplay resumed by the gate {healed_after:.1f}s after SIGKILL (lease {LEASE_S}s)")
    _assert_restored(drill_home, run.run_id, healthy, policy_flags)

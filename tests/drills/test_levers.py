"""The levers and the safety machinery, in-process against the isolated stack: leased overrides with audit
rows, renew/release/release_stale, refusal without ops.audit, the drill lock, steady state, signal guard."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from drill_helpers import REPO, audit_actions, effective

from opsproof.levers import overrides, replica, steady_state
from opsproof.levers.common import LeverError
from opsproof.levers.drill_lock import DrillLock, DrillLockBusy
from opsproof.levers.session import DrillSession

KEY = "autonomy.emergencyStop"


def _run() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_override_take_renew_release_each_audited(drill_home, healthy):
    run = _run()
    with drill_home.conn() as conn:
        oid = overrides.take_override(conn, KEY, True, "tests", run, "lever test", 30)
        assert effective(conn, KEY) == (True, False, True)
        assert overrides.fingerprint(conn) != healthy, "an active override must change the fingerprint"
        assert overrides.renew(conn, [oid], 60, run) == [oid]
        left = conn.execute("select extract(epoch from expires_at - now()) from ops.flag_overrides where id = %s",
                            (oid,)).fetchone()[0]
        assert 55 < left <= 60
        assert overrides.release(conn, [oid], run) == [oid]
        assert overrides.release(conn, [oid], run) == []  # idempotent, no second audit row
        assert effective(conn, KEY) == (False, False, False)
        assert audit_actions(conn, run) == ["flag.override.take", "flag.override.renew", "flag.override.release"]
        take = conn.execute("select detail from ops.audit_log where run_id = %s and action = 'flag.override.take'",
                            (run,)).fetchone()[0]
        assert take["override_id"] == oid and take["value"] is True and take["owner"] == "tests"
    assert overrides.fingerprint(drill_home.dsn) == healthy, "released history rows must not change the fingerprint"


def test_override_refuses_unknown_flag_bad_lease_and_missing_audit(drill_home, healthy):
    with drill_home.conn() as conn:
        with pytest.raises(LeverError, match="no flag 'no.such.flag'"):
            overrides.take_override(conn, "no.such.flag", True, "tests", _run(), "x", 30)
        with pytest.raises(LeverError, match="lease must be positive"):
            overrides.take_override(conn, KEY, True, "tests", _run(), "x", 0)
        with conn.transaction(force_rollback=True):
            conn.execute("drop function ops.audit(text, text, text, text, text, jsonb, uuid)")
            with pytest.raises(LeverError, match=r"ops\.audit\(.*\) is missing on the target: levers refuse"):
                overrides.take_override(conn, KEY, True, "tests", _run(), "x", 30)
        assert conn.execute("select count(*) from ops.flag_overrides where owner = 'tests' and released_at is null"
                            ).fetchone()[0] == 0


def test_expired_lease_stops_counting_and_release_stale_clears_it(drill_home, healthy):
    run = _run()
    with drill_home.conn() as conn:
        oid = overrides.take_override(conn, KEY, True, "tests", run, "expiring", 1)
        assert effective(conn, KEY)[0] is True
        time.sleep(1.3)
        assert effective(conn, KEY) == (False, False, False), "an expired lease must be ignored by every reader"
        assert [r["state"] for r in overrides.list_overrides(conn) if r["id"] == oid] == ["stale"]
        rows = overrides.release_stale(conn, run_id=run)
        assert oid in [r["id"] for r in rows]
        assert [r for r in overrides.list_overrides(conn) if r["id"] == oid] == []
        assert audit_actions(conn, run)[-1] == "flag.override.release_stale"
    assert overrides.fingerprint(drill_home.dsn) == healthy


def test_session_renews_leases_and_cleanup_releases_by_run(drill_home, healthy):
    sess = DrillSession(dsn=drill_home.dsn, run_id=_run(), lease_s=1.5).start()
    try:
        t = sess.take(KEY, True, "renewal test")
        time.sleep(3.2)  # two lease lengths: alive only because the renewer extends it
        with drill_home.conn() as conn:
            assert effective(conn, KEY)[0] is True
        assert sess.lost_leases() == {}
        assert "dsn" not in repr(sess) and "postgres" not in repr(sess), "a DSN must never reach a traceback"
    finally:
        out = sess.stop()
    assert out["released"] == [t.id]
    with drill_home.conn() as conn:
        assert effective(conn, KEY) == (False, False, False)
        assert "flag.override.renew" in audit_actions(conn, sess.run_id)


def test_drill_lock_second_run_fails_fast_naming_the_holder_or_waits(drill_home, healthy):
    a = DrillLock(drill_home.dsn, "run-aaaa").acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(DrillLockBusy) as exc:
            DrillLock(drill_home.dsn, "run-bbbb").acquire()
        assert time.monotonic() - t0 < 3
        msg = str(exc.value)
        assert "run run-aaaa" in msg and a.owner in msg and f"pid {a.info['pid']}" in msg, msg
        threading.Timer(1.0, a.release).start()
        b = DrillLock(drill_home.dsn, "run-bbbb").acquire(wait_s=15)
        assert b.info["waited_s"] >= 0.5
        b.release()
    finally:
        a.release()


def test_drill_lock_dies_with_its_process(drill_home, healthy):
    code = textwrap.dedent(f"""
        import os, time
        from opsproof.levers.drill_lock import DrillLock
        held = DrillLock({drill_home.dsn!r}, "run-doomed").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(DrillLockBusy, match="run-doomed"):
            DrillLock(drill_home.dsn, "run-next").acquire()
        p.kill()
        p.wait(10)
        DrillLock(drill_home.dsn, "run-next").acquire(wait_s=10).release()
    finally:
        p.kill()


def test_steady_state_names_foreign_overrides_and_a_paused_replica(drill_home, healthy, policy_flags):
    with drill_home.conn() as conn:
        oid = overrides.take_override(conn, KEY, True, "someone-else", "foreign-run", "manual change", 30)
    try:
        rep = steady_state.measure(drill_home.dsn, policy_flags, run_id="mine", replica_dsn=drill_home.replica_dsn)
        assert not rep.ok
        text = " | ".join(rep.problems)
        assert "flag autonomy.emergencyStop is True, policy says False (override by someone-else)" in text
        assert f"foreign override #{oid}" in text and "foreign-run" in text
    finally:
        overrides.release(drill_home.dsn, [oid], "foreign-run")
    run = _run()
    replica.pause_replay(drill_home.dsn, drill_home.replica_dsn, run, "tests", "steady-state test", 30)
    try:
        rep = steady_state.measure(drill_home.dsn, policy_flags, replica_dsn=drill_home.replica_dsn)
        assert "WAL replay is paused on the replica" in rep.problems
    finally:
        assert replica.resume_replay(drill_home.dsn, drill_home.replica_dsn, run)
    rep = steady_state.wait_steady(drill_home.dsn, policy_flags, replica_dsn=drill_home.replica_dsn, timeout_s=20)
    assert rep.ok, rep.problems


def test_signal_guard_releases_then_chains_to_the_previous_handler(tmp_path):
    marker = tmp_path / "cleaned"
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from opsproof.levers.signals import SignalGuard
        def cleanup():
            open({str(marker)!r}, "a").write(sys.argv[1] + "\\n")
            return "ok"
        SignalGuard(cleanup).install()
        try:
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))
            time.sleep(5)
        except KeyboardInterrupt:
            print("KeyboardInterrupt reached the program", flush=True)
            sys.exit(7)
    """)
    p = subprocess.run([sys.executable, "-c", code, "SIGINT"], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert p.returncode == 7 and "KeyboardInterrupt reached the program" in p.stdout, p.stderr
    assert "SIGINT received: levers released (ok)" in p.stderr
    p = subprocess.run([sys.executable, "-c", code, "SIGTERM"], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert p.returncode == -15, (p.returncode, p.stderr)
    assert marker.read_text().split() == ["SIGINT", "SIGTERM"]


def test_levers_cli_list_and_release_stale(drill_home, healthy):
    run = _run()
    overrides.take_override(drill_home.dsn, KEY, True, "tests", run, "cli test", 1)
    time.sleep(1.2)
    out = drill_home.cli("levers", "list")
    assert out.returncode == 0 and "stale" in out.stdout, out.stdout + out.stderr
    out = drill_home.cli("levers", "release")
    assert out.returncode == 2 and "--stale" in out.stderr
    out = drill_home.cli("levers", "release", "--stale")
    assert out.returncode == 0 and "released stale override" in out.stdout, out.stdout + out.stderr
    assert drill_home.cli("levers", "release", "--stale").stdout.strip() == "no stale overrides"

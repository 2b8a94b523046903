"""The levers and the safety machinery, in-process against the isolated stack: leased overrides with audit
rows, renew/release/release_stale, refusal without ops.audit, the drill lock, steady state, signal guard,
the replica pause lease (renewed while its holder lives; resumed by the plane's gate once it expires).

Every wait here is on an event or a polled state with a generous deadline, never sleep-then-assert: the
suite runs on a busy 2-core machine."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import psycopg
import pytest
from drill_helpers import REPO, audit_actions, effective, wait_for

from opsproof.levers import overrides, replica
from opsproof.measure import steady_state
from opsproof.levers.common import LeverError
from opsproof.levers.lease import LeaseRenewer, renew_interval
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
        # nobody renews: every reader is back on the base flag once the lease ran out (on the database clock)
        wait_for(lambda: effective(conn, KEY) == (False, False, False), 30, "the expired lease to stop counting")
        assert conn.execute("select expires_at <= now() from ops.flag_overrides where id = %s", (oid,)).fetchone()[0]
        assert [r["state"] for r in overrides.list_overrides(conn) if r["id"] == oid] == ["stale"]
        rows = overrides.release_stale(conn, run_id=run)
        assert oid in [r["id"] for r in rows]
        assert [r for r in overrides.list_overrides(conn) if r["id"] == oid] == []
        assert audit_actions(conn, run)[-1] == "flag.override.release_stale"
    assert overrides.fingerprint(drill_home.dsn) == healthy


def test_session_renews_leases_and_cleanup_releases_by_run(drill_home, healthy):
    lease = 6.0
    sess = DrillSession(dsn=drill_home.dsn, run_id=_run(), lease_s=lease).start()
    assert sess.renewer.interval_s == renew_interval(lease) == lease / 3
    try:
        t = sess.take(KEY, True, "renewal test")
        with drill_home.conn() as conn:
            first = conn.execute("select expires_at from ops.flag_overrides where id = %s", (t.id,)).fetchone()[0]
            # past the first expiry, alive only because the renewer extended it (event: the row's expiry moved)
            wait_for(lambda: sess.renewer.renewals >= 2 and conn.execute(
                "select expires_at > %s + interval '1 second' from ops.flag_overrides where id = %s",
                (first, t.id)).fetchone()[0], 60, "two renewals")
            wait_for(lambda: conn.execute("select now() > %s", (first,)).fetchone()[0], 60, "the first expiry to pass")
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
    b = None
    try:
        fast = DrillLock(drill_home.dsn, "run-bbbb")
        with pytest.raises(DrillLockBusy) as exc:
            fast.acquire()
        assert fast.attempts == 1, "fail fast: one try, no waiting"
        msg = str(exc.value)
        assert "run run-aaaa" in msg and a.owner in msg and f"pid {a.info['pid']}" in msg, msg
        # --drill-wait: B keeps trying while A holds; A releases only once B was seen refused (an event, not
        # a timer racing B's connect on a busy machine)
        b = DrillLock(drill_home.dsn, "run-bbbb")
        got: dict = {}
        waiter = threading.Thread(target=lambda: got.update(lock=b.acquire(wait_s=120, poll_s=0.1)), daemon=True)
        waiter.start()
        wait_for(lambda: b.attempts >= 2, 60, "run B to be refused while A holds the lock")
        assert not got and b.conn is None
        a.release()
        waiter.join(60)
        assert got.get("lock") is b and b.alive()
        assert b.info["attempts"] >= 3 and b.info["waited_s"] > 0
    finally:
        a.release()
        if b is not None:
            b.release()


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
        p.wait(30)
        DrillLock(drill_home.dsn, "run-next").acquire(wait_s=60).release()  # the server notices the dead client
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
    p = subprocess.run([sys.executable, "-c", code, "SIGINT"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 7 and "KeyboardInterrupt reached the program" in p.stdout, p.stderr
    assert "SIGINT received: levers released (ok)" in p.stderr
    p = subprocess.run([sys.executable, "-c", code, "SIGTERM"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == -15, (p.returncode, p.stderr)
    assert marker.read_text().split() == ["SIGINT", "SIGTERM"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_guard_stops_the_run_even_when_the_signal_was_inherited_as_ignored(tmp_path, sig):
    """cron, nohup and `&` jobs start with SIGINT ignored: the guard released the levers and the drill went on,
    then blamed a healthy worker. Released AND stopped, whatever the inherited disposition."""
    marker = tmp_path / "cleaned"
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from opsproof.levers.signals import Interrupted, SignalGuard
        signum = getattr(signal, sys.argv[1])
        assert signal.getsignal(signum) == signal.SIG_IGN, signal.getsignal(signum)
        def cleanup():
            open({str(marker)!r}, "a").write(sys.argv[1] + "\\n")
            return "ok"
        guard = SignalGuard(cleanup).install()
        try:
            os.kill(os.getpid(), signum)
            time.sleep(30)
            print("the drill went on after its levers were released", flush=True)
            sys.exit(0)
        except Interrupted as exc:
            print(f"stopped: {{exc.signame}}", flush=True)
            sys.exit(9)
    """)
    signum = getattr(signal, sig)
    p = subprocess.run([sys.executable, "-c", code, sig], capture_output=True, text=True, cwd=REPO, timeout=60,
                       preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN))
    assert p.returncode == 9 and f"stopped: {sig}" in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert f"{sig} received: levers released (ok)" in p.stderr
    assert "inherited as ignored; stopping the run anyway" in p.stderr
    assert marker.read_text().split() == [sig]


def test_policy_lease_is_seconds_and_validated(tmp_path):
    from opsproof.errors import UsageError
    from opsproof.policy import Drills, load as load_policy

    assert Drills().lease_seconds == 10
    assert load_policy(REPO / "opsproof.toml").drills.lease_seconds <= 30
    text = (REPO / "opsproof.toml").read_text()
    for bad in ("180", "2", "0", "-5"):
        f = tmp_path / f"lease-{bad}.toml"
        f.write_text(re.sub(r"(?m)^lease_seconds\s*=.*$", f"lease_seconds = {bad}", text))
        with pytest.raises(UsageError, match="drills.lease_seconds"):
            load_policy(f)
    with pytest.raises(LeverError, match="lease must be"):
        LeaseRenewer("postgresql://nowhere/x", "r", 0.5)


def test_replica_pause_lease_renewed_while_its_holder_lives_resumed_by_the_gate_after_sigkill(drill_home, healthy):
    """A drill that paused WAL replay is SIGKILLed: nobody runs `levers release --stale`, yet the plane's health
    gate resumes replay once the pause's lease has expired (audited) and reads come back to the replica."""
    lease = 4.0
    run = _run()
    code = textwrap.dedent(f"""
        import time
        from opsproof.levers.session import DrillSession
        s = DrillSession(dsn={drill_home.dsn!r}, run_id={run!r}, lease_s={lease}, replica_dsn={drill_home.replica_dsn!r})
        s.start()
        s.pause_replica("auto-heal test: holder to be SIGKILLed")
        print("paused", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "paused"
        with drill_home.conn() as conn:
            def renewals():
                return conn.execute("select count(*) from ops.audit_log where run_id = %s and "
                                    "action = 'replica.replay.renew'", (run,)).fetchone()[0]

            # while the holder lives, its heartbeat keeps the pause: past the first expiry, still paused
            pause_exp = conn.execute("select (detail->>'expires_at')::timestamptz from ops.audit_log where run_id = %s "
                                     "and action = 'replica.replay.pause'", (run,)).fetchone()[0]
            wait_for(lambda: renewals() >= 2 and conn.execute("select now() > %s + interval '1 second'",
                                                              (pause_exp,)).fetchone()[0], 60, "renewals past the first expiry")
            assert replica.is_paused(drill_home.replica_dsn), "the gate resumed a pause whose holder is alive"
            assert "replica.replay.resume" not in audit_actions(conn, run)
            wait_for(lambda: conn.execute("select target from ops.read_routing where region = 'replica'"
                                          ).fetchone()[0] == "primary", 60, "the gate to cut reads over")
            p.kill()
            p.wait(30)
            t_kill = time.monotonic()
            # nobody acts: the lease runs out, the gate resumes replay and reads come back
            wait_for(lambda: not replica.is_paused(drill_home.replica_dsn), 60, "the gate to resume replay")
            healed_after = time.monotonic() - t_kill
            row = conn.execute("select actor, reason, detail from ops.audit_log where run_id = %s and "
                               "action = 'replica.replay.resume'", (run,)).fetchone()
            assert row is not None, "the auto-resume must be audited"
            assert row[0] == "system@" and "expired" in row[1] and row[2]["healed_by"] == "plane.gate", row
            wait_for(lambda: conn.execute("select target from ops.read_routing where region = 'replica'"
                                          ).fetchone()[0] == "replica", 60, "reads to return to the replica")
            assert healed_after <= lease + 15, f"auto-heal took {healed_after:.1f}s after SIGKILL (lease {lease:g}s)"
            lease_now = replica.pause_lease(drill_home.dsn)
            assert lease_now["run_id"] == run and lease_now["resumed"] and lease_now["expired"]
    finally:
        p.kill()
        p.wait(30)
        if replica.is_paused(drill_home.replica_dsn):
            replica.resume_replay(drill_home.dsn, drill_home.replica_dsn, run, "test cleanup")
    print(f"\nreplay resumed {healed_after:.1f}s after SIGKILL (pause lease {lease:g}s)")
    rep = steady_state.wait_steady(drill_home.dsn, load_policy_flags(drill_home), replica_dsn=drill_home.replica_dsn,
                                   timeout_s=60)
    assert rep.ok, rep.problems


def test_gate_leaves_an_operators_own_pause_alone(drill_home, healthy):
    """No lever lease, no auto-heal: a pause an operator made on purpose is theirs."""
    with drill_home.conn() as conn, psycopg.connect(drill_home.replica_dsn, autocommit=True) as r:
        a0 = conn.execute("select max(id) from ops.audit_log").fetchone()[0]
        r.execute("select pg_wal_replay_pause()")
        try:
            wait_for(lambda: conn.execute("select target from ops.read_routing where region = 'replica'"
                                          ).fetchone()[0] == "primary", 60, "the gate to cut reads over")
            p0 = conn.execute("select max(id) from ops.health_probes where region = 'replica'").fetchone()[0]
            wait_for(lambda: conn.execute("select count(*) from ops.health_probes where region = 'replica' and id > %s",
                                          (p0,)).fetchone()[0] >= 3, 60, "three more probes")
            assert r.execute("select pg_is_wal_replay_paused()").fetchone()[0], "the gate resumed an operator's pause"
            assert conn.execute("select count(*) from ops.audit_log where id > %s and action = 'replica.replay.resume'",
                                (a0,)).fetchone()[0] == 0
        finally:
            r.execute("select pg_wal_replay_resume()")
    rep = steady_state.wait_steady(drill_home.dsn, load_policy_flags(drill_home), replica_dsn=drill_home.replica_dsn,
                                   timeout_s=60)
    assert rep.ok, rep.problems


def load_policy_flags(dh) -> dict:
    from opsproof.policy import load as load_policy

    return load_policy(dh.policy).flags

"""The product through a REAL PgBouncer (Debian package `pgbouncer`) in transaction mode and in session mode, in front
of the test session's embedded stack: the daily suite green through both, the gate, `opsproof cadence daily`, the
incident levers and the leases through transaction mode; the drill lock through session mode (a holder's lock
dies with its process), and drills refused in transaction mode with one line naming the session-mode URL.

Supabase serves its transaction pooler on port 6543 and its session pooler on 5432; PgBouncer 1.18 (Debian 12)
in transaction mode has no prepared-statement support, like the issue's `_pg3_0 already exists`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import psycopg
import pytest

from opsproof.levers import overrides
from opsproof.levers.drill_lock import DrillLock, DrillLockBusy, DrillLockUnsupported
from opsproof.levers.lease import LeaseRenewer
from opsproof.target.db import Target, pooler_mode, session_mode_url
from helpers import OPSPROOF
from pooler_helpers import PgBouncer, pgbouncer_binary
from suite_runner import REPO, run_suite

pytestmark = pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def bouncers(stack):
    env = stack.env()
    with PgBouncer(env["SUPABASE_DB_URL"], mode="transaction",
                   extra_dsns=[env["OPSPROOF_AUTHENTICATOR_DB_URL"]]) as tx, \
            PgBouncer(env["SUPABASE_DB_URL"], mode="session",
                      extra_dsns=[env["OPSPROOF_AUTHENTICATOR_DB_URL"]]) as sess:
        yield {"transaction": tx, "session": sess}


@pytest.fixture(scope="module")
def tx_url(bouncers) -> str:
    return bouncers["transaction"].url()


@pytest.fixture(scope="module")
def session_url(bouncers) -> str:
    return bouncers["session"].url()


def _env(url: str) -> dict:
    return {"OPSPROOF_TARGET": "env", "SUPABASE_DB_URL": url}


def _password(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["password"]


# -- the pooler is what it says, and we tell the modes apart -------------------------------------------------

def test_modes_detected_and_the_transaction_pooler_really_breaks_prepared_statements(bouncers, tx_url, session_url,
                                                                                    admin_dsn):
    assert pooler_mode(tx_url) == "transaction"
    assert pooler_mode(session_url) is None and pooler_mode(admin_dsn) is None
    assert pooler_mode("postgresql://u:p@db.example.invalid:6543/postgres", probe=False) == "transaction"
    # the failure, reproduced on this pooler: two clients, one server connection, one `_pg3_0`
    with psycopg.connect(tx_url, autocommit=True, prepare_threshold=0) as a, \
            psycopg.connect(tx_url, autocommit=True, prepare_threshold=0) as b:
        a.execute("select 1").fetchone()
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            b.execute("select 1").fetchone()


def test_target_pool_never_prepares_and_as_user_leaks_nothing(tx_url):
    target = Target(tx_url, min_size=2, max_size=2)
    try:
        for _ in range(12):  # past psycopg's default prepare_threshold (5), on both pooled clients
            assert target.value("select count(*) from ops.feature_flags") > 0
        with target.as_user({"sub": str(uuid.uuid4()), "role": "authenticated"}) as conn:
            assert conn.execute("select current_user, current_setting('request.jwt.claims', true) <> ''").fetchone() \
                == ("authenticated", True)
        # every server connection behind the pooler is back to the login role with no claims
        for _ in range(4):
            row = target.rows("select current_user as who, coalesce(current_setting('request.jwt.claims', true), '') "
                              "as claims, current_setting('role') as role")[0]
            assert row == {"who": "postgres", "claims": "", "role": "none"}, row
    finally:
        target.close()


# -- the suites and the cadence through the poolers --------------------------------------------------------

@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_daily_suite_green_through_pgbouncer(mode, bouncers, stack_home, tmp_path):
    url = bouncers[mode].url()
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", env=_env(url))
    out = proc.stdout + proc.stderr
    assert _password(url) not in out
    assert results is not None, out[-3000:]
    bad = {c["nodeid"]: (c["verdict"], c.get("message")) for c in results["controls"] if c["verdict"] != "pass"}
    assert not bad and results["green"] and proc.returncode == 0, (bad, out[-2000:])
    assert "INTERNALERROR" not in out and "prepared statement" not in out


def test_gate_through_the_transaction_pooler(tx_url, stack_home, tmp_path):
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "gate", env=_env(tx_url))
    assert results is not None, (proc.stdout + proc.stderr)[-3000:]
    bad = {c["nodeid"]: (c["verdict"], c.get("message")) for c in results["controls"] if c["verdict"] != "pass"}
    assert not bad and proc.returncode == 0, bad


def test_cadence_daily_through_the_transaction_pooler(tx_url, stack_home):
    env = dict(os.environ, OPSPROOF_HOME=str(stack_home), OPSPROOF_PROJECT_DIR=str(REPO), **_env(tx_url))
    proc = subprocess.run([OPSPROOF, "cadence", "daily", "--no-pack"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "PASS" in out and "FAIL" not in out and "prepared statement" not in out
    assert _password(tx_url) not in out


# -- levers: incident, leases, drill lock -----------------------------------------------------------------

def test_incident_levers_apply_and_resume_through_the_transaction_pooler(tx_url, admin_dsn):
    from opsproof.levers import incident
    from opsproof.levers.incident_plan import Context, IncidentRequest

    def flags() -> dict:
        with psycopg.connect(admin_dsn) as c:
            return dict(c.execute("select key, value from ops.feature_flags").fetchall())

    before = flags()
    ctx = Context(dsn=tx_url, verify=False)
    doc = incident.handle(ctx, IncidentRequest(level="low", type="soft_degrade", description="pooler test"))
    try:
        assert flags() != before, "the soft degrade changed nothing"
    finally:
        incident.resume(ctx, doc["id"])
    assert flags() == before


def test_leases_renew_through_the_transaction_pooler(tx_url, admin_dsn):
    run = f"pooler-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn) as c:  # override a flag with its own value: nothing changes for others
        key, value = c.execute("select key, value from ops.feature_flags order by key limit 1").fetchone()
    oid = overrides.take_override(tx_url, key, value, "tests", run, "pooler lease test", 5)
    renewer = LeaseRenewer(tx_url, run, 5)
    try:
        renewer.add(oid)
        for _ in range(6):  # one connection, many renewals: past the prepare threshold, across server connections
            assert renewer.renew_now() == [oid]
        assert renewer.lost == {}
    finally:
        renewer.stop()
        overrides.release(tx_url, [oid], run)
    with psycopg.connect(admin_dsn) as c:
        assert c.execute("select released_at is not null from ops.flag_overrides where id = %s", (oid,)).fetchone()[0]


def test_drills_refused_in_transaction_mode_with_one_line(tx_url, admin_dsn, stack_home, tmp_path):
    with pytest.raises(DrillLockUnsupported) as exc:
        DrillLock(tx_url, "run-tx").acquire()
    msg = str(exc.value)
    assert session_mode_url(tx_url) in msg and ":5432/" in msg and _password(tx_url) not in msg
    DrillLock(admin_dsn, "run-after").acquire().release()  # nothing was left held
    proc, _ = run_suite(stack_home, tmp_path / "ev", "-m", "drill", env=_env(tx_url))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    lines = [ln for ln in out.splitlines() if "drills need a session-mode connection" in ln]
    assert len(lines) == 1 and "postgresql://postgres:***@127.0.0.1:5432/postgres" in lines[0], out[-2000:]
    assert _password(tx_url) not in out


def test_drill_lock_through_the_session_pooler_holds_and_dies_with_its_process(session_url):
    code = textwrap.dedent(f"""
        import time
        from opsproof.levers.drill_lock import DrillLock
        held = DrillLock({session_url!r}, "run-doomed").acquire()
        assert held.alive()
        print("locked", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(DrillLockBusy, match="run run-doomed"):
            DrillLock(session_url, "run-next").acquire()
        p.kill()
        p.wait(30)
        # PgBouncer resets the dead client's server session (DISCARD ALL): the lock is free again
        nxt = DrillLock(session_url, "run-next").acquire(wait_s=30, poll_s=0.1)
        try:
            assert nxt.alive()
        finally:
            nxt.release()
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()

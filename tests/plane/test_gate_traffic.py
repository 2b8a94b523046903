"""Health gate against a real streaming replica: cutover after exactly 3 failed probes, return after resume;
and traffic through the API front across a cutover loses no acknowledged write."""

from __future__ import annotations

import json
import time

import httpx
import psycopg
import pytest
from plane_helpers import audit_max, audit_since, free_port, wait_for

from opsproof.plane.gate import Gate, probe_replica
from opsproof.plane.settings import load
from opsproof.plane.traffic import acknowledged_ids, lost_writes


@pytest.fixture
def replica(plane_db):
    with psycopg.connect(plane_db.replica, autocommit=True) as conn:
        yield conn
        if conn.execute("select pg_is_wal_replay_paused()").fetchone()[0]:
            conn.execute("select pg_wal_replay_resume()")


def _pause_with_pending_wal(db, replica) -> None:
    replica.execute("select pg_wal_replay_pause()")
    wait_for(lambda: replica.execute("select pg_is_wal_replay_paused()").fetchone()[0], what="paused")
    db.execute("insert into ops.outbox (topic) values ('gate.test')")
    wait_for(lambda: replica.execute("select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                                     ).fetchone()[0] > 0, what="pending WAL on the standby")


def _settings(plane_db, **kw):
    return load(stack_env=None, SUPABASE_DB_URL=plane_db.primary, OPSPROOF_REPLICA_DB_URL=plane_db.replica,
                ALERT_WEBHOOK_URL="", **kw)


def test_gate_cuts_over_after_exactly_3_failed_probes_and_returns(plane_db, clean, replica):
    db = clean
    s = _settings(plane_db)
    s.alert_webhook_url = None
    gate = Gate(s, db)
    a0 = audit_max(db)
    probes0 = db.execute("select count(*) from ops.health_probes where region = 'replica'").fetchone()[0]
    first = gate.step()
    assert first.probe.ok and first.target == "replica", first

    _pause_with_pending_wal(db, replica)
    r1, r2 = gate.step(), gate.step()
    assert (r1.probe.ok, r1.consecutive_failures, r1.target) == (False, 1, "replica")
    assert (r2.probe.ok, r2.consecutive_failures, r2.target, r2.changed) == (False, 2, "replica", None)
    assert db.execute("select target from ops.read_routing").fetchone()[0] == "replica", "cut over after only 2"
    r3 = gate.step()
    assert (r3.consecutive_failures, r3.target, r3.changed) == (3, "primary", "cutover")
    assert "replay paused" in r3.probe.detail
    assert db.execute("select target, consecutive_failures from ops.read_routing").fetchone() == ("primary", 3)
    r4 = gate.step()
    assert (r4.target, r4.changed) == ("primary", None)
    assert db.execute("select count(*) from ops.alerts where source = 'plane.gate'").fetchone()[0] == 1

    replica.execute("select pg_wal_replay_resume()")
    wait_for(lambda: probe_replica(plane_db.replica, s.lag_threshold_bytes).ok, what="replica caught up")
    r5 = gate.step()
    assert (r5.probe.ok, r5.target, r5.changed, r5.consecutive_failures) == (True, "replica", "return", 0)
    assert [a[0] for a in audit_since(db, a0)] == ["read_routing.cutover", "read_routing.return"]
    probes = db.execute("select ok from ops.health_probes where region = 'replica' order by id").fetchall()[probes0:]
    assert [p[0] for p in probes] == [True, False, False, False, False, True]


def test_probe_fails_when_unreachable_or_lag_over_threshold(plane_db, clean, replica):
    assert not probe_replica("postgresql://postgres@127.0.0.1:1/postgres", 1024, 1).ok
    assert "unreachable" in probe_replica("postgresql://postgres@127.0.0.1:1/postgres", 1024, 1).detail
    assert not probe_replica(plane_db.primary, 1024).ok  # the primary is not a standby
    _pause_with_pending_wal(clean, replica)
    lag = probe_replica(plane_db.replica, 10**9).lag_bytes
    replica.execute("select pg_wal_replay_resume()")
    assert lag > 0


def test_traffic_across_a_cutover_loses_no_acknowledged_write(plane_db, clean, replica, spawn, tmp_path):
    db = clean
    port = free_port()
    spawn("ingest", OPSPROOF_INGEST_PORT=port)
    api = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(api + "/healthz").status_code == 200 if _up(api) else False, what="api up")
    spawn("gate", OPSPROOF_PROBE_INTERVAL_S=0.5, OPSPROOF_PLANE_CYCLE_S=0.25)
    spawn("traffic", OPSPROOF_INGEST_URL=api, OPSPROOF_TRAFFIC_RATE=20, OPSPROOF_PLANE_CYCLE_S=0.5)
    log = tmp_path / "traffic.jsonl"
    wait_for(lambda: len(acknowledged_ids(log)) >= 10, what="traffic flowing")

    replica.execute("select pg_wal_replay_pause()")
    t_pause = time.monotonic()
    wait_for(lambda: db.execute("select target from ops.read_routing").fetchone()[0] == "primary", timeout=15,
             what="cutover")
    cutover_s = time.monotonic() - t_pause
    time.sleep(1.0)
    replica.execute("select pg_wal_replay_resume()")
    wait_for(lambda: db.execute("select target from ops.read_routing").fetchone()[0] == "replica", timeout=15,
             what="return")
    time.sleep(0.5)
    acked = acknowledged_ids(log)
    assert len(acked) >= 40
    assert lost_writes(api, log) == []
    reads = [json.loads(line) for line in log.read_text().splitlines() if '"op": "read"' in line]
    assert all(r["status"] == 200 for r in reads), [r for r in reads if r["status"] != 200][:5]
    served = {r["read_from"] for r in reads}
    assert "primary" in served and "replica" in served
    assert db.execute("select count(*) from ops.requests where source = 'plane'").fetchone()[0] >= 2 * len(acked)
    print(f"\ncutover {cutover_s:.1f}s after pause (probe 0.5s x 3); {len(acked)} writes acked, none lost; "
          f"reads served from {sorted(served)}")


def _up(url):
    try:
        httpx.get(url + "/healthz", timeout=1)
        return True
    except httpx.HTTPError:
        return False

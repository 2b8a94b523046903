"""Outbox relay (real process) and the DLQ replayer's rails (replay_batch against the real database)."""

from __future__ import annotations

import time

import httpx
import pytest
from plane_helpers import audit_max, audit_since, free_port, release_flags, set_flag, wait_for

from opsproof.plane.replayer import replay_batch

CYCLE = 0.5


def _sink(spawn):
    port = free_port()
    spawn("sink", OPSPROOF_SINK_PORT=port)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(url + "/healthz"), what="sink up")
    return url


def _ok(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_relay_publishes_in_order_and_stamps_lag(clean, spawn):
    db = clean
    sink = _sink(spawn)
    db.execute("insert into ops.outbox (topic, payload) select 'load.created', jsonb_build_object('n', g) "
               "from generate_series(1, 300) g")
    spawn("relay", OPSPROOF_PLANE_CYCLE_S=CYCLE, OPSPROOF_RELAY_URL=sink + "/outbox", OPSPROOF_RELAY_BATCH=50)
    # more rows while the relay runs
    for i in range(5):
        db.execute("insert into ops.outbox (topic, payload) select 'load.created', jsonb_build_object('late', %s::int) "
                   "from generate_series(1, 20)", (i,))
        time.sleep(0.05)
    wait_for(lambda: db.execute("select count(*) from ops.outbox where published_at is null").fetchone()[0] == 0,
             what="all published")
    items = httpx.get(sink + "/received", params={"path": "/outbox"}).json()["items"]
    ids = [it["body"]["id"] for it in items]
    assert ids == sorted(ids) and len(ids) == 400 and len(set(ids)) == 400
    rows = db.execute("select id, published_at, extract(epoch from published_at - created_at) from ops.outbox "
                      "order by id").fetchall()
    assert all(r[2] >= 0 for r in rows)
    stamps = [r[1] for r in rows]
    assert stamps == sorted(stamps), "published_at must follow id order"
    print(f"\nrelay lag: max {max(r[2] for r in rows) * 1000:.0f} ms")


def test_relay_halts_on_emergency_stop_and_when_disabled(clean, spawn):
    db = clean
    sink = _sink(spawn)
    spawn("relay", OPSPROOF_PLANE_CYCLE_S=CYCLE, OPSPROOF_RELAY_URL=sink + "/outbox")
    for key, value in (("autonomy.emergencyStop", "true"), ("outbox.relayEnabled", "false")):
        set_flag(db, key, value)
        time.sleep(2 * CYCLE)
        db.execute("insert into ops.outbox (topic) values ('halt.test')")
        time.sleep(3 * CYCLE)
        assert db.execute("select count(*) from ops.outbox where published_at is null").fetchone()[0] == 1
        release_flags(db)
        wait_for(lambda: db.execute("select count(*) from ops.outbox where published_at is null").fetchone()[0] == 0,
                 timeout=5, what="resume after release")


def _dlq(db, n: int, *, bytes_each: int = 100, payload_sql: str = "jsonb_build_object('kind', 'quote')") -> list[int]:
    return [r[0] for r in db.execute(
        f"""with t as (insert into ops.agent_tasks (kind, status, quarantined, attempts)
                       select 'quote', 'quarantined', true, 3 from generate_series(1, %s::int) returning id)
            insert into ops.dlq (task_id, payload, bytes, error)
            select id, {payload_sql}, %s::int, 'boom' from t returning id""", (n, bytes_each)).fetchall()]


def _assert_refused(db, res, a0, why: str):
    assert res.refused and why in res.reason, res
    assert db.execute("select count(*) from ops.dlq where replayed_at is not null").fetchone()[0] == 0
    assert db.execute("select count(*) from ops.agent_tasks where status <> 'quarantined'").fetchone()[0] == 0
    assert db.execute("select status, reason, items from ops.dlq_replays").fetchall() == [("refused", res.reason, res.items)]
    audit = audit_since(db, a0)
    assert [(a[0], a[1]) for a in audit] == [("dlq.replay.refused", res.reason)]


def test_replayer_refuses_51_items(clean):
    db, a0 = clean, audit_max(clean)
    _dlq(db, 51)
    _assert_refused(db, replay_batch(db, limit=51), a0, "51 items exceeds replay.batch_items=50")


def test_replayer_refuses_2mb_plus_one_byte(clean):
    db, a0 = clean, audit_max(clean)
    ids = _dlq(db, 1, bytes_each=1048576) + _dlq(db, 1, bytes_each=1048577)
    res = replay_batch(db, ids=ids)
    assert res.bytes == 2 * 1024 * 1024 + 1
    _assert_refused(db, res, a0, "2097153 bytes exceeds replay.max_bytes=2097152")


def test_replayer_measures_real_payload_size(clean):
    """bytes=0: the payload's own size counts (here exactly 2 MB + 1)."""
    db, a0 = clean, audit_max(clean)
    n = 2 * 1024 * 1024 + 1 - len('{"blob": ""}')
    ids = _dlq(db, 1, bytes_each=0, payload_sql=f"jsonb_build_object('blob', repeat('x', {n}))")
    _assert_refused(db, replay_batch(db, ids=ids), a0, "2097153 bytes")


def test_replayer_within_rails_replays_50_items_exactly_2mb(clean):
    db, a0 = clean, audit_max(clean)
    ids = _dlq(db, 49, bytes_each=41943) + _dlq(db, 1, bytes_each=2 * 1024 * 1024 - 49 * 41943)
    _dlq(db, 1)  # not in the batch
    res = replay_batch(db, ids=ids)
    assert res.bytes == 2 * 1024 * 1024
    assert res.status == "replayed" and res.items == 50 and res.failed == 0 and len(res.replayed_ids) == 50
    assert db.execute("select count(*) from ops.agent_tasks where status = 'queued' and attempts = 0 "
                      "and not quarantined").fetchone()[0] == 50
    assert db.execute("select count(*) from ops.dlq where replay_status = 'replayed'").fetchone()[0] == 50
    assert db.execute("select status, items, failed from ops.dlq_replays").fetchall() == [("replayed", 50, 0)]
    assert [a[0] for a in audit_since(db, a0)] == ["dlq.replay"]


def test_replayer_refuses_when_running_fail_rate_passes_20pct(clean):
    db, a0 = clean, audit_max(clean)
    old = _dlq(db, 10)
    db.execute("update ops.dlq set replayed_at = now() - interval '5 minutes', "
               "replay_status = case when id = any(%s) then 'failed' else 'replayed' end where id = any(%s)",
               (old[:3], old))
    _dlq(db, 2)
    res = replay_batch(db, limit=10)
    assert res.refused and "fail rate 30.0%" in res.reason
    assert db.execute("select count(*) from ops.dlq where replayed_at is null").fetchone()[0] == 2
    assert [a[0] for a in audit_since(db, a0)] == ["dlq.replay.refused"]


@pytest.mark.parametrize("key,value", [("autonomy.emergencyStop", "true"), ("dlq.replayEnabled", "false")])
def test_replayer_obeys_flags(clean, key, value):
    db = clean
    _dlq(db, 3)
    set_flag(db, key, value)
    res = replay_batch(db, limit=10)
    assert res.refused and key in res.reason
    assert db.execute("select count(*) from ops.dlq where replayed_at is null").fetchone()[0] == 3


def test_replayer_process_replays_pending_dlq_in_auto_mode(clean, spawn):
    db = clean
    _dlq(db, 7)
    spawn("replayer", OPSPROOF_PLANE_CYCLE_S=CYCLE, OPSPROOF_REPLAY_POLL_S=0.5)
    wait_for(lambda: db.execute("select count(*) from ops.dlq where replay_status = 'replayed'").fetchone()[0] == 7,
             what="auto replay")
    assert db.execute("select items, status, requested_by from ops.dlq_replays").fetchall() == [(7, "replayed", "dlq@")]

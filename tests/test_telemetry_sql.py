"""ops.telemetry_freshness and the unprobed-minute uptime of ops.slo_snapshot (migration 20261203000100), the
freshness judgement, and the seeder's top-up — against real Postgres, each in its own scratch database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from opsproof.measure import freshness
from opsproof.measure.models import TelemetryFreshness
from opsproof.policy import Telemetry
from opsproof.stack import seed as seeder


W0 = datetime(2026, 1, 10, tzinfo=timezone.utc)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
STREAMS = {"health_probes", "requests", "agent_tasks", "spans", "outbox", "dlq_replays", "dlq", "ci_events"}


def _doc(conn, sql: str, params=()) -> dict:
    value = conn.execute(sql, params).fetchone()[0]
    return value if isinstance(value, dict) else json.loads(value)


def _ts(v) -> datetime:
    return datetime.fromisoformat(str(v))


def _probe_rows(start: datetime, end: datetime, hole: tuple[datetime, datetime] | None = None):
    t = start
    while t < end:
        if not (hole and hole[0] <= t < hole[1]):
            yield (t, "primary", True)
            yield (t + S, "replica", True)
        t += timedelta(seconds=30)


@pytest.fixture(scope="module")
def hand(scratch_db):
    """Window [W0, W0 + 1 h). Probes every 30 s from W0 to W0+40m but none in [W0+10m, W0+15m); requests from
    W0+30m; one CI event before the window only; no other stream."""
    dsn = scratch_db()
    with psycopg.connect(dsn) as conn:
        for table in seeder.PARTITIONED:
            conn.execute("select ops.ensure_partitions(%s, %s::date, %s::date)", (table, "2026-01-08", "2026-01-12"))
        with conn.cursor() as cur:
            cur.executemany("insert into ops.health_probes (ts, region, ok) values (%s, %s, %s)",
                            list(_probe_rows(W0, W0 + 40 * M, (W0 + 10 * M, W0 + 15 * M))))
            # a minute where both regions failed: probed, not up
            cur.execute("update ops.health_probes set ok = false where ts >= %s and ts < %s", (W0 + 20 * M, W0 + 21 * M))
            cur.executemany("insert into ops.requests (ts, route, status, duration_ms) values (%s, '/x', 200, 10)",
                            [(W0 + 30 * M + i * 10 * S, ) for i in range(180)]          # W0+30m .. W0+59m50s
                            + [(W0 - S,), (W0 + 60 * M,)])                               # just outside: ignored
            cur.execute("insert into ops.ci_events (branch, kind, at) values ('main', 'build', %s)", (W0 - 3 * M,))
    return dsn


def test_freshness_exact(hand):
    with psycopg.connect(hand) as conn:
        doc = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (W0, W0 + 60 * M))
    assert set(doc["streams"]) == STREAMS
    assert doc["window_s"] == 3600 and doc["window_minutes"] == 60 and doc["window_hours"] == 1
    p = doc["streams"]["health_probes"]
    assert p["rows"] == 2 * (80 - 10)
    assert _ts(p["newest_at"]) == W0 + 39 * M + 31 * S and _ts(p["oldest_at"]) == W0
    assert p["newest_age_s"] == pytest.approx(20 * 60 + 29)
    # the longest stretch is the trailing one (20m29s), longer than the 5-minute hole (330 s - 1 s)
    assert p["max_gap_s"] == pytest.approx(1229) and _ts(p["max_gap_to"]) == W0 + 60 * M
    assert p["covered_minutes"] == 35 and p["coverage_pct"] == pytest.approx(round(100 * 35 / 60, 4))
    assert p["covered_hours"] == 1 and p["hour_coverage_pct"] == 100
    r = doc["streams"]["requests"]
    assert r["rows"] == 180 and r["previous_at"] is not None and _ts(r["previous_at"]) == W0 - S
    # the leading stretch: from the window's start to the first request
    assert r["max_gap_s"] == pytest.approx(1800) and _ts(r["max_gap_from"]) == W0
    assert r["newest_age_s"] == pytest.approx(10) and r["covered_minutes"] == 30


def test_freshness_inner_gap_is_found(hand):
    """Over [W0, W0+40m) the probes' longest stretch is the hole, located exactly."""
    with psycopg.connect(hand) as conn:
        doc = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (W0, W0 + 40 * M))
    p = doc["streams"]["health_probes"]
    assert p["max_gap_s"] == pytest.approx(329)
    assert _ts(p["max_gap_from"]) == W0 + 9 * M + 31 * S and _ts(p["max_gap_to"]) == W0 + 15 * M


def test_empty_stream_and_empty_window_are_never_fresh(hand):
    with psycopg.connect(hand) as conn:
        doc = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (W0, W0 + 60 * M))
        empty = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (W0 + 24 * 60 * M, W0 + 25 * 60 * M))
    ci = doc["streams"]["ci_events"]
    assert ci["rows"] == 0 and ci["newest_age_s"] is None and ci["newest_at"] is None
    assert ci["max_gap_s"] == 3600 and ci["coverage_pct"] == 0 and ci["hour_coverage_pct"] == 0
    assert _ts(ci["previous_at"]) == W0 - 3 * M
    for name, s in empty["streams"].items():
        assert s["rows"] == 0 and s["newest_age_s"] is None and s["max_gap_s"] == 3600, name
    # judged by the policy's defaults: every stream of an empty window fails, none passes
    model = TelemetryFreshness.model_validate(empty)
    pol = Telemetry()
    for stream in freshness.STREAMS:
        findings = freshness.judge(model, stream, pol.stream(stream))
        assert findings and not all(f.ok for f in findings), stream


def test_sparse_stream_judged_on_its_newest_row_before_the_window(hand):
    """ci_events (required = false): no row in [W0+1m, W0+2m) but one 5 minutes before its end: age 300 s."""
    with psycopg.connect(hand) as conn:
        doc = TelemetryFreshness.model_validate(_doc(conn, "select ops.telemetry_freshness(%s, %s)", (W0 + M, W0 + 2 * M)))
    rule = Telemetry().ci_events
    assert not rule.required
    f = {x.name: x for x in freshness.judge(doc, "ci_events", rule)}
    assert f["ci_events newest row age"].measured == pytest.approx(300) and f["ci_events newest row age"].ok
    tight = rule.model_copy(update={"max_age_s": 250.0})
    assert not all(x.ok for x in freshness.judge(doc, "ci_events", tight))


def test_window_reaching_into_the_future_ends_now(scratch_db):
    dsn = scratch_db()
    with psycopg.connect(dsn) as conn:
        now = conn.execute("select now()").fetchone()[0]
        conn.execute("select ops.ensure_partitions('health_probes', (now() - interval '1 day')::date, (now() + interval '1 day')::date)")
        conn.execute("insert into ops.health_probes (ts, region, ok) values (now() - interval '90 seconds', 'primary', true)")
        doc = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (now - timedelta(hours=1), now + timedelta(hours=1)))
        slo = _doc(conn, "select ops.slo_snapshot(%s, %s)", (now - timedelta(hours=1), now + timedelta(hours=1)))
    assert _ts(doc["window"]["end"]) == now and doc["window_minutes"] == 60
    assert doc["streams"]["health_probes"]["newest_age_s"] == pytest.approx(90)
    assert _ts(slo["window"]["end"]) == now and slo["whole_minutes"] == 60


def test_uptime_counts_unprobed_minutes_as_not_up(hand):
    with psycopg.connect(hand) as conn:
        doc = _doc(conn, "select ops.slo_snapshot(%s, %s)", (W0, W0 + 60 * M))
    # 60 whole minutes, all settled (the window is in the past): 35 probed, 1 of them down, 25 unprobed
    assert doc["window_minutes"] == 60 and doc["probe_minutes"] == 35
    assert doc["up_minutes"] == 34 and doc["down_minutes"] == 1 and doc["unprobed_minutes"] == 25
    assert doc["not_up_minutes"] == 26
    assert doc["uptime_pct"] == pytest.approx(round(100 * 34 / 60, 4))
    assert doc["probe_coverage_pct"] == pytest.approx(round(100 * 35 / 60, 4))
    assert doc["error_budget"]["uptime"]["failures"] == 26
    assert doc["probes"] == 140 and doc["requests"] == 180


def test_uptime_settle_spares_only_the_trailing_minutes(scratch_db):
    dsn = scratch_db()
    with psycopg.connect(dsn) as conn:
        now = conn.execute("select now()").fetchone()[0]
        conn.execute("select ops.ensure_partitions('health_probes', (now() - interval '1 day')::date, (now() + interval '1 day')::date)")
        with conn.cursor() as cur:  # probes for [now-10m, now-3m): minutes 0..6 probed, 7..9 not
            cur.executemany("insert into ops.health_probes (ts, region, ok) values (%s, %s, %s)",
                            list(_probe_rows(now - 10 * M, now - 3 * M)))
        frm = now - 10 * M
        settled = _doc(conn, "select ops.slo_snapshot(%s, %s, 98, 99.95, array[1, 6], 120)", (frm, now))
        strict = _doc(conn, "select ops.slo_snapshot(%s, %s, 98, 99.95, array[1, 6], 0)", (frm, now))
        late = _doc(conn, "select ops.slo_snapshot(%s, %s, 98, 99.95, array[1, 6], 300)", (frm, now))
    # settle 120 s: minutes 8 and 9 ended < 120 s ago and are unprobed -> left out; minute 7 is down
    assert settled["whole_minutes"] == 10 and settled["window_minutes"] == 8 and settled["up_minutes"] == 7
    assert settled["uptime_pct"] == pytest.approx(87.5)
    assert strict["window_minutes"] == 10 and strict["uptime_pct"] == pytest.approx(70.0)
    assert late["window_minutes"] == 7 and late["uptime_pct"] == pytest.approx(100.0)


def test_burn_rates_per_policy_window_and_null_when_empty(hand):
    with psycopg.connect(hand) as conn:
        doc = _doc(conn, "select ops.slo_snapshot(%s, %s, 98, 99.95, array[1, 2, 6], 120)", (W0, W0 + 60 * M))
        old_call = _doc(conn, "select ops.slo_snapshot(%s, %s, %s, %s)", (W0, W0 + 60 * M, 98.0, 99.95))
        empty = _doc(conn, "select ops.slo_snapshot(%s, %s)", (W0 + 3 * 60 * M, W0 + 4 * 60 * M))
        degenerate = _doc(conn, "select ops.slo_snapshot(%s, %s)", (W0, W0))
    assert set(doc["burn_rates"]) == {"1h", "2h", "6h"} and doc["burn_rates"]["1h"] == 0
    assert set(old_call["burn_rates"]) == {"1h", "6h"}
    assert empty["burn_rates"] == {"1h": None, "6h": None}
    assert empty["uptime_pct"] == 0 and empty["unprobed_minutes"] == 60   # nothing probed: nothing was up
    assert degenerate["uptime_pct"] is None and degenerate["window_minutes"] == 0


def test_grants_and_signature(hand):
    with psycopg.connect(hand) as conn:
        sigs = [r[0] for r in conn.execute(
            "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname = 'ops' and p.proname = 'slo_snapshot'").fetchall()]
        assert sigs == ["ops.slo_snapshot(timestamp with time zone,timestamp with time zone,double precision,"
                        "double precision,integer[],double precision)"]
        for fn in ("ops.telemetry_freshness(timestamptz, timestamptz)", sigs[0]):
            assert not conn.execute("select has_function_privilege('anon', %s, 'execute')", (fn,)).fetchone()[0]
            assert conn.execute("select has_function_privilege('authenticated', %s, 'execute')", (fn,)).fetchone()[0]
            assert conn.execute("select has_function_privilege('service_role', %s, 'execute')", (fn,)).fetchone()[0]
        vol, secdef, cfg = conn.execute(
            "select provolatile, prosecdef, proconfig from pg_proc where oid = 'ops.telemetry_freshness'::regproc"
        ).fetchone()
        assert vol == "s" and secdef is False and cfg == ['search_path=""']


def test_top_ups_tile_without_holes(scratch_db):
    """Many short top-ups (as before each suite run) leave no hole: probes stay 30 s apart, every minute covered."""
    dsn = scratch_db()
    start = W0 + 7 * S
    with psycopg.connect(dsn) as conn:
        seeder.ensure_partitions(conn.cursor(), start - timedelta(days=1), start + timedelta(days=1))
        t = start
        for step_s in (50, 7, 95, 61, 13, 200, 31, 3600):
            seeder.top_up(conn, t, t + step_s * S, seed=42, requests_per_day=5000, only_live=False)
            t += step_s * S
        doc = _doc(conn, "select ops.telemetry_freshness(%s, %s)", (start + M, t - 2 * M))
        future = conn.execute("select count(*) from ops.requests where ts >= %s", (t,)).fetchone()[0]
    assert future == 0, "a top-up never writes a row at or after its end"
    p, r = doc["streams"]["health_probes"], doc["streams"]["requests"]
    assert p["max_gap_s"] <= 32 and p["coverage_pct"] == 100, p
    assert r["max_gap_s"] <= 2 * 86400 / 5000 + 1 and r["coverage_pct"] == 100, r
    for name in ("agent_tasks", "spans", "outbox"):
        assert doc["streams"][name]["rows"] > 0, name


def test_top_up_leaves_a_stopped_stream_stopped(scratch_db):
    """A stream someone stopped (its newest row far behind the last seed's end) is not resurrected by a top-up."""
    dsn = scratch_db()
    start = W0 + 7 * S
    with psycopg.connect(dsn) as conn:
        seeder.top_up(conn, start - 6 * 60 * M, start, seed=42, requests_per_day=5000, only_live=False)
        conn.execute("delete from ops.health_probes where ts >= %s", (start - 60 * M,))
        counts = seeder.top_up(conn, start, start + 10 * M, seed=42, requests_per_day=5000)
        newest = conn.execute("select max(ts) from ops.health_probes").fetchone()[0]
    assert "health_probes" in counts["stopped"] and "requests" not in counts["stopped"]
    assert counts["health_probes"] == 0
    assert counts["requests"] > 0 and newest < start - 59 * M

"""The per-minute rollup (migration 20261203001100): exact counts, a bounded p95, idempotent and restartable
maintenance, late rows, and a stale or holed rollup that says so — against real Postgres, in scratch databases."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

BOUND = 2 ** (1 / 128) - 1          # the stated relative bound of a histogram quantile
M = timedelta(minutes=1)
H = timedelta(hours=1)
ROLLUP_MD5 = ("select md5(string_agg(concat_ws('|', minute, requests, errors, lat_idx, "
              "lat_cnt, probes, probes_ok, ob_events, ob_published, ob_idx, ob_cnt), ';' order by minute)) "
              "from ops.rollup_minute where minute < %s")


def _doc(conn, sql: str, params=()) -> dict:
    v = conn.execute(sql, params).fetchone()[0]
    return v if isinstance(v, dict) else json.loads(v)


def _fill(conn, w0, hours: int = 3, per_minute: int = 40, seed: int = 7) -> None:
    """Requests (lognormal durations, ~3% 5xx, a few zero durations), probes every 30 s, outbox events published
    0.1-3 s later, in [w0, w0 + hours)."""
    rnd = random.Random(seed)
    conn.execute("select ops.ensure_partitions(t, (%s::timestamptz)::date - 1, (%s::timestamptz)::date + 1) "
                 "from unnest(array['requests', 'health_probes']) t", (w0, w0 + hours * H))
    req, probes, outbox = [], [], []
    for k in range(hours * 60):
        t = w0 + k * M
        for j in range(per_minute):
            ts = t + timedelta(seconds=rnd.random() * 60)
            dur = 0.0 if rnd.random() < 0.01 else round(math.exp(rnd.gauss(5.5, 0.9)), 3)
            req.append((ts, "/x", 503 if rnd.random() < 0.03 else 200, dur))
        for s in (0, 30):
            probes.append((t + timedelta(seconds=s), "primary", True))
            probes.append((t + timedelta(seconds=s + 1), "replica", rnd.random() > 0.02))
        for j in range(3):
            c = t + timedelta(seconds=rnd.random() * 60)
            outbox.append((c, c + timedelta(seconds=0.1 + rnd.random() * 3), "t"))
    with conn.cursor() as cur:
        cur.executemany("insert into ops.requests (ts, route, status, duration_ms) values (%s, %s, %s, %s)", req)
        cur.executemany("insert into ops.health_probes (ts, region, ok) values (%s, %s, %s)", probes)
        cur.executemany("insert into ops.outbox (created_at, published_at, topic) values (%s, %s, %s)", outbox)


@pytest.fixture(scope="module")
def rolled(scratch_db):
    """3 h of traffic ending an hour before the current hour, rolled by ops.rollup_refresh()."""
    dsn = scratch_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        w0 = conn.execute("select date_trunc('hour', now()) - interval '4 hours'").fetchone()[0]
        _fill(conn, w0)
        first = _doc(conn, "select ops.rollup_refresh()")
    return dsn, w0, first


def _raw(conn, sql: str, params=()):
    """The same call with the rollup hidden (watermark cleared) inside a rolled-back transaction: raw rows only."""
    with conn.transaction(force_rollback=True):
        conn.execute("update ops.rollup_state set rolled_until = null where id")
        return _doc(conn, sql, params)


def _close(est: float, exact: float) -> bool:
    return abs(est - exact) <= BOUND * abs(exact) + 1e-9


def test_refresh_rolls_every_closed_minute(rolled):
    dsn, w0, first = rolled
    assert first["new_minutes"] >= 4 * 60 - 2 and first["behind_minutes"] == 0 and first["raw_rows"] > 0
    with psycopg.connect(dsn) as conn:
        n, zero = conn.execute("select count(*), count(*) filter (where requests = 0) from ops.rollup_minute").fetchone()
        assert n == first["new_minutes"] and zero >= 55  # the quiet last hour has rows too: zeros, not gaps
        assert conn.execute("select count(*) from ops.rollup_hour where minutes = 60").fetchone()[0] >= 3


@pytest.mark.parametrize("shift", [(0, 0), (30, -50)], ids=["aligned", "unaligned-edges"])
def test_counts_exact_and_percentiles_within_the_bound(rolled, shift):
    dsn, w0, _ = rolled
    a, b = w0 + timedelta(seconds=shift[0]), w0 + 3 * H + timedelta(seconds=shift[1])
    sql = "select ops.slo_snapshot(%s, %s, 98, 99.95, array[1, 2], 120)"
    with psycopg.connect(dsn) as conn:
        doc = _doc(conn, sql, (a, b))
        raw = _raw(conn, sql, (a, b))
        exact = conn.execute("select count(*), count(*) filter (where status < 500), percentile_cont(array[0.5, 0.95, 0.99]) "
                             "within group (order by duration_ms) from ops.requests where ts >= %s and ts < %s",
                             (a, b)).fetchone()
    assert doc["source"] == "rollup" and doc["rollup_hours"] >= 1 and doc["rollup_gaps"] == 0
    assert raw["source"] == "raw" and raw["p95_error_bound_pct"] == 0 and raw["p95_ms"] == pytest.approx(exact[2][1])
    assert doc["requests"] == raw["requests"] == exact[0]
    assert doc["success_pct"] == raw["success_pct"] == round(100 * exact[1] / exact[0], 4)
    assert doc["burn_rates"] == raw["burn_rates"] and doc["error_budget"] == raw["error_budget"]
    assert doc["uptime_pct"] == raw["uptime_pct"] and doc["probes"] == raw["probes"]
    assert doc["p95_error_bound_pct"] == pytest.approx(round(BOUND * 100, 4))
    for key, x in zip(("p50_ms", "p95_ms", "p99_ms"), exact[2]):
        assert _close(doc[key], x), (key, doc[key], x)


def test_outbox_lag_from_the_rollup(rolled):
    dsn, w0, _ = rolled
    with psycopg.connect(dsn) as conn:
        doc = _doc(conn, "select ops.outbox_lag(%s, %s)", (w0, w0 + 3 * H))
        raw = _raw(conn, "select ops.outbox_lag(%s, %s)", (w0, w0 + 3 * H))
    assert doc["source"] == "rollup" and raw["source"] == "raw"
    assert (doc["events"], doc["published"], doc["unpublished"]) == (raw["events"], raw["published"], 0) == (540, 540, 0)
    assert doc["avg_s"] == pytest.approx(raw["avg_s"]) and doc["max_s"] == pytest.approx(raw["max_s"])
    assert _close(doc["p95_s"], raw["p95_s"]) and _close(doc["p50_s"], raw["p50_s"])


def test_histogram_bound_holds_on_hard_data(scratch_db):
    """hist_quantiles vs percentile_cont over the same values: heavy tails, zeros, ties, tiny and huge values."""
    dsn = scratch_db()
    rnd = random.Random(3)
    sets = [[math.exp(rnd.gauss(3, 2)) for _ in range(2000)], [0.0] * 50 + [rnd.random() * 5 for _ in range(500)],
            [1.0] * 99 + [1e9], [rnd.paretovariate(1.1) for _ in range(3000)], [0.001 * (i + 1) for i in range(7)]]
    with psycopg.connect(dsn) as conn:
        for values in sets:
            est, exact = conn.execute(
                "select ops.hist_quantiles(array_agg(ops.latency_bucket(v)), array_agg(1::bigint), "
                "array[0.5, 0.9, 0.95, 0.99]), percentile_cont(array[0.5, 0.9, 0.95, 0.99]) within group (order by v) "
                "from unnest(%s::float8[]) v", (values,)).fetchone()
            for e, x in zip(est, exact):
                assert _close(e, x), (e, x)


def test_refresh_is_idempotent_and_catches_up_after_downtime(scratch_db):
    dsn = scratch_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        w0 = conn.execute("select date_trunc('hour', now()) - interval '3 hours'").fetchone()[0]
        _fill(conn, w0, hours=2, per_minute=10)
        conn.execute("select ops.rollup_refresh()")
        upto = (w0 + 150 * M,)   # compare the minutes that cannot change while the test runs
        before = conn.execute(ROLLUP_MD5, upto).fetchone()[0]
        again = _doc(conn, "select ops.rollup_refresh()")
        assert again["new_minutes"] <= 1 and conn.execute(ROLLUP_MD5, upto).fetchone()[0] == before
        # downtime: the watermark went back to w0 + 1 h and everything after it was lost; catch up 40 minutes a run
        conn.execute("update ops.rollup_state set rolled_until = %s where id", (w0 + H,))
        conn.execute("delete from ops.rollup_minute where minute >= %s", (w0 + H,))
        conn.execute("delete from ops.rollup_hour where hour >= %s", (w0 + H,))
        st = _doc(conn, "select ops.rollup_status(%s, now())", (w0,))
        assert st["lag_s"] >= 2 * 3600 and st["gaps"] == 0 and st["unrolled_minutes"] >= 119
        snap = _doc(conn, "select ops.slo_snapshot(%s, %s)", (w0, w0 + 2 * H))
        raw = _raw(conn, "select ops.slo_snapshot(%s, %s)", (w0, w0 + 2 * H))
        # the lag is measured at the window's end: the watermark is 1 h behind w0 + 2 h
        assert snap["source"] == "rollup+raw" and snap["rollup_lag_s"] == 3600 and snap["requests"] == raw["requests"]
        assert snap["success_pct"] == raw["success_pct"] and snap["burn_rates"] == raw["burn_rates"]
        runs = [_doc(conn, "select ops.rollup_refresh(40)")]
        while runs[-1]["behind_minutes"] > 0 and len(runs) < 8:
            runs.append(_doc(conn, "select ops.rollup_refresh(40)"))
        assert [r["new_minutes"] for r in runs[:2]] == [40, 40] and runs[0]["behind_minutes"] >= 80
        assert runs[-1]["behind_minutes"] == 0
        assert conn.execute(ROLLUP_MD5, upto).fetchone()[0] == before


def test_late_rows_are_read_raw_then_re_rolled(scratch_db):
    dsn = scratch_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        w0 = conn.execute("select date_trunc('hour', now()) - interval '3 hours'").fetchone()[0]
        _fill(conn, w0, hours=2, per_minute=10)
        conn.execute("select ops.rollup_refresh()")
        a, b = w0, w0 + 2 * H
        n0 = _doc(conn, "select ops.slo_snapshot(%s, %s)", (a, b))["requests"]
        late = w0 + 30 * M + timedelta(seconds=5)
        conn.execute("insert into ops.requests (ts, route, status, duration_ms) "
                     "select %s, '/late', 503, 5000 from generate_series(1, 20)", (late,))
        conn.execute("delete from ops.requests where ts >= %s and ts < %s", (w0 + 70 * M, w0 + 71 * M))
        gone = conn.execute("select count(*) from ops.rollup_minute where minute = %s", (w0 + 70 * M,)).fetchone()[0]
        dirty = [r[0] for r in conn.execute("select minute from ops.rollup_dirty order by 1").fetchall()]
        assert dirty == [w0 + 30 * M, w0 + 70 * M] and gone == 1
        exact = conn.execute("select count(*) from ops.requests where ts >= %s and ts < %s", (a, b)).fetchone()[0]
        snap = _doc(conn, "select ops.slo_snapshot(%s, %s)", (a, b))   # dirty minutes read raw: right at once
        assert snap["requests"] == exact != n0 and snap["rollup"]["dirty_minutes"] == 2
        assert snap["rollup_hours"] == 0  # both hours hold a dirty minute: read minute by minute
        done = _doc(conn, "select ops.rollup_refresh()")
        assert done["dirty_rerolled"] == 2
        assert conn.execute("select count(*) from ops.rollup_dirty").fetchone()[0] == 0
        after = _doc(conn, "select ops.slo_snapshot(%s, %s)", (a, b))
        assert after["requests"] == exact and after["rollup_hours"] == 2 and after["source"] == "rollup"
        # an outbox event still unpublished when rolled, published later: counted once, before and after
        c = w0 + 10 * M
        conn.execute("insert into ops.outbox (created_at, topic) values (%s, 'late')", (c,))
        conn.execute("select ops.rollup_refresh()")
        before = _doc(conn, "select ops.outbox_lag(%s, %s)", (a, b))
        conn.execute("update ops.outbox set published_at = created_at + interval '2 seconds' where topic = 'late'")
        mid = _doc(conn, "select ops.outbox_lag(%s, %s)", (a, b))
        conn.execute("select ops.rollup_refresh()")
        end = _doc(conn, "select ops.outbox_lag(%s, %s)", (a, b))
        assert before["events"] == mid["events"] == end["events"] and before["unpublished"] == 1
        assert mid["unpublished"] == end["unpublished"] == 0 and mid["published"] == end["published"]


def test_a_gap_is_reported_and_filled(scratch_db):
    dsn = scratch_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        w0 = conn.execute("select date_trunc('hour', now()) - interval '3 hours'").fetchone()[0]
        _fill(conn, w0, hours=2, per_minute=10)
        conn.execute("select ops.rollup_refresh()")
        conn.execute("delete from ops.rollup_minute where minute >= %s and minute < %s", (w0 + 20 * M, w0 + 25 * M))
        snap = _doc(conn, "select ops.slo_snapshot(%s, %s)", (w0, w0 + 2 * H))
        raw = _raw(conn, "select ops.slo_snapshot(%s, %s)", (w0, w0 + 2 * H))
        assert snap["rollup_gaps"] == 5 and snap["rollup"]["gap_minutes"][0].startswith(str(w0.date()))
        assert snap["requests"] == raw["requests"] and snap["success_pct"] == raw["success_pct"]
        fixed = _doc(conn, "select ops.rollup_refresh()")
        assert fixed["gaps_filled"] == 5
        assert _doc(conn, "select ops.rollup_status(%s, %s)", (w0, w0 + 2 * H))["gaps"] == 0


def test_concurrent_refresh_skips_and_grants(rolled):
    dsn, _, _ = rolled
    with psycopg.connect(dsn) as one, psycopg.connect(dsn) as two:
        one.execute("select ops.rollup_refresh()")          # holds the advisory lock until commit
        assert "skipped" in _doc(two, "select ops.rollup_refresh()")
        one.rollback()
        two.rollback()
        for role, fn, allowed in (("anon", "ops.rollup_refresh(integer, double precision, integer)", False),
                                  ("authenticated", "ops.rollup_refresh(integer, double precision, integer)", False),
                                  ("service_role", "ops.rollup_refresh(integer, double precision, integer)", True),
                                  ("anon", "ops.rollup_status(timestamptz, timestamptz)", False),
                                  ("authenticated", "ops.rollup_status(timestamptz, timestamptz)", True)):
            assert one.execute("select has_function_privilege(%s, %s, 'execute')", (role, fn)).fetchone()[0] is allowed
        assert not one.execute("select has_table_privilege('anon', 'ops.rollup_minute', 'select')").fetchone()[0]


def test_the_plane_gate_refreshes_and_tolerates_an_old_contract(scratch_db):
    from opsproof.plane.gate import Gate

    dsn = scratch_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        w0 = conn.execute("select date_trunc('hour', now()) - interval '2 hours'").fetchone()[0]
        _fill(conn, w0, hours=1, per_minute=5)
        gate = Gate(None, conn)   # refresh_rollup needs only the connection
        doc = gate.refresh_rollup()
        assert doc["new_minutes"] >= 119 and gate.rollup is doc
        conn.execute("drop function ops.rollup_refresh(integer, double precision, integer)")
        assert gate.refresh_rollup() is None and gate.rollup_supported is False

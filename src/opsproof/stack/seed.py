"""Deterministic seeder: N days of HEALTHY telemetry in the ops contract tables, ending at `end`.

Everything is generated server-side (`INSERT ... SELECT` over `generate_series`), so seeding 700k
requests is one statement, not 700k round trips. Randomness is a hash of (row number, seed, stream)
— `hashint8extended(n, seed * 1000 + stream)` — not a random() sequence, so a row's values do not
depend on execution order: the same seed and end give the same rows, a different seed different ones.
(Ids come from the tables' sequences; `clear()` restarts them, so a clear + seed is identical too.)

What "healthy" means here (opsproof.toml defaults, with margin):
  requests ....... ~0.5% 5xx (success ~99.5% >= 98), duration lognormal-ish, p95 ~0.4-1 s (<= 2.5 s)
  health_probes .. every 30 s per region (primary, replica); one failed probe per 9973, i.e. at most
                   one per 24 h window (uptime >= 99.98%)
  agent_tasks .... ~99.5% succeeded, ~0.2% quarantined, ~10% canary, seconds long (peak concurrency << 150)
  spans .......... one `agent.task.execute` per finished task (flow 'canary' for canary tasks)
  outbox ......... all published, lag 0.2-1.5 s
  dlq_replays .... one batch per tenant per UTC day, <= 20 items, << 2 MB, no failures; dlq rows replayed
  ci_events ...... builds and deploys on main (never 'self_heal'), some feature-branch builds
  agent_logs ..... only the last 13 days (inside the 14-day TTL with a day's margin)
  alerts ......... a few, all resolved
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import psycopg

from opsproof import clock

TENANTS = [f"00000000-0000-0000-0000-00000000000{i}" for i in (1, 2, 3, 4)]
PARTITIONED = ("requests", "health_probes", "spans", "agent_logs")
TELEMETRY = ("ops.requests", "ops.health_probes", "ops.spans", "ops.agent_logs", "ops.outbox",
             "ops.agent_tasks", "ops.dlq", "ops.dlq_replays", "ops.ci_events", "ops.alerts")

ROUTES = [("/rest/v1/shipments", "GET"), ("/rest/v1/shipments", "POST"), ("/rest/v1/loads", "GET"),
          ("/rest/v1/carriers", "GET"), ("/rest/v1/rates", "GET"), ("/rest/v1/invoices", "GET"),
          ("/rest/v1/tracking_events", "POST"), ("/rest/v1/rpc/quote", "POST"),
          ("/functions/v1/eta", "POST"), ("/rest/v1/documents", "GET")]
TASK_KINDS = ["route.optimize", "load.assign", "carrier.tender", "eta.update", "invoice.reconcile",
              "doc.extract", "rate.quote", "exception.triage"]
TOPICS = ["shipment.created", "shipment.updated", "load.assigned", "tender.sent", "invoice.issued",
          "eta.changed", "document.parsed", "tracking.event"]


# -- SQL building blocks -----------------------------------------------------------------------

def _h(n: str, stream: int) -> str:
    """A 64-bit hash of row number `n` for one random stream (seed bound as %(seed)s)."""
    return f"hashint8extended(({n})::bigint, %(seed)s::bigint * 1000 + {stream})"


def _u(h: str) -> str:
    """Uniform [0, 1) from the high 52 bits of a 64-bit hash expression."""
    return f"((({h}) >> 11) & 4503599627370495)::float8 / 4503599627370496.0"


def _bits(h: str, shift: int, mask: int) -> str:
    """Small non-negative int from bits [shift, shift + log2(mask + 1)) of a hash expression. _u uses bits 11..62,
    so picks from the low 11 bits are independent of a uniform drawn from the same hash."""
    return f"(((({h}) >> {shift}) & {mask}))::int"


def _arr(values: list[str], type_: str = "text") -> str:
    return "array[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + f"]::{type_}[]"


def _tenant(h: str, shift: int) -> str:
    return f"({_arr(TENANTS, 'uuid')})[1 + {_bits(h, shift, 3)}]"


def _hex32(h1: str, h2: str) -> str:
    return f"lpad(to_hex({h1}), 16, '0') || lpad(to_hex({h2}), 16, '0')"


SQL_REQUESTS = f"""
insert into ops.requests (ts, tenant_id, route, method, status, duration_ms, region, trace_id, source)
select %(t0)s::timestamptz + ((x.n + {_u('x.h1')}) * %(step)s::float8) * interval '1 second',
       {_tenant('x.h1', 0)},
       ({_arr([r for r, _ in ROUTES])})[1 + x.r],
       ({_arr([m for _, m in ROUTES])})[1 + x.r],
       case when x.s < 10 then (array[500, 502, 503])[1 + x.s %% 3]
            when x.s < 40 then 404
            when x.s < 50 then 422
            when x.s < 200 then 201
            else 200 end,
       round((5 + (110 + 20 * x.r) * power(x.u / (1 - x.u), 0.4025)) * 1000) / 1000,
       case when {_bits('x.h1', 2, 7)} = 0 then 'replica' else 'primary' end,
       {_hex32('x.h1', 'x.h2')},
       'app'
  from (select g.n, g.h1, g.h2,
               {_bits('g.h1', 5, 63)} %% {len(ROUTES)} as r,
               {_bits('g.h2', 0, 2047)} as s,
               least(greatest({_u('g.h2')}, 1e-6), 1 - 1e-6) as u
          from (select n, {_h('n', 1)} as h1, {_h('n', 2)} as h2
                  from generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) as n offset 0) g
        offset 0) x
"""

SQL_PROBES = f"""
insert into ops.health_probes (ts, region, ok, latency_ms, lag_bytes, detail)
select %(t0)s::timestamptz + (x.n / 2) * interval '30 seconds'
         + ((x.n %% 2) * 1.5 + {_u(_h('x.n', 14))} * 0.5) * interval '1 second',
       case when x.n %% 2 = 0 then 'primary' else 'replica' end,
       not x.fail,
       case when x.fail then null else round((1.5 + {_u('x.h')} * 8) * 1000) / 1000 end,
       case when x.n %% 2 = 1 and not x.fail then {_bits('x.h', 0, 65535)}::bigint end,
       case when x.fail then 'timeout after 2000 ms' end
  from (select n, {_h('n', 3)} as h, (n %% 9973) = (%(seed)s::bigint %% 9973) as fail
          from generate_series(0, %(count)s::bigint - 1) as n offset 0) x
"""

# Tasks, their spans and (recent) logs in one statement: spans and logs come from the inserted rows.
SQL_TASKS = f"""
with src as (
  select x.n, x.h1, x.h2, x.enq,
         x.enq + (0.05 + {_u('x.h2')} * 1.5) * interval '1 second' as started,
         (0.2 + 4 * power(x.d / (1 - x.d), 0.5)) as dur_s,
         case when {_bits('x.h1', 0, 1023)} < 2 then 'quarantined'
              when {_bits('x.h1', 0, 1023)} < 5 then 'failed'
              else 'succeeded' end as status,
         {_bits('x.h2', 0, 1023)} < 102 as canary
    from (select n, {_h('n', 4)} as h1, {_h('n', 5)} as h2,
                 least(greatest({_u(_h('n', 6))}, 1e-3), 1 - 1e-3) as d,
                 %(t0)s::timestamptz + ((n + {_u(_h('n', 13))}) * %(step)s::float8) * interval '1 second' as enq
            from generate_series(0, %(count)s::bigint - 1) as n offset 0) x
  offset 0
),
t as (
  insert into ops.agent_tasks (tenant_id, kind, payload, status, attempts, enqueued_at, started_at, finished_at,
                               quarantined, trace_id, canary, worker, error)
  select {_tenant('s.h1', 10)},
         ({_arr(TASK_KINDS)})[1 + {_bits('s.h1', 12, 7)}],
         jsonb_build_object('seq', s.n),
         s.status,
         case s.status when 'succeeded' then 1 when 'failed' then 2 else 3 end,
         s.enq, s.started, s.started + s.dur_s * interval '1 second',
         s.status = 'quarantined',
         {_hex32('s.h2', 's.h1')},
         s.canary,
         'seed-worker-' || (s.n %% 4),
         case s.status when 'failed' then 'carrier API 503 after retries'
                       when 'quarantined' then 'poison payload: schema mismatch' end
    from src s
  returning id, tenant_id, kind, status, trace_id, canary, started_at, finished_at
),
sp as (
  insert into ops.spans (trace_id, span_id, name, flow, tenant_id, task_id, canary, attributes, started_at, duration_ms)
  select t.trace_id, substr(md5(t.trace_id), 1, 16), 'agent.task.execute',
         case when t.canary then 'canary' else 'standard' end,
         t.tenant_id, t.id, t.canary,
         jsonb_build_object('task.kind', t.kind, 'task.status', t.status),
         t.started_at,
         round((extract(epoch from t.finished_at - t.started_at) * 1000)::numeric, 3)::float8
    from t
   where t.finished_at is not null
  on conflict do nothing  -- a re-seeded range (a rewound seeded_until) must not abort the whole seed
  returning 1
),
lg as (
  insert into ops.agent_logs (ts, task_id, level, message)
  select t.finished_at, t.id,
         case t.status when 'succeeded' then 'info' when 'failed' then 'error' else 'warn' end,
         format('task %%s %%s', t.kind, t.status)
    from t
   where t.finished_at >= %(logs_from)s::timestamptz
     and (t.status <> 'succeeded' or t.id %% 5 = 0)
  returning 1
)
select (select count(*) from t), (select count(*) from sp), (select count(*) from lg)
"""

SQL_OUTBOX = f"""
insert into ops.outbox (created_at, published_at, tenant_id, topic, payload, attempts)
select x.created, x.created + (0.2 + {_u(_h('x.n', 8))} * 1.3) * interval '1 second',
       {_tenant('x.h', 0)},
       ({_arr(TOPICS)})[1 + {_bits('x.h', 2, 7)}],
       jsonb_build_object('seq', x.n),
       1
  from (select n, {_h('n', 7)} as h,
               %(t0)s::timestamptz + ((n + {_u(_h('n', 7))}) * %(step)s::float8) * interval '1 second' as created
          from generate_series(0, %(count)s::bigint - 1) as n offset 0) x
"""

# One replay batch per tenant per UTC calendar day at a tenant-specific hour (so any 24 h window holds
# at most two batches of a tenant), each with the DLQ rows it replayed.
SQL_DLQ = f"""
with slots as (
  select row_number() over (order by d, i) as n, d, i,
         d + ((2 + 5 * i) * 3600 + {_u(_h('(extract(epoch from d)::bigint / 86400) * 4 + i', 9))} * 1800)
             * interval '1 second' as at
    from generate_series(date_trunc('day', %(t0)s::timestamptz at time zone 'UTC'),
                         date_trunc('day', %(end)s::timestamptz at time zone 'UTC'), interval '1 day') as dd(d0)
   cross join lateral (select dd.d0 at time zone 'UTC' as d) dday
   cross join generate_series(0, 3) as i
),
r as (
  insert into ops.dlq_replays (batch_id, tenant_id, items, bytes, failed, at, status, requested_by)
  select md5(%(seed)s::text || ':replay:' || extract(epoch from s.d)::bigint || ':' || s.i)::uuid,
         ({_arr(TENANTS, 'uuid')})[1 + s.i],
         1 + {_bits(_h('s.n', 10), 0, 1023)} %% 20,
         (1 + {_bits(_h('s.n', 10), 0, 1023)} %% 20) * (600 + {_bits(_h('s.n', 10), 10, 4095)} %% 3000),
         0, s.at, 'replayed', 'dlq@'
    from slots s
   where s.at >= %(t0)s::timestamptz and s.at < %(end)s::timestamptz
  returning batch_id, tenant_id, items, bytes, at
),
q as (
  insert into ops.dlq (tenant_id, payload, bytes, error, created_at, replayed_at, replay_status)
  select r.tenant_id, jsonb_build_object('batch', r.batch_id, 'item', k),
         (r.bytes / r.items)::int, 'downstream timeout',
         r.at - (600 + k * 37) * interval '1 second', r.at, 'replayed'
    from r cross join lateral generate_series(1, r.items) as k
  returning 1
)
select (select count(*) from r), (select count(*) from q)
"""

SQL_CI = f"""
insert into ops.ci_events (branch, kind, at, detail)
select case when n %% 6 = 5 then 'feature/eta-model' else 'main' end,
       case when n %% 6 = 3 then 'deploy' else 'build' end,
       %(t0)s::timestamptz + (n + {_u(_h('n', 11))} * 0.5) * %(step)s::float8 * interval '1 second',
       jsonb_build_object('sha', substr(md5(%(seed)s::text || ':ci:' || n), 1, 12), 'status', 'success',
                          'duration_s', 60 + {_bits(_h('n', 11), 0, 255)})
  from generate_series(0, %(count)s::bigint - 1) as n
"""

SQL_ALERTS = f"""
insert into ops.alerts (raised_at, resolved_at, severity, source, title, detail)
select x.raised, x.raised + (10 + {_bits('x.h', 0, 63)}) * interval '1 minute',
       (array['info', 'low', 'medium'])[1 + n %% 3],
       (array['outbox', 'agents', 'replica'])[1 + n %% 3],
       (array['outbox lag above 2 s for 5 min', 'agent task retries rising', 'replica lag above 1 MB'])[1 + n %% 3],
       jsonb_build_object('seeded', true)
  from (select n, {_h('n', 12)} as h,
               %(t0)s::timestamptz + n * interval '5 days' + {_u(_h('n', 12))} * interval '1 day' as raised
          from generate_series(0, %(count)s::bigint - 1) as n) x
 where x.raised + interval '2 hours' < %(end)s::timestamptz
"""


# -- API ---------------------------------------------------------------------------------------

@contextmanager
def _tx(conn: psycopg.Connection) -> Iterator[psycopg.Cursor]:
    """One transaction whether the connection is in autocommit or not (a savepoint inside a caller's one)."""
    with conn.transaction(), conn.cursor() as cur:
        yield cur


def _end(end: datetime | None) -> datetime:
    end = end or clock.now()
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return end.replace(second=0, microsecond=0)


def ensure_partitions(cur: psycopg.Cursor, start: datetime, end: datetime, ahead_days: int = 7) -> None:
    """Daily partitions from the day before `start` (session time zone) to `end` + ahead_days."""
    for table in PARTITIONED:
        cur.execute("select ops.ensure_partitions(%s, (%s::timestamptz)::date - 1, (%s::timestamptz)::date + %s::int)",
                    (table, start, end, ahead_days))


def _requests(cur, seed: int, t0: datetime, span_s: float, count: int, chunk: int = 250_000) -> int:
    step = span_s / count if count else 0.0
    done = 0
    for lo in range(0, count, chunk):  # chunks keep one statement's memory and WAL batch small
        hi = min(count, lo + chunk)
        cur.execute(SQL_REQUESTS, {"seed": seed, "t0": t0, "step": step, "lo": lo, "hi": hi})
        done += cur.rowcount
    return done


def _evenly(cur, sql: str, seed: int, t0: datetime, span_s: float, count: int) -> int:
    cur.execute(sql, {"seed": seed, "t0": t0, "step": span_s / count if count else 0.0, "count": count})
    return cur.rowcount


def seed(conn: psycopg.Connection, days: int = 35, requests_per_day: int = 20000, seed: int = 42,
         end: datetime | None = None, *, tasks_per_day: int = 2000, outbox_per_day: int = 2000,
         ci_per_day: int = 12, log_days: int = 13) -> dict:
    """Write `days` days of healthy telemetry ending at `end` (default: now, to the minute); counts per table.

    Commits when the connection is idle or in autocommit; inside a caller's open transaction it runs in a
    savepoint and the caller commits.
    """
    if days <= 0:
        return {}
    end = _end(end)
    t0 = end - timedelta(days=days)
    span_s = days * 86400.0
    tail_s = span_s - 300.0  # tasks and events stop 5 min before `end` so every one has finished by then
    counts: dict = {}
    with _tx(conn) as cur:
        cur.execute("set local synchronous_commit = off")
        ensure_partitions(cur, t0, end)
        counts["requests"] = _requests(cur, seed, t0, span_s, days * requests_per_day)
        counts["health_probes"] = _evenly(cur, SQL_PROBES, seed, t0, span_s, days * 2880 * 2)
        cur.execute(SQL_TASKS, {"seed": seed, "t0": t0, "step": tail_s / max(1, days * tasks_per_day),
                                "count": days * tasks_per_day, "logs_from": end - timedelta(days=log_days)})
        counts["agent_tasks"], counts["spans"], counts["agent_logs"] = cur.fetchone()
        counts["outbox"] = _evenly(cur, SQL_OUTBOX, seed, t0, tail_s, days * outbox_per_day)
        cur.execute(SQL_DLQ, {"seed": seed, "t0": t0, "end": end - timedelta(minutes=5)})
        counts["dlq_replays"], counts["dlq"] = cur.fetchone()
        counts["ci_events"] = _evenly(cur, SQL_CI, seed, t0, tail_s, days * ci_per_day)
        cur.execute(SQL_ALERTS, {"seed": seed, "t0": t0, "end": end, "count": max(1, days // 5)})
        counts["alerts"] = cur.rowcount
        counts["rollup"] = {"raw_rows_rolled": write_rollup(cur, t0, end)}  # a dict: not a table's row count
        for table in TELEMETRY:  # small tables: fresh planner statistics now; autovacuum analyzes the partitions
            if table.removeprefix("ops.") not in PARTITIONED:
                cur.execute(f"analyze {table}")
    counts["window"] = {"from": t0.isoformat(), "to": end.isoformat()}
    return counts


# -- top-up: [start, end) at grid-cell granularity -----------------------------------------------

TAIL_S = 300.0  # seed() stops tasks, outbox, DLQ and CI 5 min before its end; a top-up continues right there


def _cells(start: datetime, end: datetime, step: float) -> tuple[datetime, int, int]:
    """The cells k of a fixed grid (cell k = [k*step, (k+1)*step) in epoch seconds) that END in [start, end):
    consecutive top-ups tile the grid exactly (each cell belongs to the one range its end falls in), and no row
    of a cell lies at or after `end`. Returns (start of the first cell, its index, how many cells)."""
    import math

    k_lo = math.ceil(start.timestamp() / step) - 1
    k_hi = math.ceil(end.timestamp() / step) - 1
    count = max(0, k_hi - k_lo)
    return datetime.fromtimestamp(k_lo * step, tz=timezone.utc), k_lo, count


def top_up(conn: psycopg.Connection, start: datetime, end: datetime, *, seed: int = 42,
           requests_per_day: int = 20000, tasks_per_day: int = 2000, outbox_per_day: int = 2000,
           ci_per_day: int = 12, log_days: int = 13, only_live: bool = True,
           streams: tuple[str, ...] | None = None) -> dict:
    """Continue the healthy history from `start` (the last seed's end) to `end` (not truncated: a suite run a few
    seconds later finds its streams fresh). Same rates and shapes as seed(); each stream is laid on a fixed grid
    so any sequence of top-ups, however short, adds the rows one long top-up would (minus rounding at the very
    first cell). Tasks, outbox, DLQ replays and CI events stay TAIL_S behind `end`, as in seed(), so every task
    has finished by then. No alerts (seed() wrote the resolved history). With only_live, a stream whose newest row
    is far older than `start` (someone stopped it) is left stopped (counts["stopped"]). `streams` limits the top-up
    to some of TOP_UP_STREAMS (agent_tasks brings its spans and logs, dlq_replays its dlq rows). Returns counts."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    counts: dict = {"window": {"from": start.isoformat(), "to": end.isoformat()}}
    if end <= start:
        return counts
    tail = timedelta(seconds=TAIL_S)
    with _tx(conn) as cur:
        cur.execute("set local synchronous_commit = off")
        stopped = _stopped_streams(cur, start) if only_live else set()
        counts["stopped"] = sorted(stopped)
        if streams is not None:
            unknown = set(streams) - set(TOP_UP_STREAMS)
            if unknown:
                raise ValueError(f"not a seeded stream: {sorted(unknown)}")
            stopped |= set(TOP_UP_STREAMS) - set(streams)
        ensure_partitions(cur, start - tail, end)
        step = 86400.0 / requests_per_day
        t0, k, n = _cells(start, end, step)
        counts["requests"] = _requests(cur, seed + k, t0, n * step, n) if n and "requests" not in stopped else 0
        t0, k, n = _cells(start, end, 30.0)  # a probe per region every 30 s
        counts["health_probes"] = (_evenly(cur, SQL_PROBES, seed + k, t0, n * 30.0, 2 * n)
                                   if n and "health_probes" not in stopped else 0)
        step = 86400.0 / tasks_per_day
        t0, k, n = _cells(start - tail, end - tail, step)
        counts["agent_tasks"] = counts["spans"] = counts["agent_logs"] = 0
        if n and "agent_tasks" not in stopped:
            cur.execute(SQL_TASKS, {"seed": seed + k, "t0": t0, "step": step, "count": n,
                                    "logs_from": end - timedelta(days=log_days)})
            counts["agent_tasks"], counts["spans"], counts["agent_logs"] = cur.fetchone()
        step = 86400.0 / outbox_per_day
        t0, k, n = _cells(start - tail, end - tail, step)
        counts["outbox"] = _evenly(cur, SQL_OUTBOX, seed + k, t0, n * step, n) if n and "outbox" not in stopped else 0
        counts["dlq_replays"] = counts["dlq"] = 0
        if "dlq_replays" not in stopped:
            # replay slots sit at fixed times of each UTC day (jitter hashed with the base seed, as in seed())
            cur.execute(SQL_DLQ, {"seed": seed, "t0": start - tail, "end": end - tail})
            counts["dlq_replays"], counts["dlq"] = cur.fetchone()
        step = 86400.0 / ci_per_day
        t0, k, n = _cells(start - tail, end - tail, step)
        counts["ci_events"] = _evenly(cur, SQL_CI, seed + k, t0, n * step, n) if n and "ci_events" not in stopped else 0
    return counts


TOP_UP_STREAMS = ("health_probes", "requests", "agent_tasks", "outbox", "dlq_replays", "ci_events")

# stream -> (newest-row query, how far before the last seed's end a LIVE stream's newest row can be: the seeder's
# own longest natural gap, with margin)
_LIVE = {
    "health_probes": ("select max(ts) from ops.health_probes", timedelta(minutes=5)),
    "requests": ("select max(ts) from ops.requests", timedelta(minutes=10)),
    "agent_tasks": ("select max(enqueued_at) from ops.agent_tasks", timedelta(minutes=15)),
    "outbox": ("select max(created_at) from ops.outbox", timedelta(minutes=15)),
    "dlq_replays": ("select max(at) from ops.dlq_replays where requested_by = 'dlq@'", timedelta(hours=10)),
    "ci_events": ("select max(at) from ops.ci_events", timedelta(hours=4)),
}


def _stopped_streams(cur, start: datetime) -> set[str]:
    """Streams whose newest row is older than the seeder would ever leave it at `start` (the last seed's end):
    someone stopped them (a violation case, a deleted stretch). A top-up continues live streams only; it never
    resurrects a stopped one (that would paint over exactly what the freshness controls must see)."""
    out = set()
    for name, (sql, slack) in _LIVE.items():
        cur.execute(sql)
        newest = cur.fetchone()[0]
        if newest is None or newest < start - slack:
            out.add(name)
    return out


ROLLUP_TABLES = ("ops.rollup_minute", "ops.rollup_hour", "ops.rollup_dirty")


def _has_rollup(cur) -> bool:
    cur.execute("select to_regclass('ops.rollup_state') is not null")
    return bool(cur.fetchone()[0])


def write_rollup(cur, start: datetime, end: datetime) -> int | None:
    """Roll the seeded minutes [start, end) into ops.rollup_minute / rollup_hour (migration 20261203001100): one
    set-based insert ... select per day (ops.rollup_range), and move the watermark over them. Returns the raw rows
    read (None on a contract without the rollup)."""
    if not _has_rollup(cur):
        return None
    cur.execute("select ops.rollup_range(%s, %s)", (start, end))
    return int(cur.fetchone()[0] or 0)


def refresh_rollup(conn: psycopg.Connection, max_minutes: int = 100_000) -> dict | None:
    """`select ops.rollup_refresh(...)`: roll every closed minute since the watermark (and any late / missing one).
    What the embedded stack runs after seeding and after a top-up; None on a contract without the rollup."""
    with _tx(conn) as cur:
        if not _has_rollup(cur):
            return None
        cur.execute("select ops.rollup_refresh(%s)", (int(max_minutes),))
        return cur.fetchone()[0]


def clear(conn: psycopg.Connection) -> None:
    """Empty the telemetry tables (and restart their ids) for a reseed, with their rollup. Flags, budgets, accounts
    stay."""
    with _tx(conn) as cur:
        cur.execute(f"truncate {', '.join(TELEMETRY)} restart identity")
        if _has_rollup(cur):
            cur.execute(f"truncate {', '.join(ROLLUP_TABLES)}")
            cur.execute("update ops.rollup_state set rolled_from = null, rolled_until = null, last_run_at = null, "
                        "last_run = null")

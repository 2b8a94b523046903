-- opsproof ops contract: telemetry freshness, and uptime that counts an unprobed minute as not up.
--
-- A measurement over a window only means something when the telemetry it reads kept arriving. Before
-- this migration, an outage during which nothing was recorded did not lower uptime (unprobed minutes
-- vanished from the denominator) and every rate was computed over whatever rows were left. Here:
--
-- ops.telemetry_freshness(p_from, p_to): for each stream the checks read, how many rows the window
-- holds, how old the newest is, the longest stretch without a row and the share of the window covered.
--
-- ops.slo_snapshot is replaced (same outputs, plus coverage): a whole minute of the window without
-- any probe counts as NOT up, so the uptime denominator is the window's minutes (capped at now), not
-- the probed ones.
--
-- Conventions as in 20261125000400_measurements.sql: one jsonb document, STABLE, SECURITY INVOKER,
-- empty search_path, half-open windows [p_from, p_to) compared directly with the indexed column.

-- ops.dlq had no index on created_at (its measurements read pending rows by id).
create index if not exists dlq_created_at on ops.dlq (created_at);

-- Telemetry freshness --------------------------------------------------------------------------
-- Streams and the timestamp that puts a row in the window:
--   health_probes .. ts          requests ....... ts           agent_tasks .... enqueued_at
--   spans .......... started_at  outbox ......... created_at   dlq_replays .... at
--   dlq ............ created_at  ci_events ...... at (every branch)
-- (ops.dlq holds failures: its rows stopping is good news; it is reported, not meant to be judged.)
--
-- The window's effective end is least(p_to, now()): a window reaching into the future is measured up
-- to now. Minute and hour buckets are aligned on p_from (bucket k = [p_from + k, p_from + k + 1)), so a
-- window of whole minutes has only whole buckets.
--
-- Per stream:
--   rows ............... rows in [p_from, p_to)
--   oldest_at/newest_at  first and last row in the window (null when none)
--   newest_age_s ....... effective end - newest_at (null when the window holds no row)
--   previous_at ........ the newest row before p_from (null when none): lets a sparse stream be
--                        judged on "silent for how long", not only "silent in this window"
--   max_gap_s .......... the longest stretch without a row inside the window, counting the stretch
--                        from p_from to the first row and from the last row to the effective end; the
--                        whole window when the stream has no row in it. Exact for gaps of a minute or
--                        more (computed from each minute bucket's first and last row, not row by row).
--   max_gap_from/to .... where that stretch is
--   covered_minutes, coverage_pct ........ whole minute buckets of the window holding >= 1 row, and
--                                          their share of the window's whole minutes
--   covered_hours, hour_coverage_pct ..... the same with hour buckets (the last one may be partial)
-- Cost: one range scan per stream on its indexed timestamp (partitions pruned), one hash aggregate to
-- minute buckets, a window function (lag) over at most window-minutes rows per stream.
create or replace function ops.telemetry_freshness(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
with w as (
  select greatest(p_from, least(p_to, now())) as v_end
),
dims as (
  select w.v_end,
         extract(epoch from w.v_end - p_from)::double precision as window_s,
         floor(extract(epoch from w.v_end - p_from) / 60)::bigint as whole_minutes,
         ceil(extract(epoch from w.v_end - p_from) / 3600)::bigint as hours
    from w
),
names as (
  select s.stream, s.ord
    from unnest(array['health_probes', 'requests', 'agent_tasks', 'spans', 'outbox', 'dlq_replays', 'dlq',
                      'ci_events']) with ordinality as s(stream, ord)
),
b as (
  select 'health_probes'::text as stream, floor(extract(epoch from x.ts - p_from) / 60)::bigint as k,
         min(x.ts) as lo, max(x.ts) as hi, count(*) as n
    from ops.health_probes x where x.ts >= p_from and x.ts < p_to group by 2
  union all
  select 'requests', floor(extract(epoch from x.ts - p_from) / 60)::bigint, min(x.ts), max(x.ts), count(*)
    from ops.requests x where x.ts >= p_from and x.ts < p_to group by 2
  union all
  select 'agent_tasks', floor(extract(epoch from x.enqueued_at - p_from) / 60)::bigint, min(x.enqueued_at),
         max(x.enqueued_at), count(*)
    from ops.agent_tasks x where x.enqueued_at >= p_from and x.enqueued_at < p_to group by 2
  union all
  select 'spans', floor(extract(epoch from x.started_at - p_from) / 60)::bigint, min(x.started_at),
         max(x.started_at), count(*)
    from ops.spans x where x.started_at >= p_from and x.started_at < p_to group by 2
  union all
  select 'outbox', floor(extract(epoch from x.created_at - p_from) / 60)::bigint, min(x.created_at),
         max(x.created_at), count(*)
    from ops.outbox x where x.created_at >= p_from and x.created_at < p_to group by 2
  union all
  select 'dlq_replays', floor(extract(epoch from x.at - p_from) / 60)::bigint, min(x.at), max(x.at), count(*)
    from ops.dlq_replays x where x.at >= p_from and x.at < p_to group by 2
  union all
  select 'dlq', floor(extract(epoch from x.created_at - p_from) / 60)::bigint, min(x.created_at),
         max(x.created_at), count(*)
    from ops.dlq x where x.created_at >= p_from and x.created_at < p_to group by 2
  union all
  select 'ci_events', floor(extract(epoch from x.at - p_from) / 60)::bigint, min(x.at), max(x.at), count(*)
    from ops.ci_events x where x.at >= p_from and x.at < p_to group by 2
),
prev as (  -- the newest row before the window: one backward index probe per stream
  select 'health_probes'::text as stream, (select max(x.ts) from ops.health_probes x where x.ts < p_from) as at
  union all select 'requests', (select max(x.ts) from ops.requests x where x.ts < p_from)
  union all select 'agent_tasks', (select max(x.enqueued_at) from ops.agent_tasks x where x.enqueued_at < p_from)
  union all select 'spans', (select max(x.started_at) from ops.spans x where x.started_at < p_from)
  union all select 'outbox', (select max(x.created_at) from ops.outbox x where x.created_at < p_from)
  union all select 'dlq_replays', (select max(x.at) from ops.dlq_replays x where x.at < p_from)
  union all select 'dlq', (select max(x.created_at) from ops.dlq x where x.created_at < p_from)
  union all select 'ci_events', (select max(x.at) from ops.ci_events x where x.at < p_from)
),
g as (
  select b.stream, b.k, b.lo, b.hi, b.n,
         lag(b.hi) over (partition by b.stream order by b.k) as prev_hi
    from b
),
agg as (
  select s.stream, s.ord,
         coalesce(sum(g.n), 0)::bigint as n,
         min(g.lo) as oldest, max(g.hi) as newest,
         count(g.k) filter (where g.k < d.whole_minutes) as covered_minutes,
         count(distinct g.k / 60) filter (where g.k / 60 < d.hours) as covered_hours
    from names s
    cross join dims d
    left join g on g.stream = s.stream
   group by s.stream, s.ord
),
gaps as (  -- every candidate stretch without a row: inside, leading, trailing, or the whole window
  select g.stream, g.prev_hi as g_from, g.lo as g_to from g where g.prev_hi is not null
  union all
  select a.stream, p_from, coalesce(a.oldest, d.v_end) from agg a cross join dims d
  union all
  select a.stream, a.newest, d.v_end from agg a cross join dims d where a.newest is not null
),
longest as (
  select distinct on (x.stream) x.stream, x.g_from, x.g_to,
         greatest(0, extract(epoch from x.g_to - x.g_from))::double precision as gap_s
    from gaps x
   order by x.stream, x.g_to - x.g_from desc, x.g_from
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to, 'end', d.v_end),
  'window_s', d.window_s,
  'window_minutes', d.whole_minutes,
  'window_hours', d.hours,
  'streams', (
    select jsonb_object_agg(a.stream, jsonb_build_object(
             'rows', a.n,
             'oldest_at', a.oldest,
             'newest_at', a.newest,
             'newest_age_s', case when a.newest is not null
                                  then round(greatest(0, extract(epoch from d.v_end - a.newest))::numeric, 3) end,
             'previous_at', p.at,
             'max_gap_s', round(l.gap_s::numeric, 3),
             'max_gap_from', l.g_from,
             'max_gap_to', l.g_to,
             'covered_minutes', a.covered_minutes,
             'coverage_pct', case when d.whole_minutes > 0
                                  then round(100.0 * a.covered_minutes / d.whole_minutes, 4) end,
             'covered_hours', a.covered_hours,
             'hour_coverage_pct', case when d.hours > 0 then round(100.0 * a.covered_hours / d.hours, 4) end)
             order by a.ord)
      from agg a
      join longest l on l.stream = a.stream
      join prev p on p.stream = a.stream)
)
from dims d
$$;

-- SLO snapshot (replaces the 4-argument one) ------------------------------------------------------
-- As before (see 20261125000400_measurements.sql): success, latency percentiles, error budgets, burn
-- rates, dlq_depth. Changed:
--
-- uptime: over the window's WHOLE MINUTES (minute k = [p_from + k min, p_from + (k+1) min), ending by
--   least(p_to, now())). A minute is up when at least one region answered its probe ok in it; a minute
--   WITHOUT ANY PROBE IS NOT UP. Only the last p_settle_s seconds before now() are spared: a minute that
--   ended less than p_settle_s ago counts when it was probed and is left out when not (its probes may
--   still be arriving). A window in the past has no such minute. So
--     window_minutes   = whole minutes, minus unprobed minutes inside the settle period
--     uptime_pct       = up_minutes / window_minutes * 100          (null when window_minutes = 0)
--     probe_coverage_pct = probe_minutes / window_minutes * 100
--     unprobed_minutes = window_minutes - probe_minutes; down_minutes = probed minutes with no ok probe
--     error_budget.uptime counts window_minutes, failures = window_minutes - up_minutes.
--   probes / probe_ok_pct still count individual probes in [p_from, p_to).
-- burn_rates: one per entry of p_burn_hours (label '<N>h'); null when that window holds no request
--   (a null burn rate is "not measured", which the checks treat as an error).
drop function if exists ops.slo_snapshot(timestamptz, timestamptz, double precision, double precision);

create or replace function ops.slo_snapshot(
  p_from timestamptz,
  p_to timestamptz,
  p_success_target double precision default 98,
  p_uptime_target double precision default 99.95,
  p_burn_hours integer[] default array[1, 6],
  p_settle_s double precision default 120
) returns jsonb
language sql stable security invoker set search_path = '' as $$
with req as (
  select count(*) as n,
         count(*) filter (where r.status < 500) as ok,
         percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.duration_ms) as pct
    from ops.requests r
   where r.ts >= p_from and r.ts < p_to
),
dims as (
  select e.v_end,
         greatest(0, floor(extract(epoch from e.v_end - p_from) / 60))::bigint as whole_minutes,
         -- minutes k < settled ended at least p_settle_s before now (all of a window in the past): they count
         -- probed or not
         greatest(0, floor(extract(epoch from least(e.v_end, now() - make_interval(secs => greatest(p_settle_s, 0)))
                                              - p_from) / 60))::bigint as settled
    from (select greatest(p_from, least(p_to, now())) as v_end) e
),
pm as (
  select floor(extract(epoch from p.ts - p_from) / 60)::bigint as k, bool_or(p.ok) as up,
         count(*) as raw_n, count(*) filter (where p.ok) as raw_ok
    from ops.health_probes p
   where p.ts >= p_from and p.ts < p_to
   group by 1
),
probe as (
  select coalesce(sum(pm.raw_n), 0) as raw_n,
         coalesce(sum(pm.raw_ok), 0) as raw_ok,
         count(*) filter (where pm.k < d.whole_minutes) as probed,
         count(*) filter (where pm.k < d.whole_minutes and pm.up) as up,
         count(*) filter (where pm.k >= least(d.settled, d.whole_minutes) and pm.k < d.whole_minutes) as probed_unsettled,
         least(d.settled, d.whole_minutes) as settled
    from dims d left join pm on true
   group by d.settled, d.whole_minutes
),
mins as (
  select probe.*, probe.settled + probe.probed_unsettled as window_minutes from probe
),
burn as (
  select jsonb_object_agg(w.hours || 'h',
           case when b.n > 0 and p_success_target < 100
                then round(((b.n - b.ok)::numeric / b.n) / (1 - p_success_target::numeric / 100), 4)
           end order by w.hours) as doc
    from (select distinct h as hours from unnest(coalesce(p_burn_hours, array[]::integer[])) as h where h > 0) w
   cross join lateral (
     select count(*) as n, count(*) filter (where r.status < 500) as ok
       from ops.requests r
      where r.ts >= greatest(p_from, p_to - make_interval(hours => w.hours)) and r.ts < p_to
   ) b
),
budget as (
  select s.slo, s.target, s.total, s.failures,
         s.total * (1 - s.target / 100) as allowed
    from (
      select 'success' as slo, p_success_target::numeric as target, req.n::numeric as total,
             (req.n - req.ok)::numeric as failures from req
      union all
      select 'uptime', p_uptime_target::numeric, mins.window_minutes::numeric,
             (mins.window_minutes - mins.up)::numeric from mins
    ) s
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to, 'end', d.v_end),
  'requests', req.n,
  'success_pct', case when req.n > 0 then round(100.0 * req.ok / req.n, 4) end,
  'p50_ms', req.pct[1],
  'p95_ms', req.pct[2],
  'p99_ms', req.pct[3],
  'probes', mins.raw_n,
  'window_minutes', mins.window_minutes,
  'whole_minutes', d.whole_minutes,
  'settle_s', p_settle_s,
  'probe_minutes', mins.probed,
  'up_minutes', mins.up,
  'down_minutes', mins.probed - mins.up,
  'unprobed_minutes', mins.window_minutes - mins.probed,
  'not_up_minutes', mins.window_minutes - mins.up,
  'probe_coverage_pct', case when mins.window_minutes > 0
                             then round(100.0 * mins.probed / mins.window_minutes, 4) end,
  'uptime_pct', case when mins.window_minutes > 0 then round(100.0 * mins.up / mins.window_minutes, 4) end,
  'probe_ok_pct', case when mins.raw_n > 0 then round(100.0 * mins.raw_ok / mins.raw_n, 4) end,
  'dlq_depth', (select count(*) from ops.dlq q where q.replayed_at is null),
  'error_budget', (
    select jsonb_object_agg(b.slo, jsonb_build_object(
             'target_pct', b.target,
             'allowed_failures', round(b.allowed, 4),
             'failures', b.failures,
             'remaining_pct', case when b.total = 0 then null
                                   when b.allowed = 0 then case when b.failures = 0 then 100 end
                                   else round(100 * (1 - b.failures / b.allowed), 4) end))
      from budget b),
  'burn_rates', coalesce(burn.doc, '{}'::jsonb)
)
from req, mins, burn, dims d
$$;

-- Grants: the service role (opsproof, the plane) and signed-in users; not anon, not PUBLIC.
do $$
declare
  f text;
begin
  foreach f in array array[
    'ops.telemetry_freshness(timestamptz, timestamptz)',
    'ops.slo_snapshot(timestamptz, timestamptz, double precision, double precision, integer[], double precision)'
  ] loop
    execute format('revoke all on function %s from public, anon', f);
    execute format('grant execute on function %s to service_role, authenticated', f);
  end loop;
end
$$;

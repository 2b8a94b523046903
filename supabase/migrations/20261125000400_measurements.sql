-- opsproof ops contract: measurement functions.
--
-- Each function computes in the database and returns ONE small jsonb document (never rows), so a
-- client (or the hosted REST API, which caps responses at 1000 rows) never pulls a table to compute
-- a percentile. All are STABLE, SECURITY INVOKER (the caller's grants and RLS apply) and run with an
-- empty search_path (every name is schema-qualified).
--
-- Windows are half-open: [p_from, p_to). Time-series filters compare the partition key / indexed
-- column directly with the parameters, so partitions outside the window are pruned (at plan time
-- for literal windows, at executor start-up for parameterised calls).
--
-- Which timestamp puts a row "in the window":
--   requests, health_probes .... ts              outbox ........... created_at
--   agent_tasks (agent_health) . enqueued_at     dlq_replays ...... at
--   agent_tasks (trace_coverage) finished_at     ci_events ........ at
-- Depth figures (dlq_depth, depth) are the current state, not windowed.

-- Supports trace_coverage's "canary tasks finished in the window".
create index if not exists agent_tasks_finished_at on ops.agent_tasks (finished_at);

-- SLO snapshot --------------------------------------------------------------------------------
-- success: a request with status < 500 is a success (4xx are the caller's errors).
-- uptime: minutes in which at least one region answered its probe ok / probed minutes * 100 (below).
-- error_budget.<slo>: allowed_failures = total * (1 - target/100); remaining_pct =
--   100 * (1 - failures / allowed_failures) (negative when the budget is overspent, null when
--   nothing was measured).
-- burn_rates (success SLO, Google SRE workbook multi-window): for N in (1, 6) hours,
--   error ratio of the requests in [max(p_from, p_to - N h), p_to) / (1 - target/100).
--   1.0 spends the budget exactly over the SLO period; null when that window holds no requests.
create or replace function ops.slo_snapshot(
  p_from timestamptz,
  p_to timestamptz,
  p_success_target double precision default 98,
  p_uptime_target double precision default 99.95
) returns jsonb
language sql stable security invoker set search_path = '' as $$
with req as (
  select count(*) as n,
         count(*) filter (where r.status < 500) as ok,
         percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.duration_ms) as pct
    from ops.requests r
   where r.ts >= p_from and r.ts < p_to
),
-- uptime: the service is up in a minute when at least one region that can serve reads answered
-- its probe ok in that minute (a replica wobble the health gate cuts over from is not downtime;
-- both regions failing is). n/ok count probed minutes; raw_* count individual probes.
probe as (
  select count(*) as n,
         count(*) filter (where m.up) as ok,
         coalesce(sum(m.raw_n), 0) as raw_n,
         coalesce(sum(m.raw_ok), 0) as raw_ok
    from (
      select date_trunc('minute', p.ts) as minute, bool_or(p.ok) as up,
             count(*) as raw_n, count(*) filter (where p.ok) as raw_ok
        from ops.health_probes p
       where p.ts >= p_from and p.ts < p_to
       group by 1
    ) m
),
burn as (
  select jsonb_object_agg(w.label,
           case when b.n > 0 and p_success_target < 100
                then round(((b.n - b.ok)::numeric / b.n) / (1 - p_success_target::numeric / 100), 4)
           end order by w.hours) as doc
    from (values ('1h', 1), ('6h', 6)) as w(label, hours)
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
      select 'uptime', p_uptime_target::numeric, probe.n::numeric, (probe.n - probe.ok)::numeric from probe
    ) s
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to),
  'requests', req.n,
  'success_pct', case when req.n > 0 then round(100.0 * req.ok / req.n, 4) end,
  'p50_ms', req.pct[1],
  'p95_ms', req.pct[2],
  'p99_ms', req.pct[3],
  'probes', probe.raw_n,
  'probe_minutes', probe.n,
  'down_minutes', probe.n - probe.ok,
  'uptime_pct', case when probe.n > 0 then round(100.0 * probe.ok / probe.n, 4) end,
  'probe_ok_pct', case when probe.raw_n > 0 then round(100.0 * probe.raw_ok / probe.raw_n, 4) end,
  'dlq_depth', (select count(*) from ops.dlq d where d.replayed_at is null),
  'error_budget', (
    select jsonb_object_agg(b.slo, jsonb_build_object(
             'target_pct', b.target,
             'allowed_failures', round(b.allowed, 4),
             'failures', b.failures,
             'remaining_pct', case when b.total = 0 then null
                                   when b.allowed = 0 then case when b.failures = 0 then 100 end
                                   else round(100 * (1 - b.failures / b.allowed), 4) end))
      from budget b),
  'burn_rates', burn.doc
)
from req, probe, burn
$$;

-- Outbox lag ----------------------------------------------------------------------------------
-- Over events created in the window. lag = published_at - created_at for published events; an
-- unpublished event counts with its age so far, now() - created_at, in p50/p95/avg/max — so a
-- stuck relay shows up as growing lag instead of vanishing from the statistics. `unpublished` and
-- `oldest_unpublished_s` report them separately; `published_p95_s` is the p95 of published only.
create or replace function ops.outbox_lag(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
with o as (
  select o.published_at is not null as published,
         extract(epoch from coalesce(o.published_at, now()) - o.created_at)::double precision as lag_s
    from ops.outbox o
   where o.created_at >= p_from and o.created_at < p_to
)
select jsonb_build_object(
  'events', count(*),
  'published', count(*) filter (where o.published),
  'unpublished', count(*) filter (where not o.published),
  'p50_s', percentile_cont(0.5) within group (order by o.lag_s),
  'p95_s', percentile_cont(0.95) within group (order by o.lag_s),
  'avg_s', avg(o.lag_s),
  'max_s', max(o.lag_s),
  'published_p95_s', percentile_cont(0.95) within group (order by o.lag_s) filter (where o.published),
  'oldest_unpublished_s', max(o.lag_s) filter (where not o.published)
)
from o
$$;

-- Agent health --------------------------------------------------------------------------------
-- Over tasks enqueued in the window. finished = succeeded + failed + quarantined (a task with
-- status 'quarantined' or the quarantined flag counts as quarantined, not failed).
-- success_pct = succeeded / finished * 100; quarantine_pct = quarantined / finished * 100.
-- peak_concurrency: the most tasks running at one instant inside the window, by a sweep over
-- [started_at, finished_at) intervals that overlap the window (start clipped to p_from; a task
-- with no finished_at is still running). Ends sort before starts at the same instant.
create or replace function ops.agent_health(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
with t as (
  select count(*) as tasks,
         count(*) filter (where t.status in ('succeeded', 'failed', 'quarantined')) as finished,
         count(*) filter (where t.status = 'succeeded' and not t.quarantined) as succeeded,
         count(*) filter (where t.status = 'failed' and not t.quarantined) as failed,
         count(*) filter (where t.status = 'quarantined'
                            or (t.quarantined and t.status in ('succeeded', 'failed'))) as quarantined,
         count(*) filter (where t.status = 'queued') as queued,
         count(*) filter (where t.status = 'running') as running,
         count(*) filter (where t.canary) as canary_tasks
    from ops.agent_tasks t
   where t.enqueued_at >= p_from and t.enqueued_at < p_to
),
ev as (
  select greatest(t.started_at, p_from) as at, 1 as delta
    from ops.agent_tasks t
   where t.started_at < p_to and (t.finished_at is null or t.finished_at > p_from)
  union all
  select t.finished_at, -1
    from ops.agent_tasks t
   where t.started_at < p_to and t.finished_at > p_from and t.finished_at < p_to
),
sweep as (
  select sum(ev.delta) over (order by ev.at, ev.delta rows between unbounded preceding and current row) as running
    from ev
)
select jsonb_build_object(
  'tasks', t.tasks,
  'finished', t.finished,
  'succeeded', t.succeeded,
  'failed', t.failed,
  'quarantined', t.quarantined,
  'queued', t.queued,
  'running', t.running,
  'success_pct', case when t.finished > 0 then round(100.0 * t.succeeded / t.finished, 4) end,
  'quarantine_pct', case when t.finished > 0 then round(100.0 * t.quarantined / t.finished, 4) end,
  'peak_concurrency', (select coalesce(max(s.running), 0) from sweep s),
  'canary_tasks', t.canary_tasks
)
from t
$$;

-- DLQ replay health ---------------------------------------------------------------------------
-- Over replay batches in the window. replays/items/failed/max_batch_* count executed batches
-- (status 'replayed'); refused batches (stopped by a budget) are counted apart.
-- fail_pct = failed items / replayed items * 100. max_replays_per_tenant_day: the most executed
-- batches of one tenant on one UTC calendar day. depth: DLQ rows not yet replayed (now).
create or replace function ops.dlq_health(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
with r as (
  select r.tenant_id, r.items, r.bytes, r.failed, r.status, r.at
    from ops.dlq_replays r
   where r.at >= p_from and r.at < p_to
),
a as (
  select count(*) filter (where r.status = 'replayed') as replays,
         coalesce(sum(r.items) filter (where r.status = 'replayed'), 0) as items,
         coalesce(sum(r.failed) filter (where r.status = 'replayed'), 0) as failed,
         count(*) filter (where r.status = 'refused') as refused,
         max(r.items) filter (where r.status = 'replayed') as max_items,
         max(r.bytes) filter (where r.status = 'replayed') as max_bytes,
         count(distinct r.tenant_id) filter (where r.status = 'replayed') as tenants
    from r
),
-- a tenant's replays per UTC day; platform batches (tenant_id null, e.g. a drill's) are no tenant's
per_day as (
  select count(*) as n
    from r
   where r.status = 'replayed' and r.tenant_id is not null
   group by r.tenant_id, (r.at at time zone 'UTC')::date
)
select jsonb_build_object(
  'replays', a.replays,
  'items', a.items,
  'failed', a.failed,
  'fail_pct', case when a.items > 0 then round(100.0 * a.failed / a.items, 4) end,
  'refused', a.refused,
  'max_batch_items', a.max_items,
  'max_batch_bytes', a.max_bytes,
  'tenants', a.tenants,
  'max_replays_per_tenant_day', (select coalesce(max(p.n), 0) from per_day p),
  'depth', (select count(*) from ops.dlq d where d.replayed_at is null)
)
from a
$$;

-- Trace coverage ------------------------------------------------------------------------------
-- Canary tasks finished in the window, and how many have their `agent.task.execute` span
-- (ops.spans.task_id = task id). The span lookup is bounded to [enqueued_at - 1 day,
-- finished_at + 1 day] so it prunes span partitions. sample_trace_ids: up to 3 covered traces
-- (lowest task ids); missing_task_ids: up to 10 uncovered tasks.
create or replace function ops.trace_coverage(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
with c as (
  select t.id,
         (select s.trace_id
            from ops.spans s
           where s.task_id = t.id
             and s.name = 'agent.task.execute'
             and s.started_at >= t.enqueued_at - interval '1 day'
             and s.started_at <= t.finished_at + interval '1 day'
           limit 1) as span_trace
    from ops.agent_tasks t
   where t.canary and t.finished_at >= p_from and t.finished_at < p_to
)
select jsonb_build_object(
  'canary_tasks', count(*),
  'with_span', count(c.span_trace),
  'missing', count(*) - count(c.span_trace),
  'coverage_pct', case when count(*) > 0 then round(100.0 * count(c.span_trace) / count(*), 4) end,
  'sample_trace_ids', coalesce((select jsonb_agg(x.span_trace order by x.id)
                                  from (select c2.id, c2.span_trace from c c2
                                         where c2.span_trace is not null order by c2.id limit 3) x), '[]'::jsonb),
  'missing_task_ids', coalesce((select jsonb_agg(x.id order by x.id)
                                  from (select c3.id from c c3
                                         where c3.span_trace is null order by c3.id limit 10) x), '[]'::jsonb)
)
from c
$$;

-- CI health -----------------------------------------------------------------------------------
-- Events on the branch in the window (all branches when p_branch is null); a self-heal trigger is
-- an event of kind 'self_heal' (also spelled 'self-heal' / 'selfheal').
create or replace function ops.ci_health(p_from timestamptz, p_to timestamptz, p_branch text default 'main')
returns jsonb
language sql stable security invoker set search_path = '' as $$
with e as (
  select e.kind
    from ops.ci_events e
   where e.at >= p_from and e.at < p_to
     and (p_branch is null or e.branch = p_branch)
)
select jsonb_build_object(
  'branch', p_branch,
  'events', (select count(*) from e),
  'self_heal_triggers', (select count(*) from e
                          where replace(replace(lower(e.kind), '-', ''), '_', '') = 'selfheal'),
  'by_kind', coalesce((select jsonb_object_agg(k.kind, k.n order by k.kind)
                         from (select e.kind, count(*) as n from e group by e.kind) k), '{}'::jsonb)
)
$$;

-- Active alerts: a jsonb array, oldest first. ------------------------------------------------
create or replace function ops.active_alerts() returns jsonb
language sql stable security invoker set search_path = '' as $$
select coalesce(jsonb_agg(jsonb_build_object(
         'id', a.id, 'raised_at', a.raised_at, 'severity', a.severity, 'source', a.source,
         'title', a.title, 'trace_id', a.trace_id) order by a.raised_at, a.id), '[]'::jsonb)
  from ops.alerts a
 where a.resolved_at is null
$$;

-- Grants: the service role (opsproof, the plane) and signed-in users; not anon, not PUBLIC.
do $$
declare
  f text;
begin
  foreach f in array array[
    'ops.slo_snapshot(timestamptz, timestamptz, double precision, double precision)',
    'ops.outbox_lag(timestamptz, timestamptz)',
    'ops.agent_health(timestamptz, timestamptz)',
    'ops.dlq_health(timestamptz, timestamptz)',
    'ops.trace_coverage(timestamptz, timestamptz)',
    'ops.ci_health(timestamptz, timestamptz, text)',
    'ops.active_alerts()'
  ] loop
    execute format('revoke all on function %s from public, anon', f);
    execute format('grant execute on function %s to service_role, authenticated', f);
  end loop;
end
$$;

-- opsproof ops contract: per-minute rollups, so the SLO / burn-rate / outbox-lag measurements cost the same at
-- 1M and at 100M requests a day (issue 13).
--
-- Raw rows stay the source of truth. ops.rollup_minute holds, per CLOCK minute [m, m + 1 min):
--   requests, errors (status >= 500) and a latency histogram of ops.requests.duration_ms (by ts);
--   probes, probes_ok and per-region {n, ok} of ops.health_probes (by ts);
--   outbox events created in the minute, how many were published when rolled, and a histogram, sum and max of
--   the publish lag (published_at - created_at, seconds) of those published (by created_at).
-- A rolled minute has a row even when nothing happened in it (zeros), so a MISSING row below the watermark is a
-- gap, never "no traffic".
--
-- Histogram buckets (fixed, log-linear, the Prometheus native-histogram / HDR idea, schema 6):
--   bucket i holds values v with 2^(i/64) <= v < 2^((i+1)/64), i = floor(64 * log2(v)); each bucket is 1.09% wide.
--   v <= 0 goes to the zero bucket (i = -1000000, value 0); v >= 1e300 (and NaN) to the bucket of 1e300.
--   Stored sparse per minute: lat_idx int[] (ascending bucket indexes) and lat_cnt int[] (their counts).
--   A quantile is read like percentile_cont (rank q * (n - 1), interpolated between the two neighbouring ranks)
--   with each rank's value replaced by its bucket's geometric midpoint 2^((i + 0.5)/64). Every value is within a
--   factor 2^(1/128) of its bucket's midpoint and the interpolation weights are non-negative, so for non-negative
--   data the result is within +-0.5430% (2^(1/128) - 1) of percentile_cont over the same rows: the stated
--   p95_error_bound_pct (also for p50/p99). A check comparing against a maximum uses p95 * (1 + bound/100).
--
-- Maintenance: ops.rollup_refresh() (schedule it every minute; the embedded plane runs it every 20 s). It rolls
-- CLOSED minutes only (ended at least p_settle_s ago), recomputes each minute wholesale (delete + insert: running
-- it twice changes nothing, it never double-counts), advances the watermark ops.rollup_state.rolled_until, and
-- catches up after downtime p_max_minutes at a time. Rows that change after their minute was rolled (late inserts,
-- updates such as an outbox publish, deletes) are caught by statement triggers on the three raw tables, which
-- mark the minute in ops.rollup_dirty; a dirty minute is read RAW by the measurements until the next refresh
-- re-rolls it. Each refresh also re-rolls the trailing p_reroll_minutes below the watermark (rows of a
-- transaction that overlapped the previous refresh) and fills any missing minute below the watermark.
--
-- Readers: ops.rollup_plan(p_from, p_to) splits a window into segments answered by the rollup (whole, rolled,
-- clean minutes) and segments read raw (partial minutes at the window's edges, dirty or missing minutes, the
-- not-yet-rolled tail). ops.rollup_status(p_from, p_to) says how current and complete the rollup is (TEL-008).
-- ops.slo_snapshot and ops.outbox_lag are replaced (same signatures, same keys, plus source / bound / lag / gaps).

-- Tables ----------------------------------------------------------------------------------------------------

create table if not exists ops.rollup_minute (
  minute        timestamptz primary key,
  rolled_at     timestamptz not null default now(),
  requests      int not null default 0,
  errors        int not null default 0,
  lat_idx       int[],
  lat_cnt       int[],
  probes        int not null default 0,
  probes_ok     int not null default 0,
  probe_regions jsonb,
  ob_events     int not null default 0,
  ob_published  int not null default 0,
  ob_idx        int[],
  ob_cnt        int[],
  ob_lag_sum    double precision,
  ob_lag_max    double precision,
  check (minute = date_trunc('minute', minute))
);

-- Hours whose 60 minutes are all rolled, merged (a 24 h window reads 24 hour rows + at most 118 minute rows).
-- Rebuilt from rollup_minute whenever one of its minutes is rewritten; never read while one of them is dirty.
create table if not exists ops.rollup_hour (
  hour          timestamptz primary key,
  minutes       int not null,
  rolled_at     timestamptz not null default now(),
  requests      int not null default 0,
  errors        int not null default 0,
  lat_idx       int[],
  lat_cnt       int[],
  probes        int not null default 0,
  probes_ok     int not null default 0,
  ob_events     int not null default 0,
  ob_published  int not null default 0,
  ob_idx        int[],
  ob_cnt        int[],
  ob_lag_sum    double precision,
  ob_lag_max    double precision,
  check (hour = date_trunc('hour', hour))
);

create table if not exists ops.rollup_dirty (
  minute    timestamptz primary key,
  marked_at timestamptz not null default now()
);

create table if not exists ops.rollup_state (
  id            boolean primary key default true check (id),
  rolled_from   timestamptz,          -- the first minute the rollup covers (null: never rolled)
  rolled_until  timestamptz,          -- every minute before this was rolled (exclusive, minute-aligned)
  last_run_at   timestamptz,
  last_run      jsonb
);
insert into ops.rollup_state (id) values (true) on conflict do nothing;

alter table ops.rollup_minute enable row level security;
alter table ops.rollup_dirty enable row level security;
alter table ops.rollup_hour enable row level security;
alter table ops.rollup_state enable row level security;
-- Not readable through the API: RLS on and no policy, so a signed-in caller of ops.slo_snapshot sees no rollup
-- row and is answered from the raw rows its own RLS lets it read; anon has no grant at all. The owner and the
-- service role (BYPASSRLS) read and maintain them.
revoke all on ops.rollup_minute, ops.rollup_hour, ops.rollup_dirty, ops.rollup_state from public, anon, authenticated;
grant select on ops.rollup_minute, ops.rollup_hour, ops.rollup_dirty, ops.rollup_state to authenticated;

-- Buckets ---------------------------------------------------------------------------------------------------

-- latency_bucket and bucket_value carry no SET clause on purpose: a SQL function with one is never inlined, and
-- called once per raw row it would cost ~3.5 us a row (measured: 3.8 s per 1M rows instead of ~0.1 s). Their
-- bodies use only pg_catalog operators and functions, which are always resolved first whatever the search_path.
create or replace function ops.latency_bucket(v double precision) returns int
language sql immutable parallel safe as $$
  select case when v is null then null
              when v <= 0 then -1000000
              when v >= 1e300 then 63781
              else floor(64 * ln(v) / 0.6931471805599453)::int end
$$;

create or replace function ops.bucket_value(i int) returns double precision
language sql immutable parallel safe as $$
  select case when i is null then null when i <= -1000000 then 0::double precision
              else power(2::double precision, (i + 0.5) / 64.0) end
$$;

-- Quantiles of a histogram given as (bucket, count) arrays (buckets may repeat; they are summed). null when empty.
create or replace function ops.hist_quantiles(p_idx int[], p_cnt bigint[], p_q double precision[])
returns double precision[]
language sql immutable parallel safe set search_path = '' as $$
with h as (
  select b.i, sum(b.n) as n from unnest(p_idx, p_cnt) as b(i, n) where b.n > 0 group by b.i
),
c as (
  select h.i, sum(h.n) over (order by h.i) as cum from h
),
t as (select coalesce(sum(h.n), 0) as total from h),
k as (
  select q.o, q.q * (t.total - 1) as r from unnest(p_q) with ordinality as q(q, o), t where t.total > 0
)
select case when (select total from t) = 0 then null else
  (select array_agg(
            lo.v + (k.r - floor(k.r)) * (hi.v - lo.v) order by k.o)
     from k
     cross join lateral (select ops.bucket_value(c.i) as v from c where c.cum > floor(k.r) order by c.i limit 1) lo
     cross join lateral (select ops.bucket_value(c.i) as v from c where c.cum > ceil(k.r) order by c.i limit 1) hi)
end
$$;

create or replace function ops.rollup_p95_error_bound_pct() returns double precision
language sql immutable parallel safe set search_path = '' as $$
  select round(((power(2::double precision, 1 / 128.0) - 1) * 100)::numeric, 4)::double precision
$$;

-- Writing ---------------------------------------------------------------------------------------------------

-- Recompute the given minutes wholesale (each gets a row, zeros when empty) and clear them from rollup_dirty.
-- One set-based pass over [min, max + 1 min) of each raw table. Returns the raw rows read.
create or replace function ops.rollup_write(p_minutes timestamptz[]) returns bigint
language plpgsql security invoker set search_path = '' as $$
declare
  v_lo timestamptz;
  v_hi timestamptz;
  v_rows bigint;
begin
  select min(date_trunc('minute', u)), max(date_trunc('minute', u)) + interval '1 minute'
    into v_lo, v_hi from unnest(p_minutes) as u;
  if v_lo is null then
    return 0;
  end if;
  delete from ops.rollup_minute r where r.minute = any(p_minutes);
  delete from ops.rollup_dirty d where d.minute = any(p_minutes);
  delete from ops.rollup_hour h where h.hour in (select date_trunc('hour', u) from unnest(p_minutes) as u);
  with m as (
    select distinct date_trunc('minute', u) as minute from unnest(p_minutes) as u
  ),
  rb as (
    select date_trunc('minute', x.ts) as minute, ops.latency_bucket(x.duration_ms) as i,
           count(*) as n, count(*) filter (where x.status >= 500) as e
      from ops.requests x
     where x.ts >= v_lo and x.ts < v_hi
     group by 1, 2
  ),
  rq as (
    select rb.minute, sum(rb.n)::int as n, sum(rb.e)::int as e,
           array_agg(rb.i order by rb.i) as idx, array_agg(rb.n::int order by rb.i) as cnt
      from rb group by rb.minute
  ),
  pr as (
    select q.minute, sum(q.n)::int as n, sum(q.ok)::int as ok,
           jsonb_object_agg(q.region, jsonb_build_object('n', q.n, 'ok', q.ok)) as regions
      from (select date_trunc('minute', p.ts) as minute, p.region, count(*) as n, count(*) filter (where p.ok) as ok
              from ops.health_probes p
             where p.ts >= v_lo and p.ts < v_hi
             group by 1, 2) q
     group by q.minute
  ),
  obb as (
    select date_trunc('minute', o.created_at) as minute,
           ops.latency_bucket(extract(epoch from o.published_at - o.created_at)::double precision) as i,
           count(*) as n,
           sum(extract(epoch from o.published_at - o.created_at)::double precision) as s,
           max(extract(epoch from o.published_at - o.created_at)::double precision) as mx
      from ops.outbox o
     where o.created_at >= v_lo and o.created_at < v_hi
     group by 1, 2
  ),
  ob as (
    select obb.minute, sum(obb.n)::int as events,
           coalesce(sum(obb.n) filter (where obb.i is not null), 0)::int as published,
           array_agg(obb.i order by obb.i) filter (where obb.i is not null) as idx,
           array_agg(obb.n::int order by obb.i) filter (where obb.i is not null) as cnt,
           sum(obb.s) as s, max(obb.mx) as mx
      from obb group by obb.minute
  ),
  ins as (
    insert into ops.rollup_minute (minute, rolled_at, requests, errors, lat_idx, lat_cnt, probes, probes_ok,
                                   probe_regions, ob_events, ob_published, ob_idx, ob_cnt, ob_lag_sum, ob_lag_max)
    select m.minute, now(), coalesce(rq.n, 0), coalesce(rq.e, 0), rq.idx, rq.cnt, coalesce(pr.n, 0),
           coalesce(pr.ok, 0), pr.regions, coalesce(ob.events, 0), coalesce(ob.published, 0), ob.idx, ob.cnt,
           ob.s, ob.mx
      from m
      left join rq on rq.minute = m.minute
      left join pr on pr.minute = m.minute
      left join ob on ob.minute = m.minute
    returning requests + probes + ob_events as n
  )
  select coalesce(sum(ins.n), 0) into v_rows from ins;
  return v_rows;
end
$$;

-- (Re)build the hour rows of the given hours from their minute rows; an hour with fewer than 60 minute rows or
-- with a dirty minute gets none (its minutes are read one by one). Returns the hours written.
create or replace function ops.rollup_hours(p_hours timestamptz[]) returns int
language plpgsql security invoker set search_path = '' as $$
declare
  v_lo timestamptz;
  v_hi timestamptz;
  v_n int;
begin
  select min(date_trunc('hour', u)), max(date_trunc('hour', u)) + interval '1 hour'
    into v_lo, v_hi from unnest(p_hours) as u;
  if v_lo is null then
    return 0;
  end if;
  delete from ops.rollup_hour h where h.hour in (select date_trunc('hour', u) from unnest(p_hours) as u);
  with hs as (
    select distinct date_trunc('hour', u) as hour from unnest(p_hours) as u
  ),
  mm as materialized (
    select date_trunc('hour', r.minute) as hour, r.*
      from ops.rollup_minute r
     where r.minute >= v_lo and r.minute < v_hi
       and date_trunc('hour', r.minute) in (select hs.hour from hs)
       and not exists (select 1 from ops.rollup_dirty d
                        where d.minute >= date_trunc('hour', r.minute)
                          and d.minute < date_trunc('hour', r.minute) + interval '1 hour')
  ),
  tot as (
    select mm.hour, count(*)::int as minutes, sum(mm.requests)::int as requests, sum(mm.errors)::int as errors,
           sum(mm.probes)::int as probes, sum(mm.probes_ok)::int as probes_ok, sum(mm.ob_events)::int as ob_events,
           sum(mm.ob_published)::int as ob_published, sum(mm.ob_lag_sum) as ob_lag_sum, max(mm.ob_lag_max) as ob_lag_max
      from mm group by mm.hour
  ),
  lh as (
    select x.hour, array_agg(x.i order by x.i) as idx, array_agg(x.n order by x.i) as cnt
      from (select mm.hour, b.i, sum(b.n)::int as n
              from mm cross join lateral unnest(mm.lat_idx, mm.lat_cnt) as b(i, n) group by 1, 2) x
     group by x.hour
  ),
  oh as (
    select x.hour, array_agg(x.i order by x.i) as idx, array_agg(x.n order by x.i) as cnt
      from (select mm.hour, b.i, sum(b.n)::int as n
              from mm cross join lateral unnest(mm.ob_idx, mm.ob_cnt) as b(i, n) group by 1, 2) x
     group by x.hour
  ),
  ins as (
    insert into ops.rollup_hour (hour, minutes, rolled_at, requests, errors, lat_idx, lat_cnt, probes, probes_ok,
                                 ob_events, ob_published, ob_idx, ob_cnt, ob_lag_sum, ob_lag_max)
    select tot.hour, tot.minutes, now(), tot.requests, tot.errors, lh.idx, lh.cnt, tot.probes, tot.probes_ok,
           tot.ob_events, tot.ob_published, oh.idx, oh.cnt, tot.ob_lag_sum, tot.ob_lag_max
      from tot
      left join lh on lh.hour = tot.hour
      left join oh on oh.hour = tot.hour
     where tot.minutes = 60
    returning 1
  )
  select count(*) into v_n from ins;
  return v_n;
end
$$;

-- Roll the minutes [p_from, p_to) (minute-aligned inward) in chunks of a day: what the seeder calls for seeded
-- history. Moves the watermark forward over them when they are contiguous with it (or starts it). Returns rows read.
create or replace function ops.rollup_range(p_from timestamptz, p_to timestamptz) returns bigint
language plpgsql security invoker set search_path = '' as $$
declare
  v_lo timestamptz := date_trunc('minute', p_from);
  v_hi timestamptz := date_trunc('minute', p_to);
  v_at timestamptz;
  v_rows bigint := 0;
  s record;
begin
  if v_hi <= v_lo then
    return 0;
  end if;
  v_at := v_lo;
  while v_at < v_hi loop
    v_rows := v_rows + ops.rollup_write(array(
      select g from generate_series(v_at, least(v_at + interval '1 day', v_hi) - interval '1 minute',
                                    interval '1 minute') as g));
    perform ops.rollup_hours(array(
      select g from generate_series(date_trunc('hour', v_at), least(v_at + interval '1 day', v_hi) - interval '1 minute',
                                    interval '1 hour') as g));
    v_at := least(v_at + interval '1 day', v_hi);
  end loop;
  select * into s from ops.rollup_state where id for update;
  if s.rolled_until is null then
    update ops.rollup_state set rolled_from = v_lo, rolled_until = v_hi where id;
  else
    -- a range that leaves a hole before it: the hole is a gap that the next refresh fills
    update ops.rollup_state set rolled_from = least(s.rolled_from, v_lo),
                                rolled_until = greatest(s.rolled_until, v_hi) where id;
  end if;
  return v_rows;
end
$$;

-- The maintenance job. Idempotent and restartable (one transaction; a second concurrent call returns at once).
create or replace function ops.rollup_refresh(p_max_minutes int default 1440, p_settle_s double precision default 60,
                                              p_reroll_minutes int default 5)
returns jsonb
language plpgsql security invoker set search_path = '' as $$
declare
  t0 timestamptz := clock_timestamp();
  v_closed timestamptz := date_trunc('minute', now() - make_interval(secs => greatest(p_settle_s, 0)));
  v_budget int := greatest(coalesce(p_max_minutes, 1440), 1);
  s record;
  v_start timestamptz;
  v_new_to timestamptz;
  v_fix timestamptz[];
  v_pass timestamptz[];
  v_hour timestamptz;
  v_rows bigint := 0;
  v_new int := 0;
  v_dirty int := 0;
  v_gaps int := 0;
  v_doc jsonb;
begin
  if not pg_try_advisory_xact_lock(hashtext('ops.rollup_refresh')) then
    return jsonb_build_object('skipped', 'another ops.rollup_refresh is running');
  end if;
  select * into s from ops.rollup_state where id for update;
  if not found then
    insert into ops.rollup_state (id) values (true);
    select * into s from ops.rollup_state where id for update;
  end if;
  if s.rolled_until is null then  -- first run: start at the oldest raw row
    v_start := date_trunc('minute', least((select min(x.ts) from ops.requests x),
                                          (select min(p.ts) from ops.health_probes p),
                                          (select min(o.created_at) from ops.outbox o)));
    v_start := least(coalesce(v_start, v_closed), v_closed);
    update ops.rollup_state set rolled_from = v_start, rolled_until = v_start where id;
    s.rolled_from := v_start;
    s.rolled_until := v_start;
  end if;
  -- 1. dirty minutes (rows changed after rolling) and missing minutes below the watermark, oldest first
  select array_agg(x.minute order by x.minute), count(*) filter (where x.dirty), count(*) filter (where not x.dirty)
    into v_fix, v_dirty, v_gaps
    from (select y.minute, y.dirty from (
            select d.minute, true as dirty from ops.rollup_dirty d where d.minute < s.rolled_until
            union all
            select g.m, false from generate_series(greatest(s.rolled_from, s.rolled_until - interval '32 days'),
                                                   s.rolled_until - interval '1 minute',
                                                   interval '1 minute') as g(m)
             where not exists (select 1 from ops.rollup_minute r where r.minute = g.m)
          ) y order by y.minute limit v_budget) x;
  if v_fix is not null then
    -- hour by hour: scattered late rows never make one scan span days of raw rows
    for v_hour in select distinct date_trunc('hour', u) from unnest(v_fix) as u order by 1 loop
      v_rows := v_rows + ops.rollup_write(array(select u from unnest(v_fix) as u where date_trunc('hour', u) = v_hour));
    end loop;
    perform ops.rollup_hours(array(select distinct date_trunc('hour', u) from unnest(v_fix) as u));
    v_budget := greatest(v_budget - cardinality(v_fix), 0);
  end if;
  -- 2. the trailing re-roll window and the new closed minutes, in one contiguous pass
  v_new_to := least(v_closed, s.rolled_until + make_interval(mins => v_budget));
  v_new_to := greatest(v_new_to, s.rolled_until);
  v_new := (extract(epoch from v_new_to - s.rolled_until) / 60)::int;
  v_pass := array(
    select g from generate_series(greatest(s.rolled_from, s.rolled_until - make_interval(mins => greatest(p_reroll_minutes, 0))),
                                  v_new_to - interval '1 minute', interval '1 minute') as g);
  v_rows := v_rows + ops.rollup_write(v_pass);
  perform ops.rollup_hours(array(select distinct date_trunc('hour', u) from unnest(v_pass) as u));
  v_doc := jsonb_build_object(
    'rolled_from', s.rolled_from,
    'rolled_until', v_new_to,
    'new_minutes', v_new,
    'dirty_rerolled', coalesce(v_dirty, 0),
    'gaps_filled', coalesce(v_gaps, 0),
    'reroll_minutes', greatest(p_reroll_minutes, 0),
    'raw_rows', v_rows,
    'behind_minutes', greatest(0, (extract(epoch from v_closed - v_new_to) / 60)::int),
    'lag_s', round(extract(epoch from now() - v_new_to)::numeric, 3),
    'duration_ms', round((extract(epoch from clock_timestamp() - t0) * 1000)::numeric, 3));
  update ops.rollup_state set rolled_until = v_new_to, last_run_at = now(), last_run = v_doc where id;
  return v_doc;
end
$$;

-- Late rows: statement triggers mark the minutes of changed rows that are already rolled. ----------------------
create or replace function ops.rollup_mark_dirty() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_until timestamptz;
begin
  select s.rolled_until into v_until from ops.rollup_state s where s.id;
  if v_until is null then
    return null;
  end if;
  if tg_table_name = 'outbox' then
    if tg_op in ('INSERT', 'UPDATE') then
      insert into ops.rollup_dirty (minute)
      select distinct date_trunc('minute', n.created_at) from rollup_new n where n.created_at < v_until
      on conflict (minute) do nothing;
    end if;
    if tg_op in ('DELETE', 'UPDATE') then
      insert into ops.rollup_dirty (minute)
      select distinct date_trunc('minute', o.created_at) from rollup_old o where o.created_at < v_until
      on conflict (minute) do nothing;
    end if;
  else
    if tg_op in ('INSERT', 'UPDATE') then
      insert into ops.rollup_dirty (minute)
      select distinct date_trunc('minute', n.ts) from rollup_new n where n.ts < v_until
      on conflict (minute) do nothing;
    end if;
    if tg_op in ('DELETE', 'UPDATE') then
      insert into ops.rollup_dirty (minute)
      select distinct date_trunc('minute', o.ts) from rollup_old o where o.ts < v_until
      on conflict (minute) do nothing;
    end if;
  end if;
  return null;
end
$$;

do $$
declare
  t text;
begin
  foreach t in array array['requests', 'health_probes', 'outbox'] loop
    execute format('drop trigger if exists rollup_dirty_ins on ops.%I', t);
    execute format('drop trigger if exists rollup_dirty_upd on ops.%I', t);
    execute format('drop trigger if exists rollup_dirty_del on ops.%I', t);
    execute format('create trigger rollup_dirty_ins after insert on ops.%I referencing new table as rollup_new '
                   'for each statement execute function ops.rollup_mark_dirty()', t);
    execute format('create trigger rollup_dirty_upd after update on ops.%I referencing old table as rollup_old '
                   'new table as rollup_new for each statement execute function ops.rollup_mark_dirty()', t);
    execute format('create trigger rollup_dirty_del after delete on ops.%I referencing old table as rollup_old '
                   'for each statement execute function ops.rollup_mark_dirty()', t);
  end loop;
end
$$;

-- Reading ---------------------------------------------------------------------------------------------------

-- [p_from, p_to) as segments, each answered one way (kind):
--   'hour'   a whole clock hour inside the rolled range whose hour row is complete (60 minutes) and has no dirty
--            minute: one ops.rollup_hour row;
--   'minute' a whole clock minute that is rolled, present and not dirty: one ops.rollup_minute row;
--   'raw'    read raw rows: the partial first minute, dirty / missing / pre-rollup minutes, and everything from
--            the watermark (or the window's last whole minute) to p_to.
create or replace function ops.rollup_plan(p_from timestamptz, p_to timestamptz)
returns table (seg_from timestamptz, seg_to timestamptz, kind text)
language sql stable security invoker set search_path = '' set jit = off rows 200 as $$
with k as (
  select case when date_trunc('minute', p_from) = p_from then p_from
              else date_trunc('minute', p_from) + interval '1 minute' end as m_lo
),
e as (
  select k.m_lo,
         greatest(k.m_lo, least(date_trunc('minute', p_to),
                                coalesce((select s.rolled_until from ops.rollup_state s where s.id), k.m_lo))) as m_end
    from k
),
hb as (
  select e.*,
         case when date_trunc('hour', e.m_lo) = e.m_lo then e.m_lo
              else date_trunc('hour', e.m_lo) + interval '1 hour' end as h_lo
    from e
),
hrs as materialized (
  select g.h
    from hb
   cross join generate_series(hb.h_lo, date_trunc('hour', hb.m_end) - interval '1 hour', interval '1 hour') as g(h)
   where exists (select 1 from ops.rollup_hour rh where rh.hour = g.h and rh.minutes = 60)
     and not exists (select 1 from ops.rollup_dirty d where d.minute >= g.h and d.minute < g.h + interval '1 hour')
),
mk as (
  select g.m, (r.minute is not null and d.minute is null) as rolled
    from e
   cross join generate_series(e.m_lo, e.m_end - interval '1 minute', interval '1 minute') as g(m)
    left join ops.rollup_minute r on r.minute = g.m
    left join ops.rollup_dirty d on d.minute = g.m
   where not exists (select 1 from hrs where hrs.h = date_trunc('hour', g.m))
),
isl as (  -- consecutive raw minutes become one range (one index scan, not one per minute)
  select mk.m, mk.rolled,
         mk.m - (row_number() over (partition by mk.rolled order by mk.m))::int * interval '1 minute' as grp
    from mk
)
select p_from, least(e.m_lo, p_to), 'raw' from e where p_from < least(e.m_lo, p_to)
union all
select hrs.h, hrs.h + interval '1 hour', 'hour' from hrs
union all
select isl.m, isl.m + interval '1 minute', 'minute' from isl where isl.rolled
union all
select min(isl.m), max(isl.m) + interval '1 minute', 'raw' from isl where not isl.rolled group by isl.grp
union all
select e.m_end, p_to, 'raw' from e where e.m_end < p_to and e.m_end >= e.m_lo
$$;

-- How current and complete the rollup is for [p_from, p_to):
--   rolled_from/rolled_until: the watermark (null: never rolled); lag_s = how far the watermark is behind the
--   window's effective end least(p_to, now()), 0 when past it (for a window ending now: now() - rolled_until; a
--   refresh every minute with the default 60 s settle keeps it under ~180 s). Measured against the window's end,
--   not now(), so the same call over a past window gives the same document.
--   gaps: whole minutes of the window between rolled_from and rolled_until without a row (first 10 in
--   gap_minutes); dirty_minutes: minutes of the window waiting for a re-roll; oldest_dirty_age_s: how long the
--   oldest dirty minute (marked by the window's end) has waited, at the window's end;
--   unrolled_minutes: whole minutes of the window after the watermark; last_run_at / last_run (the last refresh).
create or replace function ops.rollup_status(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' set jit = off as $$
with s as (select * from ops.rollup_state st where st.id),
k as (
  select case when date_trunc('minute', p_from) = p_from then p_from
              else date_trunc('minute', p_from) + interval '1 minute' end as m_lo,
         date_trunc('minute', greatest(p_from, least(p_to, now()))) as m_hi,
         greatest(p_from, least(p_to, now())) as v_end
),
gap as (
  select g.m from k, s
   cross join generate_series(greatest(k.m_lo, s.rolled_from), least(k.m_hi, s.rolled_until) - interval '1 minute',
                              interval '1 minute') as g(m)
   where not exists (select 1 from ops.rollup_minute r where r.minute = g.m)
)
select jsonb_build_object(
  'rolled_from', s.rolled_from,
  'rolled_until', s.rolled_until,
  'lag_s', round(greatest(0, extract(epoch from k.v_end - s.rolled_until))::numeric, 3),
  'gaps', (select count(*) from gap),
  'gap_minutes', coalesce((select jsonb_agg(x.m order by x.m) from (select gap.m from gap order by gap.m limit 10) x),
                          '[]'::jsonb),
  'dirty_minutes', (select count(*) from ops.rollup_dirty d where d.minute >= k.m_lo and d.minute < k.m_hi),
  'oldest_dirty_age_s', (select round(greatest(0, extract(epoch from k.v_end - min(d.marked_at)))::numeric, 3)
                           from ops.rollup_dirty d where d.marked_at <= k.v_end),
  'window_minutes', greatest(0, (extract(epoch from k.m_hi - k.m_lo) / 60)::bigint),
  'unrolled_minutes', greatest(0, (extract(epoch from k.m_hi - greatest(k.m_lo, coalesce(s.rolled_until, k.m_lo))) / 60)::bigint)
                      + case when s.rolled_until is null then greatest(0, (extract(epoch from k.m_hi - k.m_lo) / 60)::bigint)
                             else 0 end,
  'last_run_at', s.last_run_at,
  'last_run', s.last_run,
  'buckets', 'log-linear, bucket i = [2^(i/64), 2^((i+1)/64)), value = 2^((i+0.5)/64)',
  'p95_error_bound_pct', ops.rollup_p95_error_bound_pct()
)
from s, k
$$;

-- SLO snapshot (replaces 20261203000100's; same signature and keys) ----------------------------------------
-- Requests (count, success, p50/p95/p99, burn rates) come from the rollup for every whole clock minute it answers
-- and from raw rows for the rest (ops.rollup_plan); the percentiles always come from the histogram, so they carry
-- the stated bound even where raw rows were bucketed on the fly. Uptime and probes are computed exactly as
-- before from raw ops.health_probes: that stream is fixed-rate (one probe per region per 30 s), its cost does not
-- grow with traffic, and its p_from-aligned minutes (see 20261203000100) stay unchanged.
-- Added keys:
--   source: 'rollup' (every whole minute up to the watermark came from the rollup; raw reads only for the
--           partial edges and the last few unrolled minutes, <= 300 s), 'rollup+raw' (more read raw: dirty,
--           missing or unrolled minutes), 'raw' (nothing from the rollup)
--   rollup_minutes, raw_s: whole minutes answered by the rollup, seconds of the window read raw
--   p95_error_bound_pct, p95_how, rollup_lag_s, rollup_gaps, rollup (ops.rollup_status of the window)
-- The body lives in ops.slo_snapshot_rollup with `set jit = off`: at 10M raw rows the planner's estimates for the
-- (tiny) raw segments push the query's cost over jit_above_cost, and compiling it took ~1.7 s of a 1.9 s call on
-- the benchmark machine. ops.slo_snapshot keeps its signature and its one setting (search_path) and calls it.
create or replace function ops.slo_snapshot_rollup(
  p_from timestamptz,
  p_to timestamptz,
  p_success_target double precision,
  p_uptime_target double precision,
  p_burn_hours integer[],
  p_settle_s double precision
) returns jsonb
language sql stable security invoker set search_path = '' set jit = off as $$
with pl as materialized (
  select * from ops.rollup_plan(p_from, p_to)
),
parts as (
  select coalesce(sum(extract(epoch from pl.seg_to - pl.seg_from) / 60) filter (where pl.kind <> 'raw'), 0)::bigint
           as rolled_minutes,
         count(*) filter (where pl.kind = 'hour') as rolled_hours,
         coalesce(sum(extract(epoch from pl.seg_to - pl.seg_from)) filter (where pl.kind = 'raw'), 0)::double precision
           as raw_s
    from pl
),
rr as materialized (
  select h.requests, h.errors, h.lat_idx, h.lat_cnt
    from pl join ops.rollup_hour h on h.hour = pl.seg_from
   where pl.kind = 'hour'
  union all
  select r.requests, r.errors, r.lat_idx, r.lat_cnt
    from pl join ops.rollup_minute r on r.minute = pl.seg_from
   where pl.kind = 'minute'
),
rawb as materialized (
  select ops.latency_bucket(x.duration_ms) as i, count(*) as n, count(*) filter (where x.status >= 500) as e
    from pl cross join lateral (  -- lateral: one index range scan per raw segment, never a scan of the table
           select r.duration_ms, r.status from ops.requests r where r.ts >= pl.seg_from and r.ts < pl.seg_to) x
   where pl.kind = 'raw'
   group by 1
),
hist as (
  select h.i, sum(h.n)::bigint as n from (
    select b.i, b.n::bigint as n from rr cross join lateral unnest(rr.lat_idx, rr.lat_cnt) as b(i, n)
    union all
    select rawb.i, rawb.n from rawb
  ) h group by h.i
),
req as (
  select a.n, a.n - a.e as ok,
         case when parts.rolled_minutes = 0  -- all raw: the exact percentile_cont, as before the rollup
              then (select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by x.duration_ms)
                      from pl cross join lateral (
                             select r.duration_ms from ops.requests r
                              where r.ts >= pl.seg_from and r.ts < pl.seg_to) x
                     where pl.kind = 'raw')
              else (select ops.hist_quantiles(array_agg(hist.i), array_agg(hist.n), array[0.5, 0.95, 0.99]) from hist)
         end as pct
    from parts, (select coalesce((select sum(rr.requests) from rr), 0) + coalesce((select sum(rawb.n) from rawb), 0) as n,
                 coalesce((select sum(rr.errors) from rr), 0) + coalesce((select sum(rawb.e) from rawb), 0) as e) a
),
dims as (
  select e.v_end,
         greatest(0, floor(extract(epoch from e.v_end - p_from) / 60))::bigint as whole_minutes,
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
     select coalesce(sum(c.n), 0) as n, coalesce(sum(c.ok), 0) as ok from (
       select h.requests::bigint as n, (h.requests - h.errors)::bigint as ok
         from ops.rollup_plan(greatest(p_from, p_to - make_interval(hours => w.hours)), p_to) bp
         join ops.rollup_hour h on h.hour = bp.seg_from
        where bp.kind = 'hour'
       union all
       select r.requests::bigint as n, (r.requests - r.errors)::bigint as ok
         from ops.rollup_plan(greatest(p_from, p_to - make_interval(hours => w.hours)), p_to) bp
         join ops.rollup_minute r on r.minute = bp.seg_from
        where bp.kind = 'minute'
       union all
       select count(*), count(*) filter (where x.status < 500)
         from ops.rollup_plan(greatest(p_from, p_to - make_interval(hours => w.hours)), p_to) bp
        cross join lateral (select r.status from ops.requests r
                             where r.ts >= bp.seg_from and r.ts < bp.seg_to) x
        where bp.kind = 'raw'
     ) c
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
),
st as (select ops.rollup_status(p_from, p_to) as doc)
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
  'burn_rates', coalesce(burn.doc, '{}'::jsonb),
  'source', case when parts.rolled_minutes = 0 then 'raw'
                 when parts.raw_s <= 300 then 'rollup' else 'rollup+raw' end,
  'rollup_minutes', parts.rolled_minutes,
  'rollup_hours', parts.rolled_hours,
  'raw_s', round(parts.raw_s::numeric, 3),
  'p95_error_bound_pct', case when parts.rolled_minutes = 0 then 0 else ops.rollup_p95_error_bound_pct() end,
  'p95_how', case when parts.rolled_minutes = 0 then 'percentile_cont over raw rows (exact)'
                  else 'log-linear histogram (2^(1/64) buckets, per-minute rollup + raw rows bucketed): within +-'
                       || ops.rollup_p95_error_bound_pct() || '% of percentile_cont' end,
  'rollup_lag_s', (st.doc ->> 'lag_s')::double precision,
  'rollup_gaps', (st.doc ->> 'gaps')::bigint,
  'rollup', st.doc
)
from req, mins, burn, dims d, parts, st
$$;

create or replace function ops.slo_snapshot(
  p_from timestamptz,
  p_to timestamptz,
  p_success_target double precision default 98,
  p_uptime_target double precision default 99.95,
  p_burn_hours integer[] default array[1, 6],
  p_settle_s double precision default 120
) returns jsonb
language sql stable security invoker set search_path = '' as $$
  select ops.slo_snapshot_rollup(p_from, p_to, p_success_target, p_uptime_target, p_burn_hours, p_settle_s)
$$;

-- Outbox lag (replaces 20261125000400's; same keys) ------------------------------------------------------------
-- Published events of the rolled minutes come from the rollup (count, lag histogram, sum, max); published events
-- of raw segments and EVERY unpublished event of the window (lag so far = now() - created_at) are read raw, so a
-- stuck relay still shows as growing lag. p50/p95 from the histogram (bound as above); avg and max exact.
create or replace function ops.outbox_lag_rollup(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' set jit = off as $$
with pl as materialized (
  select * from ops.rollup_plan(p_from, p_to)
),
parts as (
  select coalesce(sum(extract(epoch from pl.seg_to - pl.seg_from) / 60) filter (where pl.kind <> 'raw'), 0)::bigint
           as rolled_minutes,
         count(*) filter (where pl.kind = 'hour') as rolled_hours,
         coalesce(sum(extract(epoch from pl.seg_to - pl.seg_from)) filter (where pl.kind = 'raw'), 0)::double precision
           as raw_s
    from pl
),
rr as materialized (
  select h.ob_published, h.ob_idx, h.ob_cnt, h.ob_lag_sum, h.ob_lag_max
    from pl join ops.rollup_hour h on h.hour = pl.seg_from
   where pl.kind = 'hour' and h.ob_published > 0
  union all
  select r.ob_published, r.ob_idx, r.ob_cnt, r.ob_lag_sum, r.ob_lag_max
    from pl join ops.rollup_minute r on r.minute = pl.seg_from
   where pl.kind = 'minute' and r.ob_published > 0
),
rawp as materialized (  -- published events of the raw segments
  select extract(epoch from o.published_at - o.created_at)::double precision as lag_s
    from pl cross join lateral (select x.created_at, x.published_at from ops.outbox x
                                  where x.created_at >= pl.seg_from and x.created_at < pl.seg_to) o
   where pl.kind = 'raw' and o.published_at is not null
),
unp as materialized (  -- every unpublished event of the window
  select extract(epoch from now() - o.created_at)::double precision as lag_s
    from ops.outbox o
   where o.published_at is null and o.created_at >= p_from and o.created_at < p_to
),
hp as (
  select b.i, b.n::bigint as n from rr cross join lateral unnest(rr.ob_idx, rr.ob_cnt) as b(i, n)
  union all
  select ops.latency_bucket(rawp.lag_s), count(*) from rawp group by 1
),
ha as (
  select * from hp
  union all
  select ops.latency_bucket(unp.lag_s), count(*) from unp group by 1
),
agg as (
  select coalesce((select sum(rr.ob_published) from rr), 0) + (select count(*) from rawp) as published,
         (select count(*) from unp) as unpublished,
         coalesce((select sum(rr.ob_lag_sum) from rr), 0) + coalesce((select sum(rawp.lag_s) from rawp), 0)
           + coalesce((select sum(unp.lag_s) from unp), 0) as lag_sum,
         greatest((select max(rr.ob_lag_max) from rr), (select max(rawp.lag_s) from rawp),
                  (select max(unp.lag_s) from unp)) as lag_max,
         (select max(unp.lag_s) from unp) as oldest_unpublished,
         case when (select parts.rolled_minutes from parts) = 0  -- all raw: exact, as before the rollup
              then (select percentile_cont(array[0.5, 0.95]) within group (order by x.lag_s)
                      from (select rawp.lag_s from rawp union all select unp.lag_s from unp) x)
              else (select ops.hist_quantiles(array_agg(ha.i), array_agg(ha.n), array[0.5, 0.95]) from ha) end as pct,
         case when (select parts.rolled_minutes from parts) = 0
              then (select array[percentile_cont(0.95) within group (order by rawp.lag_s)] from rawp)
              else (select ops.hist_quantiles(array_agg(hp.i), array_agg(hp.n), array[0.95]) from hp) end as ppct
)
select jsonb_build_object(
  'events', agg.published + agg.unpublished,
  'published', agg.published,
  'unpublished', agg.unpublished,
  'p50_s', agg.pct[1],
  'p95_s', agg.pct[2],
  'avg_s', case when agg.published + agg.unpublished > 0 then agg.lag_sum / (agg.published + agg.unpublished) end,
  'max_s', agg.lag_max,
  'published_p95_s', agg.ppct[1],
  'oldest_unpublished_s', agg.oldest_unpublished,
  'source', case when parts.rolled_minutes = 0 then 'raw'
                 when parts.raw_s <= 300 then 'rollup' else 'rollup+raw' end,
  'rollup_minutes', parts.rolled_minutes,
  'rollup_hours', parts.rolled_hours,
  'raw_s', round(parts.raw_s::numeric, 3),
  'p95_error_bound_pct', case when parts.rolled_minutes = 0 then 0 else ops.rollup_p95_error_bound_pct() end
)
from agg, parts
$$;

create or replace function ops.outbox_lag(p_from timestamptz, p_to timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
  select ops.outbox_lag_rollup(p_from, p_to)
$$;

-- Grants ----------------------------------------------------------------------------------------------------
-- Readers: the service role and signed-in users, as the other measurements (the tables behind them are not
-- granted to authenticated, so only the service role gets a rollup-backed answer). Maintenance and triggers:
-- nobody but the owner and the service role.
do $$
declare
  f text;
begin
  foreach f in array array[
    'ops.slo_snapshot(timestamptz, timestamptz, double precision, double precision, integer[], double precision)',
    'ops.outbox_lag(timestamptz, timestamptz)',
    'ops.slo_snapshot_rollup(timestamptz, timestamptz, double precision, double precision, integer[], double precision)',
    'ops.outbox_lag_rollup(timestamptz, timestamptz)',
    'ops.rollup_status(timestamptz, timestamptz)',
    'ops.rollup_plan(timestamptz, timestamptz)',
    'ops.latency_bucket(double precision)',
    'ops.bucket_value(integer)',
    'ops.hist_quantiles(integer[], bigint[], double precision[])',
    'ops.rollup_p95_error_bound_pct()'
  ] loop
    execute format('revoke all on function %s from public, anon', f);
    execute format('grant execute on function %s to service_role, authenticated', f);
  end loop;
  foreach f in array array[
    'ops.rollup_refresh(integer, double precision, integer)',
    'ops.rollup_write(timestamptz[])',
    'ops.rollup_hours(timestamptz[])',
    'ops.rollup_range(timestamptz, timestamptz)',
    'ops.rollup_mark_dirty()'
  ] loop
    execute format('revoke all on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end
$$;
grant select, insert, update, delete on ops.rollup_minute, ops.rollup_hour, ops.rollup_dirty, ops.rollup_state to service_role;

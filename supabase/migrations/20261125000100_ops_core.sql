-- opsproof ops contract: core tables in schema `ops`.
-- What a user's own services write and what opsproof reads. See docs/contract.md.
-- Applies unchanged to hosted Supabase with `supabase db push`.

create schema if not exists ops;
grant usage on schema ops to anon, authenticated, service_role;
alter default privileges in schema ops grant all on tables to anon, authenticated, service_role;
alter default privileges in schema ops grant all on functions to anon, authenticated, service_role;
alter default privileges in schema ops grant all on sequences to anon, authenticated, service_role;

-- Guardrails -----------------------------------------------------------------

create table ops.feature_flags (
  key         text primary key,
  value       jsonb not null,
  description text not null default '',
  updated_at  timestamptz not null default now(),
  updated_by  text not null default current_user
);

-- Leased overrides: the only way a drill changes a flag. An override counts while
-- it is unreleased and unexpired; a killed runner's lease stops counting by itself.
create table ops.flag_overrides (
  id          bigserial primary key,
  key         text not null references ops.feature_flags(key),
  value       jsonb not null,
  owner       text not null,
  run_id      text not null,
  reason      text not null,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  released_at timestamptz,
  check (expires_at > created_at)
);
create index flag_overrides_active on ops.flag_overrides (key, created_at desc) where released_at is null;

create table ops.budgets (
  key         text primary key,
  value       numeric not null,
  unit        text not null,
  description text not null default '',
  updated_at  timestamptz not null default now(),
  updated_by  text not null default current_user
);

insert into ops.feature_flags (key, value, description, updated_by) values
  ('autonomy.emergencyStop',     'false',  'Big red button: true halts every autonomous write', 'migration'),
  ('autonomy.mode',              '"FULL"', 'FULL runs every task kind; SAFE only canary-safe kinds', 'migration'),
  ('agents.autonomousEnabled',   'true',   'Agents may claim work', 'migration'),
  ('obs.otelEnabled',            'true',   'Tracing on (agent.task.execute spans)', 'migration'),
  ('canary.rollout_percentage',  '"SAFE"', 'Canary ramp held at the safe setting', 'migration'),
  ('canary.auto_rollback',       '"SAFE"', 'Canary auto-rollback armed', 'migration'),
  ('canary.health_threshold',    '"SAFE"', 'Canary health threshold at the safe setting', 'migration'),
  ('dlq.replayEnabled',          'true',   'DLQ replayer may replay', 'migration'),
  ('outbox.relayEnabled',        'true',   'Outbox relay may publish', 'migration');

insert into ops.budgets (key, value, unit, description, updated_by) values
  ('agent.concurrency',    150,     'tasks', 'Max agent tasks running at once', 'migration'),
  ('replay.batch_items',   50,      'items', 'Max DLQ items per replay batch', 'migration'),
  ('replay.max_bytes',     2097152, 'bytes', 'Max DLQ replay batch size (2 MB)', 'migration'),
  ('replay.fail_rate_pct', 20,      'pct',   'Replay halts when the running fail rate passes this', 'migration');

-- Effective flags: the one place every reader gets a flag's value from.
create view ops.effective_flags with (security_invoker = true) as
select f.key,
       f.value as base_value,
       coalesce(o.value, f.value) as value,
       (o.id is not null) as overridden,
       o.id as override_id,
       o.owner as override_owner,
       o.reason as override_reason,
       o.expires_at as override_expires_at,
       f.updated_at,
       f.updated_by
  from ops.feature_flags f
  left join lateral (
    select fo.id, fo.value, fo.owner, fo.reason, fo.expires_at
      from ops.flag_overrides fo
     where fo.key = f.key and fo.released_at is null and fo.expires_at > now()
     order by fo.created_at desc, fo.id desc
     limit 1
  ) o on true;

create function ops.effective_flag(p_key text) returns jsonb
language sql stable security invoker set search_path = '' as $$
  select value from ops.effective_flags where key = p_key
$$;

-- Telemetry (partitioned by day where volume is high) ---------------------------

create table ops.requests (
  id          bigserial,
  ts          timestamptz not null,
  tenant_id   uuid,
  route       text not null,
  method      text not null default 'GET',
  status      int not null,
  duration_ms double precision not null,
  region      text not null default 'primary',
  trace_id    text,
  source      text not null default 'app',
  primary key (id, ts)
) partition by range (ts);
create index on ops.requests (ts);

create table ops.health_probes (
  id          bigserial,
  ts          timestamptz not null,
  region      text not null,
  ok          boolean not null,
  latency_ms  double precision,
  lag_bytes   bigint,
  detail      text,
  primary key (id, ts)
) partition by range (ts);
create index on ops.health_probes (ts);

create table ops.spans (
  trace_id    text not null,
  span_id     text not null,
  parent_span_id text,
  name        text not null,
  flow        text,
  tenant_id   uuid,
  task_id     bigint,
  canary      boolean not null default false,
  attributes  jsonb not null default '{}',
  started_at  timestamptz not null,
  duration_ms double precision,
  primary key (span_id, started_at)
) partition by range (started_at);
create index on ops.spans (started_at);
create index on ops.spans (task_id);
create index on ops.spans (trace_id);

create table ops.agent_logs (
  id          bigserial,
  ts          timestamptz not null,
  task_id     bigint,
  level       text not null default 'info',
  message     text not null,
  primary key (id, ts)
) partition by range (ts);

create table ops.outbox (
  id           bigserial primary key,
  created_at   timestamptz not null default now(),
  published_at timestamptz,
  tenant_id    uuid,
  topic        text not null,
  payload      jsonb not null default '{}',
  attempts     int not null default 0,
  last_error   text
);
create index outbox_unpublished on ops.outbox (id) where published_at is null;
create index on ops.outbox (created_at);

create table ops.agent_tasks (
  id          bigserial primary key,
  tenant_id   uuid,
  kind        text not null,
  payload     jsonb not null default '{}',
  status      text not null default 'queued'
              check (status in ('queued', 'running', 'succeeded', 'failed', 'quarantined')),
  attempts    int not null default 0,
  enqueued_at timestamptz not null default now(),
  started_at  timestamptz,
  finished_at timestamptz,
  quarantined boolean not null default false,
  trace_id    text,
  canary      boolean not null default false,
  worker      text,
  error       text
);
create index agent_tasks_queued on ops.agent_tasks (id) where status = 'queued';
create index on ops.agent_tasks (enqueued_at);
create index on ops.agent_tasks (started_at);

create table ops.dlq (
  id            bigserial primary key,
  task_id       bigint,
  tenant_id     uuid,
  payload       jsonb not null default '{}',
  bytes         int not null default 0,
  error         text,
  created_at    timestamptz not null default now(),
  replayed_at   timestamptz,
  replay_status text check (replay_status in ('replayed', 'failed'))
);
create index dlq_pending on ops.dlq (id) where replayed_at is null;

create table ops.dlq_replays (
  id           bigserial primary key,
  batch_id     uuid not null default gen_random_uuid(),
  tenant_id    uuid,
  items        int not null,
  bytes        bigint not null,
  failed       int not null default 0,
  at           timestamptz not null default now(),
  status       text not null default 'replayed' check (status in ('replayed', 'refused')),
  reason       text,
  requested_by text not null default current_user
);
create index on ops.dlq_replays (at);

create table ops.ci_events (
  id      bigserial primary key,
  branch  text not null,
  kind    text not null,
  at      timestamptz not null default now(),
  detail  jsonb not null default '{}'
);
create index on ops.ci_events (at);

-- Operations -----------------------------------------------------------------

create table ops.alerts (
  id          bigserial primary key,
  raised_at   timestamptz not null default now(),
  resolved_at timestamptz,
  severity    text not null check (severity in ('critical', 'high', 'medium', 'low', 'info')),
  source      text not null,
  title       text not null,
  detail      jsonb not null default '{}',
  trace_id    text
);
create index alerts_active on ops.alerts (raised_at) where resolved_at is null;

create table ops.incidents (
  id          uuid primary key default gen_random_uuid(),
  level       text not null check (level in ('critical', 'high', 'medium', 'low')),
  type        text not null,
  description text not null,
  status      text not null default 'open' check (status in ('open', 'resolved')),
  opened_at   timestamptz not null default now(),
  resolved_at timestamptz,
  opened_by   text not null default current_user,
  changes     jsonb not null default '[]',
  response    jsonb not null default '{}'
);

create table ops.backups (
  id        bigserial primary key,
  taken_at  timestamptz not null default now(),
  kind      text not null,
  location  text not null,
  bytes     bigint not null check (bytes > 0),
  sha256    text,
  verified  boolean not null default false
);

create table ops.idempotency_keys (
  key          text primary key,
  account      text not null,
  body_sha256  text not null,
  status       int not null,
  response     jsonb not null default '{}',
  created_at   timestamptz not null default now()
);

-- What an accepted signed webhook did: one row per effect, one effect per key.
create table ops.ingest_events (
  id              bigserial primary key,
  idempotency_key text not null unique references ops.idempotency_keys(key),
  account         text not null,
  payload         jsonb not null,
  received_at     timestamptz not null default now()
);

create table ops.service_accounts (
  name            text primary key,
  purpose         text not null,
  permissions     text[] not null default '{}',
  key_fingerprint text,
  rotated_at      timestamptz not null default now(),
  created_at      timestamptz not null default now()
);

insert into ops.service_accounts (name, purpose, permissions) values
  ('autopilot@', 'Autonomous orchestration loop',          array['agent_tasks:write', 'outbox:write']),
  ('agents@',    'Agent worker pool',                      array['agent_tasks:write', 'spans:write', 'agent_logs:write']),
  ('dlq@',       'DLQ replayer',                           array['dlq:write', 'dlq_replays:write']),
  ('ci@',        'CI pipeline and self-heal hook',         array['ci_events:write']),
  ('n8n@',       'Signed webhook ingest (n8n workflows)',  array['ingest:write']),
  ('system@',    'Kill switch operator',                   array['flags:autonomy.emergencyStop']);

-- Plane heartbeats and routing state (written by the reference plane or the user's services).
create table ops.heartbeats (
  component  text primary key,
  pid        int,
  host       text,
  beat_at    timestamptz not null default now(),
  detail     jsonb not null default '{}'
);

create table ops.read_routing (
  region               text primary key,
  target               text not null default 'replica' check (target in ('replica', 'primary')),
  consecutive_failures int not null default 0,
  changed_at           timestamptz not null default now()
);
insert into ops.read_routing (region) values ('replica');

-- Partition management: create ahead, drop beyond retention. Used by the seeder and
-- by the daily cadence.
create function ops.ensure_partitions(p_table text, p_from date, p_to date) returns int
language plpgsql security invoker set search_path = '' as $$
declare
  d date := p_from;
  made int := 0;
  part text;
begin
  if p_table not in ('requests', 'health_probes', 'spans', 'agent_logs') then
    raise exception 'not a partitioned ops table: %', p_table;
  end if;
  while d <= p_to loop
    part := format('%s_%s', p_table, to_char(d, 'YYYYMMDD'));
    if to_regclass(format('ops.%I', part)) is null then
      execute format('create table ops.%I partition of ops.%I for values from (%L) to (%L)',
                     part, p_table, d::timestamptz, (d + 1)::timestamptz);
      execute format('alter table ops.%I enable row level security', part);
      made := made + 1;
    end if;
    d := d + 1;
  end loop;
  return made;
end
$$;

create function ops.drop_partitions_before(p_table text, p_before date) returns int
language plpgsql security invoker set search_path = '' as $$
declare
  r record;
  dropped int := 0;
begin
  if p_table not in ('requests', 'health_probes', 'spans', 'agent_logs') then
    raise exception 'not a partitioned ops table: %', p_table;
  end if;
  for r in
    select c.relname
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
      join pg_class p on p.oid = i.inhparent
      join pg_namespace n on n.oid = p.relnamespace
     where n.nspname = 'ops' and p.relname = p_table
       and c.relname ~ '_\d{8}$'
       and to_date(right(c.relname, 8), 'YYYYMMDD') < p_before
  loop
    execute format('drop table ops.%I', r.relname);
    dropped := dropped + 1;
  end loop;
  return dropped;
end
$$;

select ops.ensure_partitions(t, current_date - 1, current_date + 7)
  from unnest(array['requests', 'health_probes', 'spans', 'agent_logs']) t;

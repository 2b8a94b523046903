-- opsproof ops contract: the append-only, hash-chained audit log. See docs/contract.md ("Audit chain").
--
-- Every row carries prev_hash (the previous row's hash; 64 zeros for the first row) and
--   hash = sha256_hex(utf8(ops.audit_canonical(id, at, actor, action, target, reason, run_id,
--                                                incident_id, detail, prev_hash)))
-- where the canonical text is a jsonb array of those ten values rendered by PostgreSQL
-- (at in UTC, microseconds: "YYYY-MM-DDTHH:MM:SS.ffffffZ"). A BEFORE INSERT trigger takes an advisory
-- transaction lock, (re)assigns id from the sequence under that lock, links to the newest row and hashes,
-- so concurrent appenders serialize and ids follow chain order. ops.verify_audit_chain() recomputes
-- every hash and link in id order.
--
-- Append-only: the API roles hold no UPDATE/DELETE/TRUNCATE privilege, and a trigger refuses UPDATE,
-- DELETE and TRUNCATE from anyone but the table owner (postgres, the migration role). Any change the
-- owner makes to a row still breaks the chain and is reported by ops.verify_audit_chain().

-- id is a bigserial whose value is drawn by the chain trigger under the lock (no column default, so no
-- value is drawn outside it): ids are gap-free except for rolled-back appends, and follow chain order.
create sequence ops.audit_log_id_seq as bigint;
create table ops.audit_log (
  id          bigint primary key,
  at          timestamptz not null default now(),
  actor       text not null,
  action      text not null,
  target      text,
  reason      text,
  run_id      text,
  incident_id uuid,
  detail      jsonb not null default '{}',
  prev_hash   text not null,
  hash        text not null check (hash ~ '^[0-9a-f]{64}$')
);
alter sequence ops.audit_log_id_seq owned by ops.audit_log.id;
create index audit_log_at on ops.audit_log (at);
create index audit_log_incident on ops.audit_log (incident_id) where incident_id is not null;
create index audit_log_run on ops.audit_log (run_id);

-- The exact text that is hashed. Documented so an external verifier can reproduce it.
create function ops.audit_canonical(
  p_id bigint, p_at timestamptz, p_actor text, p_action text, p_target text, p_reason text,
  p_run_id text, p_incident_id uuid, p_detail jsonb, p_prev_hash text
) returns text
language sql stable security invoker set search_path = '' as $$
  select pg_catalog.jsonb_build_array(
           p_id,
           pg_catalog.to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           p_actor, p_action, p_target, p_reason, p_run_id, p_incident_id::text, p_detail, p_prev_hash
         )::text
$$;

create function ops.audit_hash(
  p_id bigint, p_at timestamptz, p_actor text, p_action text, p_target text, p_reason text,
  p_run_id text, p_incident_id uuid, p_detail jsonb, p_prev_hash text
) returns text
language sql stable security invoker set search_path = '' as $$
  select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
           ops.audit_canonical(p_id, p_at, p_actor, p_action, p_target, p_reason, p_run_id,
                               p_incident_id, p_detail, p_prev_hash), 'UTF8')), 'hex')
$$;

create function ops.audit_log_chain() returns trigger
language plpgsql security invoker set search_path = '' as $$
declare
  v_prev text;
begin
  -- Under REPEATABLE READ / SERIALIZABLE the snapshot predates the lock and could miss the newest
  -- row: the chain would fork. Refuse instead.
  if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'ops.audit_log appends need READ COMMITTED isolation (this transaction is %)',
      pg_catalog.current_setting('transaction_isolation') using errcode = '25000';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('ops.audit_log', 0));
  new.id := pg_catalog.nextval('ops.audit_log_id_seq'::regclass);
  new.at := coalesce(new.at, pg_catalog.now());
  new.detail := coalesce(new.detail, '{}'::jsonb);
  select a.hash into v_prev from ops.audit_log a order by a.id desc limit 1;
  new.prev_hash := coalesce(v_prev, pg_catalog.repeat('0', 64));
  new.hash := ops.audit_hash(new.id, new.at, new.actor, new.action, new.target, new.reason, new.run_id,
                             new.incident_id, new.detail, new.prev_hash);
  return new;
end
$$;

create trigger audit_log_chain before insert on ops.audit_log
  for each row execute function ops.audit_log_chain();

create function ops.audit_log_append_only() returns trigger
language plpgsql security invoker set search_path = '' as $$
declare
  v_owner name;
begin
  select c.relowner::regrole::name into v_owner from pg_catalog.pg_class c where c.oid = tg_relid;
  if current_user = v_owner then
    if tg_level = 'STATEMENT' then
      return null;
    elsif tg_op = 'DELETE' then
      return old;
    end if;
    return new;
  end if;
  raise exception 'ops.audit_log is append-only: % refused for %', tg_op, current_user
    using errcode = '42501';
end
$$;

create trigger audit_log_append_only before update or delete on ops.audit_log
  for each row execute function ops.audit_log_append_only();
create trigger audit_log_no_truncate before truncate on ops.audit_log
  for each statement execute function ops.audit_log_append_only();

-- Append through this (or a plain INSERT by service_role: the trigger fills id, prev_hash, hash).
create function ops.audit(
  p_actor text, p_action text, p_target text, p_reason text, p_run_id text,
  p_detail jsonb default '{}', p_incident_id uuid default null
) returns bigint
language sql volatile security invoker set search_path = '' as $$
  insert into ops.audit_log (actor, action, target, reason, run_id, detail, incident_id)
  values (p_actor, p_action, p_target, p_reason, p_run_id, coalesce(p_detail, '{}'::jsonb), p_incident_id)
  returning id
$$;

-- Recompute every link and hash in id order; report the first bad row.
create function ops.verify_audit_chain()
returns table (ok boolean, rows_checked bigint, first_bad_id bigint, reason text)
language sql stable security invoker set search_path = '' as $$
  with chain as (
    select a.id, a.prev_hash, a.hash,
           coalesce(lag(a.hash) over (order by a.id), pg_catalog.repeat('0', 64)) as expected_prev,
           ops.audit_hash(a.id, a.at, a.actor, a.action, a.target, a.reason, a.run_id,
                          a.incident_id, a.detail, a.prev_hash) as recomputed
      from ops.audit_log a
  ),
  bad as (
    select c.id,
           case when c.prev_hash is distinct from c.expected_prev
                then 'prev_hash does not match the previous row''s hash (row removed, inserted or reordered)'
                else 'hash does not match the row''s content (row modified)' end as why
      from chain c
     where c.prev_hash is distinct from c.expected_prev or c.hash is distinct from c.recomputed
     order by c.id
     limit 1
  )
  select (select count(*) from bad) = 0,
         (select count(*) from chain),
         (select b.id from bad b),
         (select b.why from bad b)
$$;

-- Privileges and RLS -----------------------------------------------------------------------------
alter table ops.audit_log enable row level security;

revoke all on ops.audit_log from public, anon, authenticated, service_role;
revoke all on sequence ops.audit_log_id_seq from public, anon, authenticated, service_role;
grant select, insert on ops.audit_log to service_role;
grant usage on sequence ops.audit_log_id_seq to service_role;
grant select on ops.audit_log to authenticated;  -- rows only through the policy below

revoke execute on function ops.audit(text, text, text, text, text, jsonb, uuid) from public, anon, authenticated;
grant execute on function ops.audit(text, text, text, text, text, jsonb, uuid) to service_role;
revoke execute on function ops.audit_log_chain() from public, anon, authenticated, service_role;
revoke execute on function ops.audit_log_append_only() from public, anon, authenticated, service_role;

insert into public.portal_tables (relation, portal_key, scope, access)
values ('ops.audit_log', 'control_tower', 'platform', 'select');
select ops.apply_portal_policies();

-- Genesis row: the chain is never empty once the contract is applied.
select ops.audit('migration', 'audit.genesis', 'ops.audit_log', 'audit chain created', '20261125000300',
                 '{"migration": "20261125000300_audit_chain"}'::jsonb);

-- Supabase-compatible bootstrap for the embedded cluster.
-- Mirrors what a hosted Supabase project has before any user migration runs:
-- the API roles, the authenticator, the auth schema with Supabase's own
-- auth.uid()/auth.role()/auth.jwt()/auth.email(), auth.users, the default
-- privileges Supabase grants in schema public, and -- as on hosted Supabase --
-- a `postgres` role that is NOT a superuser.
-- Run once by `opsproof stack up` as the bootstrap superuser `supabase_admin`
-- (initdb -U supabase_admin; used for setup and the stack's own plumbing only).
-- Idempotent. docs/contract.md "Privileges a hosted project must give" lists
-- every grant below that goes beyond what hosted Supabase gives `postgres`.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'supabase_admin') then
    create role supabase_admin login superuser createdb createrole replication bypassrls;
  end if;
  -- hosted Supabase's `postgres` (supabase/postgres migrations/db/migrations/10000000000000_demote-postgres.sql:
  -- ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS)
  -- (left as it is when `postgres` itself runs this: a scratch cluster whose bootstrap superuser is `postgres`)
  if not exists (select 1 from pg_roles where rolname = 'postgres') then
    create role postgres login inherit nosuperuser createdb createrole replication bypassrls;
  elsif current_user <> 'postgres' then
    alter role postgres login inherit nosuperuser createdb createrole replication bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'replicator') then
    create role replicator login replication;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

-- `postgres`'s memberships on hosted Supabase (pg_dumpall of a hosted project, "Role memberships"):
-- the API roles and the authenticator WITH ADMIN OPTION, and the predefined roles pg_read_all_data,
-- pg_monitor, pg_signal_backend (WITH ADMIN OPTION) and pg_create_subscription (PostgreSQL 16+).
grant anon, authenticated, service_role, authenticator to postgres with admin option;
grant pg_read_all_data, pg_monitor, pg_signal_backend to postgres with admin option;
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'pg_create_subscription') then
    execute 'grant pg_create_subscription to postgres';
  end if;
end
$$;
alter role postgres set search_path = "$user", public, extensions;

-- The database: owned by the bootstrap superuser (initdb -U supabase_admin, as hosted), with
-- GRANT ALL ON DATABASE postgres TO postgres (demote-postgres.sql). PostgreSQL 15 makes schema public
-- belong to the database owner, so `postgres` gets CREATE on it explicitly (hosted `postgres` creates
-- tables in public).
grant all on database postgres to postgres;
grant all on schema public to postgres;

-- Extensions live in schema `extensions` (owned by postgres on hosted), pre-installed by the superuser.
create schema if not exists extensions authorization postgres;
alter schema extensions owner to postgres;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;

create schema if not exists auth authorization supabase_admin;
grant usage on schema auth to anon, authenticated, service_role, postgres;
grant usage on schema extensions to anon, authenticated, service_role, postgres;

create table if not exists auth.users (
  instance_id uuid,
  id uuid primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255) unique,
  encrypted_password varchar(255),
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);
alter table auth.users owner to supabase_admin;
-- hosted: GRANT ALL ON ALL TABLES IN SCHEMA auth TO postgres (demote-postgres.sql); no CREATE on auth
grant all on auth.users to postgres;

-- Supabase's definitions (the nullif matters: on a pooled connection a previously
-- set-local claim reads back as '' and ''::jsonb raises).
create or replace function auth.uid() returns uuid
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

alter function auth.uid() owner to supabase_admin;
alter function auth.role() owner to supabase_admin;
alter function auth.email() owner to supabase_admin;
alter function auth.jwt() owner to supabase_admin;
grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt() to anon, authenticated, service_role, postgres;

-- Default privileges as on Supabase: the API roles get table/function/sequence
-- privileges in public; RLS is what actually protects the rows.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on sequences to postgres, anon, authenticated, service_role;

-- PostgREST reads this to know which schemas it exposes (the Supabase CLI sets it
-- from supabase/config.toml [api] schemas as well).
alter role authenticator set pgrst.db_schemas = 'public, ops';

-- Hosted Supabase grants `postgres` pg_reload_conf() (supabase/postgres
-- 20251105172723_grant_pg_reload_conf_to_postgres.sql).
grant execute on function pg_catalog.pg_reload_conf() to postgres;

-- BEYOND HOSTED (docs/contract.md "Privileges a hosted project must give"): the region-wobble drill
-- pauses and resumes WAL replay on the streaming replica through a lever, as `postgres`. PostgreSQL
-- restricts both to superusers unless EXECUTE is granted; granted here on the primary, it replicates.
grant execute on function pg_catalog.pg_wal_replay_pause() to postgres;
grant execute on function pg_catalog.pg_wal_replay_resume() to postgres;

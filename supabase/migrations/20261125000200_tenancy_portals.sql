-- opsproof ops contract: tenancy, the 20 TMS portals x 8 human roles, row level security everywhere.
-- See docs/contract.md ("JWT claims", "Portals and roles", "Row level security").
--
-- Identity comes from the JWT only (what PostgREST puts in request.jwt.claims):
--   {"sub": "<user uuid>", "role": "authenticated", "tenant_id": "<tenant uuid>", "app_role": "dispatcher"}
-- tenant_id / app_role may also sit in app_metadata (server-controlled; a custom access token hook or the
-- admin API writes it). user_metadata is user-editable and is NEVER read.
--
-- A row of a tenant table is visible/writable to `authenticated` only when its tenant_id is the JWT's
-- tenant AND the JWT's app_role may reach the portal that owns the table (public.portal_tables).
-- anon has no policy anywhere (sees nothing); service_role bypasses RLS (BYPASSRLS).
-- Applies unchanged to hosted Supabase with `supabase db push`.

-- JWT helpers --------------------------------------------------------------------------------------

create function ops.jwt_tenant() returns uuid
language sql stable security invoker set search_path = '' as $$
  select case when c.v ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then c.v::uuid end
    from (select coalesce(nullif(auth.jwt() ->> 'tenant_id', ''),
                          nullif(auth.jwt() -> 'app_metadata' ->> 'tenant_id', '')) as v) c
$$;
comment on function ops.jwt_tenant() is
  'The tenant of the current request: JWT claim tenant_id (or app_metadata.tenant_id); null when absent or not a uuid.';

create function ops.jwt_app_role() returns text
language sql stable security invoker set search_path = '' as $$
  select coalesce(nullif(auth.jwt() ->> 'app_role', ''),
                  nullif(auth.jwt() -> 'app_metadata' ->> 'app_role', ''))
$$;
comment on function ops.jwt_app_role() is
  'The human role of the current request: JWT claim app_role (or app_metadata.app_role); null when absent.';

-- Roles and portals (the source of truth is role-matrix.md; tests/test_tenancy_sql.py proves equality) ---

create table public.app_roles (
  key         text primary key check (key ~ '^[a-z_]+$'),
  name        text not null,
  description text not null default '',
  ord         int not null unique
);

insert into public.app_roles (key, name, ord, description) values
  ('super_admin',     'Super Admin',     1, 'Platform operator: every portal of its tenant'),
  ('tenant_admin',    'Tenant Admin',    2, 'Administers one tenant: users, settings, every business portal'),
  ('ops_manager',     'Ops Manager',     3, 'Runs operations: dispatch, fleet, compliance, control tower, agents'),
  ('dispatcher',      'Dispatcher',      4, 'Plans and dispatches loads; works carriers, drivers, shippers'),
  ('finance_manager', 'Finance Manager', 5, 'Billing, settlements, rates'),
  ('analyst',         'Analyst',         6, 'Analytics and reports, read mostly'),
  ('developer',       'Developer',       7, 'API, integrations, control tower and agents'),
  ('viewer',          'Viewer',          8, 'Customer tracking and reports only');

create table public.portals (
  key         text primary key check (key ~ '^[a-z_]+$'),
  name        text not null unique,
  description text not null default '',
  ord         int not null unique
);

insert into public.portals (key, name, ord, description) values
  ('super_admin',    'Super Admin',         1,  'Platform administration across the tenant'),
  ('tenant_admin',   'Tenant Admin',        2,  'Tenant users, roles, settings, integrations keys'),
  ('dispatch',       'Dispatch',            3,  'Load board, tendering, assignment, live dispatch'),
  ('carrier',        'Carrier',             4,  'Carrier onboarding, profiles, scorecards'),
  ('shipper',        'Shipper',             5,  'Shipper bookings and shipments'),
  ('broker',         'Broker',              6,  'Brokerage: matching loads to carriers, margins'),
  ('driver',         'Driver',              7,  'Drivers: profiles, HOS, assignments'),
  ('owner_operator', 'Owner-Operator',      8,  'Owner-operators: own equipment, settlements'),
  ('analytics',      'Analytics',           9,  'Dashboards, lane and cost analytics'),
  ('financial',      'Financial',           10, 'Invoicing, receivables, payables, settlements'),
  ('fleet',          'Fleet',               11, 'Tractors, trailers, trucks'),
  ('maintenance',    'Maintenance',         12, 'Preventive maintenance, work orders'),
  ('compliance',     'Compliance & Safety', 13, 'DOT/FMCSA compliance, safety events, documents'),
  ('customer',       'Customer',            14, 'Customer self-service: tracking and documents'),
  ('warehouse',      'Warehouse & Dock',    15, 'Dock scheduling, cross-dock, yard'),
  ('rates',          'Rates & Quotes',      16, 'Rate tables, spot quotes, tenders pricing'),
  ('developer',      'Developer & API',     17, 'API keys, webhooks, integration logs'),
  ('control_tower',  'Ops Control Tower',   18, 'Platform health, SLOs, alerts, incidents, flags, audit'),
  ('autonomy',       'Autonomy & Agents',   19, 'Autonomous agents: tasks, outbox, DLQ, traces'),
  ('reports',        'Reports',             20, 'Scheduled and ad-hoc reports');

create table public.portal_roles (
  portal_key text not null references public.portals(key) on delete cascade,
  app_role   text not null references public.app_roles(key) on delete cascade,
  primary key (portal_key, app_role)
);
create index portal_roles_app_role on public.portal_roles (app_role);

-- Exactly the Y cells of role-matrix.md.
insert into public.portal_roles (portal_key, app_role)
select m.portal_key, r.app_role
  from (values
    --                  super tenant ops   disp  fin   anal  dev   view
    ('super_admin',    'Y', '-', '-', '-', '-', '-', '-', '-'),
    ('tenant_admin',   'Y', 'Y', '-', '-', '-', '-', '-', '-'),
    ('dispatch',       'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('carrier',        'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('shipper',        'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('broker',         'Y', 'Y', 'Y', 'Y', 'Y', '-', '-', '-'),
    ('driver',         'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('owner_operator', 'Y', 'Y', 'Y', 'Y', 'Y', '-', '-', '-'),
    ('analytics',      'Y', 'Y', 'Y', '-', 'Y', 'Y', '-', '-'),
    ('financial',      'Y', 'Y', '-', '-', 'Y', '-', '-', '-'),
    ('fleet',          'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('maintenance',    'Y', 'Y', 'Y', '-', '-', '-', '-', '-'),
    ('compliance',     'Y', 'Y', 'Y', '-', '-', '-', '-', '-'),
    ('customer',       'Y', 'Y', 'Y', 'Y', '-', '-', '-', 'Y'),
    ('warehouse',      'Y', 'Y', 'Y', 'Y', '-', '-', '-', '-'),
    ('rates',          'Y', 'Y', 'Y', 'Y', 'Y', '-', '-', '-'),
    ('developer',      'Y', 'Y', '-', '-', '-', '-', 'Y', '-'),
    ('control_tower',  'Y', '-', 'Y', '-', '-', '-', 'Y', '-'),
    ('autonomy',       'Y', '-', 'Y', '-', '-', '-', 'Y', '-'),
    ('reports',        'Y', 'Y', 'Y', '-', 'Y', 'Y', '-', 'Y')
  ) as m(portal_key, super_admin, tenant_admin, ops_manager, dispatcher, finance_manager, analyst, developer, viewer)
 cross join lateral (values
    ('super_admin', m.super_admin), ('tenant_admin', m.tenant_admin), ('ops_manager', m.ops_manager),
    ('dispatcher', m.dispatcher), ('finance_manager', m.finance_manager), ('analyst', m.analyst),
    ('developer', m.developer), ('viewer', m.viewer)
 ) as r(app_role, cell)
 where r.cell = 'Y';

-- Which portal owns which table, and how its rows are scoped. The RLS policies below are generated
-- from this registry, and the portal audit reads it.
--   tenant           row visible iff tenant_id = ops.jwt_tenant() and the role reaches the portal
--   tenant_or_platform  same, but platform rows (tenant_id is null) are visible to the portal's roles too
--   platform         table has no tenant: visible iff the role reaches the portal
-- access: 'all' (select/insert/update/delete) or 'select'.
create table public.portal_tables (
  relation   text primary key check (relation ~ '^(public|ops)\.[a-z_]+$'),
  portal_key text not null references public.portals(key),
  scope      text not null check (scope in ('tenant', 'tenant_or_platform', 'platform')),
  access     text not null check (access in ('all', 'select'))
);
create index portal_tables_portal on public.portal_tables (portal_key);

create function public.can_access_portal(p_portal text) returns boolean
language sql stable security invoker set search_path = '' as $$
  select exists (
    select 1 from public.portal_roles pr
     where pr.portal_key = p_portal and pr.app_role = ops.jwt_app_role()
  )
$$;
comment on function public.can_access_portal(text) is
  'True iff the JWT app_role may reach the portal (public.portal_roles).';

create function public.portal_access_matrix() returns table (portal text, app_role text, allowed boolean)
language sql stable security invoker set search_path = '' as $$
  select p.key, r.key,
         exists (select 1 from public.portal_roles pr where pr.portal_key = p.key and pr.app_role = r.key)
    from public.portals p
   cross join public.app_roles r
   order by p.ord, r.ord
$$;
comment on function public.portal_access_matrix() is
  'All portal x role cells (20 x 8) with allowed = Y, in role-matrix.md order: for the portal audit.';

-- Tenants and the TMS business tables -------------------------------------------------------------

create table public.tenants (
  id         uuid primary key default gen_random_uuid(),
  name       text not null,
  slug       text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
  created_at timestamptz not null default now()
);

create table public.carriers (
  id         uuid primary key default gen_random_uuid(),
  tenant_id  uuid not null references public.tenants(id) on delete cascade,
  name       text not null,
  mc_number  text,
  dot_number text,
  status     text not null default 'active' check (status in ('active', 'inactive', 'suspended')),
  created_at timestamptz not null default now(),
  unique (tenant_id, id)
);
create index carriers_tenant on public.carriers (tenant_id);

create table public.drivers (
  id             uuid primary key default gen_random_uuid(),
  tenant_id      uuid not null references public.tenants(id) on delete cascade,
  carrier_id     uuid,
  full_name      text not null,
  license_number text not null,
  license_state  text not null,
  status         text not null default 'available'
                 check (status in ('available', 'on_duty', 'driving', 'off_duty', 'inactive')),
  created_at     timestamptz not null default now(),
  unique (tenant_id, id),
  foreign key (tenant_id, carrier_id) references public.carriers (tenant_id, id)
);
create index drivers_tenant on public.drivers (tenant_id);
create index drivers_carrier on public.drivers (tenant_id, carrier_id);

create table public.vehicles (
  id          uuid primary key default gen_random_uuid(),
  tenant_id   uuid not null references public.tenants(id) on delete cascade,
  carrier_id  uuid,
  unit_number text not null,
  kind        text not null check (kind in ('tractor', 'trailer', 'box_truck', 'van', 'reefer')),
  vin         text,
  status      text not null default 'in_service' check (status in ('in_service', 'out_of_service', 'retired')),
  created_at  timestamptz not null default now(),
  unique (tenant_id, unit_number),
  foreign key (tenant_id, carrier_id) references public.carriers (tenant_id, id)
);
create index vehicles_tenant on public.vehicles (tenant_id);
create index vehicles_carrier on public.vehicles (tenant_id, carrier_id);

create table public.loads (
  id          uuid primary key default gen_random_uuid(),
  tenant_id   uuid not null references public.tenants(id) on delete cascade,
  reference   text not null,
  carrier_id  uuid,
  driver_id   uuid,
  status      text not null default 'planned'
              check (status in ('planned', 'tendered', 'dispatched', 'in_transit', 'delivered', 'cancelled')),
  origin      text not null,
  destination text not null,
  pickup_at   timestamptz,
  delivery_at timestamptz,
  weight_lbs  numeric check (weight_lbs >= 0),
  rate_cents  bigint check (rate_cents >= 0),
  created_at  timestamptz not null default now(),
  unique (tenant_id, id),
  unique (tenant_id, reference),
  foreign key (tenant_id, carrier_id) references public.carriers (tenant_id, id),
  foreign key (tenant_id, driver_id) references public.drivers (tenant_id, id)
);
create index loads_tenant on public.loads (tenant_id);
create index loads_carrier on public.loads (tenant_id, carrier_id);
create index loads_driver on public.loads (tenant_id, driver_id);

create table public.shipments (
  id             uuid primary key default gen_random_uuid(),
  tenant_id      uuid not null references public.tenants(id) on delete cascade,
  load_id        uuid,
  shipper_name   text not null,
  consignee_name text not null,
  commodity      text not null,
  pieces         int not null default 1 check (pieces > 0),
  weight_lbs     numeric check (weight_lbs >= 0),
  status         text not null default 'booked'
                 check (status in ('booked', 'picked_up', 'in_transit', 'delivered', 'exception')),
  created_at     timestamptz not null default now(),
  foreign key (tenant_id, load_id) references public.loads (tenant_id, id)
);
create index shipments_tenant on public.shipments (tenant_id);
create index shipments_load on public.shipments (tenant_id, load_id);

create table public.invoices (
  id            uuid primary key default gen_random_uuid(),
  tenant_id     uuid not null references public.tenants(id) on delete cascade,
  load_id       uuid,
  number        text not null,
  customer_name text not null,
  amount_cents  bigint not null check (amount_cents >= 0),
  currency      text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
  status        text not null default 'draft' check (status in ('draft', 'issued', 'paid', 'void')),
  issued_at     timestamptz,
  due_at        timestamptz,
  paid_at       timestamptz,
  created_at    timestamptz not null default now(),
  unique (tenant_id, number),
  foreign key (tenant_id, load_id) references public.loads (tenant_id, id)
);
create index invoices_tenant on public.invoices (tenant_id);
create index invoices_load on public.invoices (tenant_id, load_id);

create table public.rate_quotes (
  id          uuid primary key default gen_random_uuid(),
  tenant_id   uuid not null references public.tenants(id) on delete cascade,
  origin      text not null,
  destination text not null,
  equipment   text not null default 'dry_van',
  rate_cents  bigint not null check (rate_cents >= 0),
  valid_until timestamptz not null,
  status      text not null default 'open' check (status in ('open', 'accepted', 'expired', 'declined')),
  created_at  timestamptz not null default now()
);
create index rate_quotes_tenant on public.rate_quotes (tenant_id);

insert into public.portal_tables (relation, portal_key, scope, access) values
  ('public.carriers',    'carrier',   'tenant', 'all'),
  ('public.drivers',     'driver',    'tenant', 'all'),
  ('public.vehicles',    'fleet',     'tenant', 'all'),
  ('public.loads',       'dispatch',  'tenant', 'all'),
  ('public.shipments',   'shipper',   'tenant', 'all'),
  ('public.invoices',    'financial', 'tenant', 'all'),
  ('public.rate_quotes', 'rates',     'tenant', 'all'),
  -- ops: read-only for the portal's roles; services write with service_role (BYPASSRLS).
  ('ops.feature_flags',  'control_tower', 'platform',           'select'),
  ('ops.flag_overrides', 'control_tower', 'platform',           'select'),
  ('ops.budgets',        'control_tower', 'platform',           'select'),
  ('ops.requests',       'control_tower', 'tenant_or_platform', 'select'),
  ('ops.health_probes',  'control_tower', 'platform',           'select'),
  ('ops.alerts',         'control_tower', 'platform',           'select'),
  ('ops.incidents',      'control_tower', 'platform',           'select'),
  ('ops.backups',        'control_tower', 'platform',           'select'),
  ('ops.heartbeats',     'control_tower', 'platform',           'select'),
  ('ops.read_routing',   'control_tower', 'platform',           'select'),
  ('ops.ci_events',      'developer',     'platform',           'select'),
  ('ops.spans',          'autonomy',      'tenant_or_platform', 'select'),
  ('ops.agent_logs',     'autonomy',      'platform',           'select'),
  ('ops.agent_tasks',    'autonomy',      'tenant_or_platform', 'select'),
  ('ops.outbox',         'autonomy',      'tenant_or_platform', 'select'),
  ('ops.dlq',            'autonomy',      'tenant_or_platform', 'select'),
  ('ops.dlq_replays',    'autonomy',      'tenant_or_platform', 'select');
-- Deliberately absent (no policy: only service_role and the owner): ops.idempotency_keys,
-- ops.ingest_events, ops.service_accounts.

-- Row level security: on for EVERY table in public and ops (partitioned parents and partitions too) ----

do $$
declare
  r record;
begin
  for r in
    select n.nspname, c.relname
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('public', 'ops') and c.relkind in ('r', 'p')
  loop
    execute format('alter table %I.%I enable row level security', r.nspname, r.relname);
  end loop;
end
$$;

-- Policies generated from the registry. Every call is wrapped in (select ...) so it runs once per
-- statement (an initPlan), not once per row.
create function ops.apply_portal_policies() returns int
language plpgsql security invoker set search_path = '' as $$
declare
  r record;
  made int := 0;
  v_using text;
  v_name text;
begin
  for r in select * from public.portal_tables order by relation loop
    v_using := format('(select public.can_access_portal(%L))', r.portal_key);
    if r.scope = 'tenant' then
      v_using := format('tenant_id = (select ops.jwt_tenant()) and %s', v_using);
    elsif r.scope = 'tenant_or_platform' then
      v_using := format('(tenant_id is null or tenant_id = (select ops.jwt_tenant())) and %s', v_using);
    end if;
    v_name := format('portal_%s_%s', r.portal_key, r.access);
    if exists (select 1 from pg_catalog.pg_policies p
                where p.schemaname || '.' || p.tablename = r.relation and p.policyname = v_name) then
      execute format('drop policy %I on %s', v_name, r.relation);
    end if;
    if r.access = 'all' then
      execute format('create policy %I on %s as permissive for all to authenticated using (%s) with check (%s)',
                     v_name, r.relation, v_using, v_using);
    else
      execute format('create policy %I on %s as permissive for select to authenticated using (%s)',
                     v_name, r.relation, v_using);
    end if;
    made := made + 1;
  end loop;
  return made;
end
$$;
revoke execute on function ops.apply_portal_policies() from public, anon, authenticated;

select ops.apply_portal_policies();

-- A user sees its own tenant's row, whatever its (known) app role.
create policy tenant_self_read on public.tenants as permissive for select to authenticated
  using (id = (select ops.jwt_tenant())
         and (select ops.jwt_app_role()) in (select r.key from public.app_roles r));

-- The role/portal reference data is readable by every signed-in user (the UI needs it, and
-- can_access_portal runs as the caller); only migrations / service_role change it.
create policy reference_read on public.app_roles as permissive for select to authenticated using (true);
create policy reference_read on public.portals as permissive for select to authenticated using (true);
create policy reference_read on public.portal_roles as permissive for select to authenticated using (true);
create policy reference_read on public.portal_tables as permissive for select to authenticated using (true);

-- Privileges: RLS protects rows; these keep the API roles to row operations only (no TRUNCATE, which
-- RLS does not govern) and keep the reference tables read-only.
revoke truncate, references, trigger on all tables in schema public from anon, authenticated;
revoke truncate, references, trigger on all tables in schema ops from anon, authenticated;
revoke insert, update, delete on public.app_roles, public.portals, public.portal_roles, public.portal_tables,
  public.tenants from anon, authenticated;

-- Seed: four tenants and a few rows of each business table per tenant (deterministic ids) ----------

insert into public.tenants (id, name, slug, created_at) values
  ('00000000-0000-0000-0000-000000000001', 'Northwind Freight Lines',  'northwind-freight',  '2026-01-01T00:00:00Z'),
  ('00000000-0000-0000-0000-000000000002', 'Blue Ridge Logistics',     'blue-ridge-logistics', '2026-01-01T00:00:00Z'),
  ('00000000-0000-0000-0000-000000000003', 'Pacific Coast Carriers',   'pacific-coast-carriers', '2026-01-01T00:00:00Z'),
  ('00000000-0000-0000-0000-000000000004', 'Great Lakes Shippers Co.', 'great-lakes-shippers', '2026-01-01T00:00:00Z');

insert into public.carriers (id, tenant_id, name, mc_number, dot_number, status)
select md5('carrier:' || t.id || ':' || n)::uuid, t.id,
       (array['Swift Haul', 'Ironhorse Transport', 'Red Arrow Trucking'])[n] || ' (' || t.slug || ')',
       'MC' || (100000 + t.n10 * 10 + n), 'DOT' || (2000000 + t.n10 * 10 + n),
       case when n = 3 then 'inactive' else 'active' end
  from (select id, slug, right(id::text, 1)::int as n10 from public.tenants) t, generate_series(1, 3) n;

insert into public.drivers (id, tenant_id, carrier_id, full_name, license_number, license_state, status)
select md5('driver:' || t.id || ':' || n)::uuid, t.id, md5('carrier:' || t.id || ':' || n)::uuid,
       (array['Ana Morales', 'Ben Carter', 'Chen Wei'])[n],
       'CDL' || lpad((t.n10 * 100 + n)::text, 7, '0'),
       (array['TX', 'OH', 'CA'])[n],
       (array['available', 'driving', 'off_duty'])[n]
  from (select id, right(id::text, 1)::int as n10 from public.tenants) t, generate_series(1, 3) n;

insert into public.vehicles (id, tenant_id, carrier_id, unit_number, kind, vin, status)
select md5('vehicle:' || t.id || ':' || n)::uuid, t.id, md5('carrier:' || t.id || ':' || n)::uuid,
       'U-' || t.n10 || lpad(n::text, 3, '0'),
       (array['tractor', 'trailer', 'reefer'])[n],
       upper(left(md5('vin:' || t.id || ':' || n), 17)),
       'in_service'
  from (select id, right(id::text, 1)::int as n10 from public.tenants) t, generate_series(1, 3) n;

insert into public.loads (id, tenant_id, reference, carrier_id, driver_id, status, origin, destination,
                          pickup_at, delivery_at, weight_lbs, rate_cents)
select md5('load:' || t.id || ':' || n)::uuid, t.id, 'LD-' || t.n10 || '-' || lpad(n::text, 4, '0'),
       md5('carrier:' || t.id || ':' || (1 + n % 2))::uuid, md5('driver:' || t.id || ':' || (1 + n % 2))::uuid,
       (array['planned', 'dispatched', 'in_transit', 'delivered', 'delivered'])[n],
       (array['Dallas, TX', 'Columbus, OH', 'Fresno, CA', 'Chicago, IL', 'Atlanta, GA'])[n],
       (array['Memphis, TN', 'Pittsburgh, PA', 'Reno, NV', 'Detroit, MI', 'Charlotte, NC'])[n],
       timestamptz '2026-01-05T08:00:00Z' + make_interval(days => n),
       timestamptz '2026-01-06T17:00:00Z' + make_interval(days => n),
       20000 + 1500 * n, 150000 + 12500 * n
  from (select id, right(id::text, 1)::int as n10 from public.tenants) t, generate_series(1, 5) n;

insert into public.shipments (id, tenant_id, load_id, shipper_name, consignee_name, commodity, pieces, weight_lbs, status)
select md5('shipment:' || t.id || ':' || n)::uuid, t.id, md5('load:' || t.id || ':' || n)::uuid,
       (array['Acme Foods', 'Globex Paper', 'Initech Parts', 'Umbrella Pharma', 'Stark Steel'])[n],
       (array['Walmart DC 6094', 'Target DC 3801', 'Kroger DC 014', 'CVS DC 22', 'Home Depot RDC 5620'])[n],
       (array['frozen food', 'paper goods', 'auto parts', 'pharmaceuticals', 'steel coils'])[n],
       10 * n, 20000 + 1500 * n,
       (array['booked', 'picked_up', 'in_transit', 'delivered', 'delivered'])[n]
  from (select id from public.tenants) t, generate_series(1, 5) n;

insert into public.invoices (id, tenant_id, load_id, number, customer_name, amount_cents, status, issued_at, due_at, paid_at)
select md5('invoice:' || t.id || ':' || n)::uuid, t.id, md5('load:' || t.id || ':' || (n + 2))::uuid,
       'INV-' || t.n10 || '-' || lpad(n::text, 5, '0'),
       (array['Acme Foods', 'Globex Paper', 'Initech Parts'])[n],
       175000 + 12500 * n,
       (array['draft', 'issued', 'paid'])[n],
       case when n > 1 then timestamptz '2026-01-10T00:00:00Z' end,
       case when n > 1 then timestamptz '2026-02-09T00:00:00Z' end,
       case when n = 3 then timestamptz '2026-01-30T00:00:00Z' end
  from (select id, right(id::text, 1)::int as n10 from public.tenants) t, generate_series(1, 3) n;

insert into public.rate_quotes (id, tenant_id, origin, destination, equipment, rate_cents, valid_until, status)
select md5('quote:' || t.id || ':' || n)::uuid, t.id,
       (array['Houston, TX', 'Denver, CO', 'Seattle, WA'])[n],
       (array['Phoenix, AZ', 'Kansas City, MO', 'Portland, OR'])[n],
       (array['dry_van', 'reefer', 'flatbed'])[n],
       120000 + 20000 * n, timestamptz '2026-12-31T00:00:00Z',
       (array['open', 'accepted', 'expired'])[n]
  from (select id from public.tenants) t, generate_series(1, 3) n;

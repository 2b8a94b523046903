"""Tenant isolation (SEC-001) through every API role and everything the API exposes.

Each case opens ONE path to another tenant's rows (or exposes a SECURITY DEFINER function the matrix cannot
judge); only SEC-001 may go red. The objects are created so nothing else notices: RLS stays enabled on every
table (SEC-002), and the views / functions live in `public` with the grants Supabase's own advisors do not
report as ERROR (SEC-006) — the security-definer view case is the exception the advisors also flag.
"""

from violation_cases import Case

_DROP_LOADS_FOR = "drop function if exists public.violation_loads_for(uuid)"

CASES = [
    Case(name="SEC-001/anon-policy", red={"SEC-001": "fail"},
         inject="create policy violation_anon_read on public.loads for select to anon using (true)",
         undo="drop policy if exists violation_anon_read on public.loads",
         why="the public anon key reads every tenant's loads: no JWT tenant at all, any row is a leak"),
    Case(name="SEC-001/security-definer-view", red={"SEC-001": "fail", "SEC-006": "fail"},
         inject="create view public.violation_all_invoices as select * from public.invoices; "
                "revoke all on public.violation_all_invoices from anon; "
                "grant select on public.violation_all_invoices to authenticated",
         undo="drop view if exists public.violation_all_invoices",
         why="a view without security_invoker reads as its owner: RLS of invoices does not apply"),
    Case(name="SEC-001/matview", red={"SEC-001": "fail"},
         inject="create materialized view public.violation_load_lanes as "
                "select tenant_id, origin, destination, rate_cents from public.loads; "
                "revoke all on public.violation_load_lanes from anon; "
                "grant select on public.violation_load_lanes to authenticated",
         undo="drop materialized view if exists public.violation_load_lanes",
         why="materialized views cannot have RLS: one with tenant_id granted to users leaks every tenant"),
    Case(name="SEC-001/definer-function-with-argument", red={"SEC-001": "fail"},
         inject="create function public.violation_loads_for(p_tenant uuid) returns setof public.loads "
                "language sql stable security definer set search_path = '' as "
                "$$ select * from public.loads where tenant_id = p_tenant $$; "
                "revoke all on function public.violation_loads_for(uuid) from public, anon; "
                "grant execute on function public.violation_loads_for(uuid) to authenticated",
         undo=_DROP_LOADS_FOR,
         why="an RPC taking a tenant id and trusting it: called with another tenant's id it returns its rows"),
    Case(name="SEC-001/policy-trusts-missing-claim", red={"SEC-001": "fail"},
         inject="create policy violation_missing_claim on public.rate_quotes for select to authenticated "
                "using (tenant_id::text = coalesce(auth.jwt() ->> 'tenant_id', tenant_id::text) "
                "and (select public.can_access_portal('rates')))",
         undo="drop policy if exists violation_missing_claim on public.rate_quotes",
         why="a token without tenant_id reads every tenant (well-formed users keep their portals: SEC-003 green)"),
    Case(name="SEC-001/uncallable-definer-function", red={"SEC-001": "fail"},
         inject="create type public.violation_filter as (tenant uuid, status text); "
                "create function public.violation_search(p public.violation_filter) returns bigint "
                "language sql stable security definer set search_path = '' as "
                "$$ select count(*) from public.loads where tenant_id = (p).tenant $$; "
                "revoke all on function public.violation_search(public.violation_filter) from public, anon; "
                "grant execute on function public.violation_search(public.violation_filter) to authenticated",
         undo="drop function if exists public.violation_search(public.violation_filter); "
              "drop type if exists public.violation_filter",
         why="a SECURITY DEFINER RPC the matrix cannot call with generated arguments is not a pass"),
    Case(name="ok/uncallable-definer-function-allow-listed", red={},
         inject="create type public.violation_filter as (tenant uuid, status text); "
                "create function public.violation_search(p public.violation_filter) returns bigint "
                "language sql stable security definer set search_path = '' as "
                "$$ select count(*) from public.loads where tenant_id = (p).tenant "
                "and tenant_id = (select ops.jwt_tenant()) $$; "
                "revoke all on function public.violation_search(public.violation_filter) from public, anon; "
                "grant execute on function public.violation_search(public.violation_filter) to authenticated",
         undo="drop function if exists public.violation_search(public.violation_filter); "
              "drop type if exists public.violation_filter",
         args=("--opsproof-policy=tests/violation_cases/tenancy_allowlist.toml",),
         why="the same kind of function, allow-listed with a reason in the policy, is accepted"),
    Case(name="ok/invoker-view-and-safe-definer-function", red={},
         inject="create view public.violation_my_loads with (security_invoker = true) as "
                "select id, tenant_id, reference, status from public.loads; "
                "grant select on public.violation_my_loads to authenticated; "
                "create function public.violation_loads_for(p_tenant uuid) returns setof public.loads "
                "language sql stable security definer set search_path = '' as "
                "$$ select * from public.loads where tenant_id = p_tenant "
                "and tenant_id = (select ops.jwt_tenant()) and (select public.can_access_portal('dispatch')) $$; "
                "revoke all on function public.violation_loads_for(uuid) from public, anon; "
                "grant execute on function public.violation_loads_for(uuid) to authenticated",
         undo="drop view if exists public.violation_my_loads; " + _DROP_LOADS_FOR,
         why="a security-invoker view and a definer RPC that checks the caller's tenant are not leaks"),
]

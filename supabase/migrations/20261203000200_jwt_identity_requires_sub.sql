-- opsproof ops contract: a request acts for a tenant only with a well-formed identity.
-- See docs/contract.md ("JWT claims", "Tenant isolation matrix").
--
-- Every token Supabase Auth issues to a user carries `sub` (the user's uuid). A token with tenant and role
-- claims but without a user (hand-minted with the JWT secret, or a bug in a custom access token hook) is
-- not a user of that tenant: it acts for no tenant and reaches no portal. Before this migration
-- ops.jwt_tenant() / ops.jwt_app_role() ignored `sub`, so such a token read its claimed tenant's rows.
-- Same signatures and semantics otherwise (the policies reference these functions, so they pick this up).

create or replace function ops.jwt_tenant() returns uuid
language sql stable security invoker set search_path = '' as $$
  select case when c.v ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
               and coalesce(auth.jwt() ->> 'sub', '') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then c.v::uuid end
    from (select coalesce(nullif(auth.jwt() ->> 'tenant_id', ''),
                          nullif(auth.jwt() -> 'app_metadata' ->> 'tenant_id', '')) as v) c
$$;
comment on function ops.jwt_tenant() is
  'The tenant of the current request: JWT claim tenant_id (or app_metadata.tenant_id); null when absent or not a '
  'uuid, or when the token names no user (sub missing or not a uuid).';

create or replace function ops.jwt_app_role() returns text
language sql stable security invoker set search_path = '' as $$
  select case when coalesce(auth.jwt() ->> 'sub', '') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then coalesce(nullif(auth.jwt() ->> 'app_role', ''),
                            nullif(auth.jwt() -> 'app_metadata' ->> 'app_role', '')) end
$$;
comment on function ops.jwt_app_role() is
  'The human role of the current request: JWT claim app_role (or app_metadata.app_role); null when absent, or '
  'when the token names no user (sub missing or not a uuid).';

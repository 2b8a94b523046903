"""Tenancy, portals x roles, RLS everywhere and the audit hash chain, against real Postgres.

Covers supabase/migrations/*_tenancy_portals.sql and *_audit_chain.sql, and role-matrix.md.

Needs OPSPROOF_TEST_DSN (a superuser DSN on a cluster bootstrapped with src/opsproof/stack/sql/bootstrap.sql);
without it the module FAILS — isolation that cannot be checked is not a pass. The `db` fixture below creates
its own scratch database (bootstrap + every migration applied), and drops it at the end; it is the one piece
the lead swaps for a shared fixture (it must yield a superuser DSN of a database with the migrations applied).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "supabase" / "migrations"
BOOTSTRAP = REPO / "src" / "opsproof" / "stack" / "sql" / "bootstrap.sql"
ROLE_MATRIX = REPO / "role-matrix.md"

T1, T2, T3, T4 = TENANTS = tuple(f"00000000-0000-0000-0000-00000000000{i}" for i in (1, 2, 3, 4))
ROLES = ("super_admin", "tenant_admin", "ops_manager", "dispatcher", "finance_manager", "analyst", "developer",
         "viewer")
ZEROS = "0" * 64


# -- database access (the only fixture that knows where the database comes from) -------------------

@pytest.fixture(scope="module")
def db() -> Iterator[str]:
    """Superuser DSN of a scratch database with bootstrap + all migrations applied; dropped afterwards."""
    admin = os.environ.get("OPSPROOF_TEST_DSN")
    if not admin:
        pytest.fail("OPSPROOF_TEST_DSN is not set: these tests need a bootstrapped PostgreSQL (see module docstring)")
    name = f"test_tenancy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BOOTSTRAP.read_text())
            for path in sorted(MIGRATIONS.glob("*.sql")):
                conn.execute(path.read_text())
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def conn(db) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


@contextmanager
def as_request(conn: psycopg.Connection, role: str, claims: dict | None = None) -> Iterator[psycopg.Connection]:
    """What PostgREST does per request: `set local role`, request.jwt.claims. Always rolled back."""
    full = dict(claims or {}, role=role)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(full),))
        yield conn


def user(tenant: str, app_role: str) -> dict:
    return {"sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{app_role}")), "role": "authenticated",
            "tenant_id": tenant, "app_role": app_role}


def count(conn: psycopg.Connection, relation: str, where: str = "true", params=()) -> int:
    schema, table = relation.split(".")
    q = sql.SQL("select count(*) from {}.{} where ").format(sql.Identifier(schema), sql.Identifier(table))
    return conn.execute(q + sql.SQL(where), params).fetchone()[0]


def count_or_denied(conn: psycopg.Connection, relation: str) -> int:
    """Row count, or 0 when the role may not even select (permission denied); a savepoint keeps the txn alive."""
    try:
        with conn.transaction():
            return count(conn, relation)
    except psycopg.errors.InsufficientPrivilege:
        return 0


def all_tables(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname in ('public', 'ops') and c.relkind in ('r', 'p') order by 1")]


def portal_tables(conn: psycopg.Connection, scope: str | None = None) -> list[tuple[str, str, str, str]]:
    return conn.execute("select relation, portal_key, scope, access from public.portal_tables "
                        "where %s::text is null or scope = %s order by relation", (scope, scope)).fetchall()


def parse_role_matrix(text: str) -> tuple[list[str], dict[str, str], set[tuple[str, str]]]:
    """The first markdown table of role-matrix.md -> (role columns, {portal: name}, {(portal, role) with Y})."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, sep, body = rows[0], rows[1], rows[2:]
    assert header[:2] == ["portal", "name"] and all(set(c) <= {"-", ":"} for c in sep), header
    roles = header[2:]
    names: dict[str, str] = {}
    allowed: set[tuple[str, str]] = set()
    for r in body:
        assert len(r) == len(header), r
        names[r[0]] = r[1]
        for role, cell in zip(roles, r[2:]):
            assert cell in ("Y", "-"), f"cell {r[0]}/{role} is {cell!r}: must be exactly Y or -"
            if cell == "Y":
                allowed.add((r[0], role))
    return roles, names, allowed


# -- RLS on every table --------------------------------------------------------------------------

def test_rls_enabled_on_every_table_including_partitions(conn):
    # partitions made later by the cadence must be covered too
    for table in ("requests", "health_probes", "spans", "agent_logs"):
        conn.execute("select ops.ensure_partitions(%s, current_date + 20, current_date + 21)", (table,))
    rows = conn.execute(
        "select n.nspname || '.' || c.relname, c.relkind, c.relrowsecurity, c.relispartition "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname in ('public', 'ops') and c.relkind in ('r', 'p')").fetchall()
    without = sorted(r[0] for r in rows if not r[2])
    assert not without, f"tables without row level security: {without}"
    assert sum(1 for r in rows if r[3]) >= 4 * 10, "expected the daily partitions to be checked as well"
    assert {"public.loads", "public.invoices", "ops.audit_log", "ops.requests", "ops.idempotency_keys"} <= {
        r[0] for r in rows}


def test_every_portal_table_has_its_policy(conn):
    for relation, portal, _scope, access in portal_tables(conn):
        schema, table = relation.split(".")
        pol = conn.execute("select cmd, roles::text[], qual from pg_policies where schemaname = %s and tablename = %s "
                           "and policyname = %s", (schema, table, f"portal_{portal}_{access}")).fetchone()
        assert pol, f"{relation}: policy portal_{portal}_{access} missing"
        assert pol[1] == ["authenticated"], pol
        assert f"can_access_portal('{portal}'" in pol[2], pol[2]
    # no policy anywhere grants anything to anon or public
    leaks = conn.execute("select schemaname || '.' || tablename, policyname from pg_policies "
                         "where schemaname in ('public', 'ops') and not roles <@ array['authenticated']::name[]"
                         ).fetchall()
    assert not leaks, f"policies for roles other than authenticated: {leaks}"


# -- tenant isolation ------------------------------------------------------------------------------

TENANT_TABLES = ["public.tenants", "public.carriers", "public.drivers", "public.vehicles", "public.loads",
                 "public.shipments", "public.invoices", "public.rate_quotes"]


def test_tenant_tables_are_all_covered(conn):
    with_tenant = {r[0] for r in conn.execute(
        "select table_schema || '.' || table_name from information_schema.columns "
        "where table_schema = 'public' and column_name = 'tenant_id'")}
    assert with_tenant | {"public.tenants"} == set(TENANT_TABLES)
    assert {r[0] for r in portal_tables(conn, "tenant")} | {"public.tenants"} == set(TENANT_TABLES)


@pytest.mark.parametrize("relation", TENANT_TABLES)
@pytest.mark.parametrize("me", [T1, T3])
def test_tenant_sees_own_rows_only(conn, relation, me):
    key = "id" if relation == "public.tenants" else "tenant_id"
    others = [t for t in TENANTS if t != me]
    with as_request(conn, "service_role"):
        assert count(conn, relation, f"{key} = any(%s::uuid[])", (others,)) > 0, "seed has no other-tenant rows"
    with as_request(conn, "authenticated", user(me, "super_admin")):
        assert count(conn, relation, f"{key} = %s", (me,)) > 0, f"tenant {me} reads none of its own {relation}"
        assert count(conn, relation, f"{key} <> %s", (me,)) == 0, f"tenant {me} reads another tenant's {relation}"


@pytest.mark.parametrize("relation", TENANT_TABLES)
def test_no_tenant_claim_sees_nothing(conn, relation):
    for claims in ({"sub": str(uuid.uuid4()), "app_role": "super_admin"},
                   {"sub": str(uuid.uuid4()), "app_role": "super_admin", "tenant_id": "not-a-uuid"},
                   {"sub": str(uuid.uuid4()), "tenant_id": T1}):
        with as_request(conn, "authenticated", claims):
            assert count(conn, relation) == 0, (relation, claims)


def test_app_metadata_claims_are_honoured_user_metadata_is_not(conn):
    with as_request(conn, "authenticated", {"sub": str(uuid.uuid4()),
                                            "app_metadata": {"tenant_id": T2, "app_role": "dispatcher"}}):
        assert count(conn, "public.loads") == count(conn, "public.loads", "tenant_id = %s", (T2,)) > 0
    with as_request(conn, "authenticated", {"user_metadata": {"tenant_id": T2, "app_role": "super_admin"}}):
        assert count(conn, "public.loads") == 0


@pytest.mark.parametrize("relation", TENANT_TABLES)
def test_a_token_without_a_user_acts_for_no_tenant(conn, relation):
    """sub missing or not a uuid: tenant and role claims are ignored (migration 20261203000200)."""
    for claims in ({"tenant_id": T1, "app_role": "super_admin"},
                   {"sub": "", "tenant_id": T1, "app_role": "super_admin"},
                   {"sub": "service-x", "tenant_id": T1, "app_role": "super_admin"}):
        with as_request(conn, "authenticated", claims):
            assert count(conn, relation) == 0, (relation, claims)
            assert conn.execute("select ops.jwt_tenant(), ops.jwt_app_role()").fetchone() == (None, None)
    with as_request(conn, "authenticated", user(T1, "super_admin")):
        assert count(conn, relation) > 0


def test_tenant_cannot_write_into_or_change_another_tenant(conn):
    with as_request(conn, "authenticated", user(T1, "dispatcher")):
        cur = conn.execute("update public.loads set status = 'cancelled' where tenant_id = %s", (T2,))
        assert cur.rowcount == 0
        cur = conn.execute("delete from public.loads where tenant_id = %s", (T2,))
        assert cur.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with conn.transaction():
                conn.execute("insert into public.loads (tenant_id, reference, origin, destination) "
                             "values (%s, 'LD-X', 'A', 'B')", (T2,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            with conn.transaction():  # moving an own row to another tenant
                conn.execute("update public.loads set tenant_id = %s where tenant_id = %s", (T2, T1))
        # own tenant: allowed
        conn.execute("insert into public.loads (tenant_id, reference, origin, destination) "
                     "values (%s, 'LD-OWN', 'A', 'B')", (T1,))
        assert count(conn, "public.loads", "reference = 'LD-OWN'") == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                conn.execute("truncate public.loads")


def test_ops_rows_of_other_tenants_are_invisible(conn):
    with conn.transaction(force_rollback=True):
        conn.execute("insert into ops.requests (ts, tenant_id, route, status, duration_ms) values "
                     "(now(), %s, '/a', 200, 1), (now(), %s, '/b', 200, 1), (now(), null, '/health', 200, 1)",
                     (T1, T2))
        conn.execute("insert into ops.outbox (tenant_id, topic) values (%s, 't'), (%s, 't'), (null, 't')", (T1, T2))
        conn.execute("insert into ops.agent_tasks (tenant_id, kind) values (%s, 'k'), (%s, 'k')", (T1, T2))
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(user(T1, "ops_manager")),))
        for relation in ("ops.requests", "ops.outbox", "ops.agent_tasks"):
            assert count(conn, relation, "tenant_id = %s", (T1,)) > 0, relation
            assert count(conn, relation, "tenant_id <> %s", (T1,)) == 0, relation
        assert count(conn, "ops.requests", "tenant_id is null") == 1  # platform rows: visible to the control tower


# -- anon, service_role ----------------------------------------------------------------------------

def test_anon_sees_nothing_anywhere(conn):
    tables = all_tables(conn)
    with as_request(conn, "anon"):
        seen = {t: n for t in tables if (n := count_or_denied(conn, t))}
        assert not seen, f"anon reads rows: {seen}"
        assert conn.execute("select public.can_access_portal('customer')").fetchone()[0] is False
    with as_request(conn, "anon", {"tenant_id": T1, "app_role": "super_admin"}):  # forged claims, anon role
        seen = {t: n for t in tables if (n := count_or_denied(conn, t))}
        assert not seen, f"anon with forged claims reads rows: {seen}"


def test_service_role_sees_everything(conn):
    tables = all_tables(conn)
    owner = {t: count(conn, t) for t in tables}
    assert all(owner[t] > 0 for t in TENANT_TABLES)
    with as_request(conn, "service_role"):
        as_service = {t: count(conn, t) for t in tables}
    assert as_service == owner


# -- the isolation matrix (measure/tenancy.py, SEC-001) ----------------------------------------------

@pytest.fixture
def target(db):
    from opsproof.target.db import Target

    t = Target(db)
    yield t
    t.close()


@contextmanager
def injected(conn: psycopg.Connection, create: str, drop: str) -> Iterator[None]:
    conn.execute(create)
    try:
        yield
    finally:
        conn.execute(drop)


def matrix(target, **kw):
    from opsproof.measure import tenancy

    return tenancy.cross_tenant_matrix(target, **kw)


def test_matrix_walks_every_principal_and_path_and_is_clean(target):
    m = matrix(target)
    assert not m.failures(), m.failures()[:5]
    # this scratch database has no telemetry: its ops tables' zeros are unproven (fail closed), public's are proven
    assert not [k for k in m.unproven() if not k.startswith("ops.")], m.unproven()[:5]
    assert any(k.startswith("ops.requests|") for k in m.unproven())
    kinds = {p.kind for p in m.principals}
    assert kinds == {"owner", "stranger", "anon", "malformed"}
    assert sum(p.kind == "owner" for p in m.principals) == 4 * 8
    names = {p.name for p in m.principals}
    for bad in ("no-tenant_id", "tenant_id-not-uuid", "tenant_id-empty", "tenant_id-number", "no-app_role",
                "unknown-app_role", "no-sub"):
        assert f"malformed:{bad}" in names
    probed = {p.name: p for p in m.api_paths if p.status == "probed"}
    assert set(TENANT_TABLES) <= set(probed)
    assert {"ops.requests", "ops.spans"} <= set(probed), "partitioned parents are probed"
    assert probed["ops.requests"].kind == "partitioned table"
    assert any(n.startswith("public.can_access_portal(") for n in probed)
    assert any(n.startswith("ops.slo_snapshot(") for n in probed), "functions with arguments are called"
    statuses = {p.name: p.status for p in m.api_paths}
    assert statuses["public.portals"] == "not tenant-scoped"
    assert not [p for p in m.api_paths if p.kind == "function" and p.security_definer], "the contract has none"
    ev = json.loads(json.dumps(m.evidence()))
    assert ev["principals"] and ev["paths"] and ev["cells"] > 1000 and ev["leaks"] == []


def test_matrix_leaves_the_target_unchanged(target, conn):
    before = conn.execute("select count(*) from pg_class where relnamespace in "
                          "('public'::regnamespace, 'ops'::regnamespace)").fetchone()[0]
    with injected(conn, "create table public.m_calls (n int); alter table public.m_calls enable row level security; "
                        "create function public.m_bump(p_tenant uuid) returns int language sql volatile "
                        "security invoker as $$ insert into public.m_calls values (1) returning 1 $$; "
                        "grant insert on public.m_calls to authenticated; "
                        "create policy m_ins on public.m_calls for insert to authenticated with check (true)",
                  "drop function public.m_bump(uuid); drop table public.m_calls"):
        matrix(target)
        assert conn.execute("select count(*) from public.m_calls").fetchone()[0] == 0
    assert conn.execute("select count(*) from pg_class where relnamespace in "
                        "('public'::regnamespace, 'ops'::regnamespace)").fetchone()[0] == before


def _leaks_by(m, path_prefix: str) -> set[str]:
    return {x["kind"] for x in m.leaks if x["path"].startswith(path_prefix)}


def test_matrix_catches_anon_and_a_policy_trusting_a_missing_claim(target, conn):
    with injected(conn, "create policy t_anon on public.drivers for select to anon using (true)",
                  "drop policy t_anon on public.drivers"):
        m = matrix(target)
    assert _leaks_by(m, "public.drivers") == {"anon"}
    with injected(conn, "create policy t_trust on public.vehicles for select to authenticated using "
                        "(tenant_id::text = coalesce(auth.jwt() ->> 'tenant_id', tenant_id::text))",
                  "drop policy t_trust on public.vehicles"):
        m = matrix(target)
    assert _leaks_by(m, "public.vehicles") == {"malformed"}
    assert {x["principal"] for x in m.leaks} >= {"malformed:no-tenant_id", "malformed:no-claims"}


def test_matrix_catches_definer_views_matviews_and_definer_rpcs(target, conn):
    with injected(conn, "create view public.t_v as select * from public.shipments; "
                        "grant select on public.t_v to authenticated",
                  "drop view public.t_v"):
        m = matrix(target)
    path = next(p for p in m.api_paths if p.name == "public.t_v")
    assert path.kind == "view" and path.security_definer
    assert "owner" in _leaks_by(m, "public.t_v")
    with injected(conn, "create view public.t_iv with (security_invoker = true) as select * from public.shipments; "
                        "grant select on public.t_iv to authenticated",
                  "drop view public.t_iv"):
        m = matrix(target)
    assert not m.failures() and not [k for k in m.unproven() if k.startswith("public.")]
    with injected(conn, "create materialized view public.t_mv as select tenant_id, id from public.carriers; "
                        "grant select on public.t_mv to authenticated",
                  "drop materialized view public.t_mv"):
        m = matrix(target)
    assert next(p for p in m.api_paths if p.name == "public.t_mv").kind == "matview"
    assert "owner" in _leaks_by(m, "public.t_mv")
    with injected(conn, "create function public.t_rows(p uuid) returns setof public.invoices language sql stable "
                        "security definer set search_path = '' as $$ select * from public.invoices "
                        "where tenant_id = p $$; grant execute on function public.t_rows(uuid) to authenticated",
                  "drop function public.t_rows(uuid)"):
        m = matrix(target)
    assert "owner" in _leaks_by(m, "public.t_rows(")


def test_matrix_judges_scalar_definer_functions_by_ids_and_differentially(target, conn):
    # jsonb of rows with their ids: the other tenant's ids in the output are a leak
    with injected(conn, "create function public.t_json(p uuid) returns jsonb language sql stable security definer "
                        "set search_path = '' as $$ select jsonb_agg(jsonb_build_object('id', l.id, 'ref', "
                        "l.reference)) from public.loads l where l.tenant_id = p $$; "
                        "grant execute on function public.t_json(uuid) to authenticated",
                  "drop function public.t_json(uuid)"):
        m = matrix(target)
    assert "owner" in _leaks_by(m, "public.t_json(")
    # a bare count that everyone gets for any tenant id: a stranger is told each tenant's own answer
    with injected(conn, "create function public.t_count(p uuid) returns bigint language sql stable "
                        "security definer set search_path = '' as $$ select count(*) from public.loads "
                        "where tenant_id = p $$; grant execute on function public.t_count(uuid) to authenticated",
                  "drop function public.t_count(uuid)"):
        m = matrix(target)
    assert "stranger" in _leaks_by(m, "public.t_count(") and "owner" in _leaks_by(m, "public.t_count(")
    # a count that only the owner and one foreign role get: the differential sees the foreign one
    with injected(conn, "create function public.t_count(p uuid) returns bigint language sql stable "
                        "security definer set search_path = '' as $$ select count(*) from public.loads "
                        "where tenant_id = p and (p = (select ops.jwt_tenant()) or (select ops.jwt_app_role()) = "
                        "'analyst' and (select ops.jwt_tenant()) is not null) $$; "
                        "grant execute on function public.t_count(uuid) to authenticated",
                  "drop function public.t_count(uuid)"):
        m = matrix(target)
    got = {(x["kind"], x["as_role"], x["how"].split(":")[0]) for x in m.leaks
           if x["path"].startswith("public.t_count(")}
    assert got == {("stranger", "analyst", "differential"), ("owner", "analyst", "differential")}, got
    # the same count, checked against the caller's tenant: judged (differentially) and clean
    with injected(conn, "create function public.t_count(p uuid) returns bigint language sql stable "
                        "security definer set search_path = '' as $$ select count(*) from public.loads "
                        "where tenant_id = p and p = (select ops.jwt_tenant()) $$; "
                        "grant execute on function public.t_count(uuid) to authenticated",
                  "drop function public.t_count(uuid)"):
        m = matrix(target)
    assert not m.failures(), m.failures()[:3]
    assert "differential" in next(v for k, v in m.judged_by.items() if k.startswith("public.t_count("))


def test_definer_functions_the_matrix_cannot_judge_fail_unless_allow_listed(target, conn):
    create = ("create type public.t_f as (t uuid); "
              "create function public.t_opaque(p public.t_f) returns int language sql stable security definer "
              "set search_path = '' as $$ select 1 $$; "
              "create function public.t_const() returns int language sql stable security definer "
              "set search_path = '' as $$ select 42 $$; "
              "grant execute on function public.t_opaque(public.t_f), public.t_const() to authenticated")
    drop = "drop function public.t_opaque(public.t_f); drop function public.t_const(); drop type public.t_f"
    with injected(conn, create, drop):
        m = matrix(target)
        unjudged = {x["path"].split("(")[0]: x["why"] for x in m.unjudged}
        assert set(unjudged) == {"public.t_opaque", "public.t_const"}, unjudged
        assert "cannot be called" in unjudged["public.t_opaque"]
        m = matrix(target, allowlist={"public.t_opaque": "fixture: takes a filter, returns a constant",
                                      "public.t_const()": "fixture: returns a constant, reads nothing"})
        assert not m.unjudged and not m.failures()
        assert {x["path"].split("(")[0] for x in m.allowlisted} == {"public.t_opaque", "public.t_const"}


def test_a_path_no_owner_reads_is_unproven_not_a_pass(target, conn):
    with injected(conn, "create policy t_none on public.rate_quotes as restrictive for select to authenticated "
                        "using (false)",
                  "drop policy t_none on public.rate_quotes"):
        m = matrix(target)
    assert not m.failures()
    assert any(k.startswith("public.rate_quotes|") for k in m.unproven())


def test_policy_isolation_settings_are_validated(tmp_path):
    from opsproof import policy
    from opsproof.errors import UsageError

    bad = tmp_path / "p.toml"
    bad.write_text('[security]\nisolation_allowlist = { "public.f" = "" }\n')
    with pytest.raises(UsageError, match="reason"):
        policy.load(bad)
    bad.write_text('[security]\nisolation_allowlist = { "not a name" = "a good reason here" }\n')
    with pytest.raises(UsageError, match="schema.name"):
        policy.load(bad)
    bad.write_text('[security]\nexposed_schemas = []\n')
    with pytest.raises(UsageError):
        policy.load(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text('[security]\nisolation_allowlist = { "public.f(uuid)" = "returns only public data" }\n')
    assert policy.load(ok).security.isolation_allowlist == {"public.f(uuid)": "returns only public data"}


# -- portals x roles -------------------------------------------------------------------------------

def test_portal_roles_equal_role_matrix(conn):
    roles, names, allowed = parse_role_matrix(ROLE_MATRIX.read_text())
    assert roles == list(ROLES)
    assert len(names) == 20
    db_portals = dict(conn.execute("select key, name from public.portals order by ord").fetchall())
    assert list(db_portals) == list(names) and db_portals == names
    assert [r[0] for r in conn.execute("select key from public.app_roles order by ord")] == list(ROLES)
    assert set(conn.execute("select portal_key, app_role from public.portal_roles").fetchall()) == allowed
    matrix = conn.execute("select portal, app_role, allowed from public.portal_access_matrix()").fetchall()
    assert len(matrix) == 20 * 8
    assert [(p, r) for p, r, _ in matrix] == [(p, r) for p in names for r in ROLES]  # role-matrix.md order
    assert {(p, r) for p, r, ok in matrix if ok} == allowed


def test_role_matrix_shape_is_sensible():
    _roles, names, allowed = parse_role_matrix(ROLE_MATRIX.read_text())
    for required in ("Super Admin", "Carrier", "Shipper", "Broker", "Driver", "Owner-Operator", "Analytics",
                     "Financial", "Dispatch"):
        assert required in names.values(), required
    reach = {r: {p for p, role in allowed if role == r} for r in ROLES}
    assert reach["super_admin"] == set(names), "super_admin reaches every portal"
    assert {p for p, _ in allowed} == set(names), "every portal is reachable by someone"
    assert len(reach["viewer"]) <= 3 and all(len(reach["viewer"]) <= len(v) for v in reach.values())
    assert ("super_admin", "super_admin") in allowed and len([1 for p, _ in allowed if p == "super_admin"]) == 1


@pytest.mark.parametrize("app_role", ROLES)
def test_can_access_portal_follows_the_matrix(conn, app_role):
    _roles, names, allowed = parse_role_matrix(ROLE_MATRIX.read_text())
    with as_request(conn, "authenticated", user(T1, app_role)):
        got = dict(conn.execute("select key, public.can_access_portal(key) from public.portals").fetchall())
    assert got == {p: (p, app_role) in allowed for p in names}


@pytest.mark.parametrize("app_role", ROLES)
def test_role_sees_a_table_only_through_its_portal(conn, app_role):
    _roles, _names, allowed = parse_role_matrix(ROLE_MATRIX.read_text())
    rows = portal_tables(conn)
    with conn.transaction(force_rollback=True):  # make sure every ops table has rows to (not) see
        conn.execute("select ops.audit('test', 'seed', 'x', 'y', 'r')")
        conn.execute("insert into ops.requests (ts, route, status, duration_ms) values (now(), '/', 200, 1)")
        conn.execute("insert into ops.health_probes (ts, region, ok) values (now(), 'primary', true)")
        conn.execute("insert into ops.spans (trace_id, span_id, name, started_at) values ('t', 's', 'n', now())")
        conn.execute("insert into ops.agent_logs (ts, message) values (now(), 'm')")
        conn.execute("insert into ops.outbox (topic) values ('t')")
        conn.execute("insert into ops.agent_tasks (kind) values ('k')")
        conn.execute("insert into ops.dlq (payload) values ('{}')")
        conn.execute("insert into ops.dlq_replays (items, bytes) values (1, 1)")
        conn.execute("insert into ops.ci_events (branch, kind) values ('main', 'build')")
        conn.execute("insert into ops.alerts (severity, source, title) values ('info', 's', 't')")
        conn.execute("insert into ops.incidents (level, type, description) values ('low', 't', 'd')")
        conn.execute("insert into ops.backups (kind, location, bytes) values ('full', '/x', 1)")
        conn.execute("insert into ops.heartbeats (component) values ('test')")
        conn.execute("insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at) "
                     "values ('dlq.replayEnabled', 'false', 'test', 'run', 'r', now() + interval '1 minute')")
        empty = [t for t, *_ in rows if count(conn, t) == 0]
        assert not empty, f"no rows to prove visibility with: {empty}"
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(user(T1, app_role)),))
        for relation, portal, _scope, _access in rows:
            n = count(conn, relation)
            if (portal, app_role) in allowed:
                assert n > 0, f"{app_role} reaches portal {portal} but reads no rows of {relation}"
            else:
                assert n == 0, f"{app_role} lacks portal {portal} but reads {n} rows of {relation}"
        for closed in ("ops.idempotency_keys", "ops.ingest_events", "ops.service_accounts"):
            assert count(conn, closed) == 0, closed


def test_portal_reference_tables_are_read_only_for_users(conn):
    with as_request(conn, "authenticated", user(T1, "super_admin")):
        for stmt in ("insert into public.portal_roles values ('financial', 'viewer')",
                     "delete from public.portal_roles", "update public.app_roles set name = 'x'",
                     "insert into public.tenants (name, slug) values ('x', 'x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with conn.transaction():
                    conn.execute(stmt)


# -- audit chain -----------------------------------------------------------------------------------

def verify(conn) -> tuple:
    return conn.execute("select ok, rows_checked, first_bad_id, reason from ops.verify_audit_chain()").fetchone()


def append(conn, n: int, tag: str) -> list[int]:
    return [conn.execute("select ops.audit(%s, %s, %s, %s, %s, %s)",
                         ("test@", f"test.{tag}", f"ops.test/{i}", f"reason {i}", f"run-{tag}",
                          json.dumps({"i": i, "tag": tag, "nested": {"b": [1, 2], "a": None}}))).fetchone()[0]
            for i in range(n)]


def test_audit_chain_links_and_verifies(conn):
    first = conn.execute("select id, prev_hash, action from ops.audit_log order by id limit 1").fetchone()
    assert first[1] == ZEROS and first[2] == "audit.genesis"
    with as_request(conn, "service_role"):
        ids = append(conn, 5, "link")
        conn.execute("insert into ops.audit_log (actor, action, target, reason, run_id) "
                     "values ('svc', 'plain.insert', 't', 'r', 'run')")  # plain insert: the trigger chains it
        rows = conn.execute("select id, prev_hash, hash from ops.audit_log order by id").fetchall()
        assert ids == sorted(ids)
        for prev, row in zip(rows, rows[1:]):
            assert row[1] == prev[2], f"row {row[0]} does not link to {prev[0]}"
        ok, checked, bad, reason = verify(conn)
        assert (ok, bad, reason) == (True, None, None) and checked == len(rows)


def test_audit_chain_detects_a_modified_row(conn):
    ids = append(conn, 5, "tamper")
    assert verify(conn)[0] is True
    victim = ids[2]
    with conn.transaction(force_rollback=True):  # as the owner (the trigger lets the owner through)
        conn.execute("update ops.audit_log set reason = 'nothing to see' where id = %s", (victim,))
        ok, _n, bad, reason = verify(conn)
        assert (ok, bad) == (False, victim) and "modified" in reason
    with conn.transaction(force_rollback=True):  # a forger who also recomputes the row's own hash
        conn.execute("set local session_replication_role = replica")  # superuser: no triggers at all
        conn.execute("update ops.audit_log a set detail = '{\"forged\": true}', hash = ops.audit_hash(a.id, a.at, "
                     "a.actor, a.action, a.target, a.reason, a.run_id, a.incident_id, '{\"forged\": true}', "
                     "a.prev_hash) where id = %s", (victim,))
        ok, _n, bad, reason = verify(conn)
        assert (ok, bad) == (False, ids[3]) and "prev_hash" in reason
    with conn.transaction(force_rollback=True):  # a removed row
        conn.execute("delete from ops.audit_log where id = %s", (victim,))
        ok, _n, bad, reason = verify(conn)
        assert (ok, bad) == (False, ids[3]) and "prev_hash" in reason
    assert verify(conn)[0] is True


def test_audit_log_is_append_only_for_the_api_roles(conn):
    append(conn, 1, "ro")
    for role in ("service_role", "authenticated", "anon"):
        claims = user(T1, "super_admin") if role == "authenticated" else None
        with as_request(conn, role, claims):
            for stmt in ("update ops.audit_log set reason = 'x'", "delete from ops.audit_log",
                         "truncate ops.audit_log"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    with conn.transaction():
                        conn.execute(stmt)
    for role in ("authenticated", "anon"):  # only services append
        with as_request(conn, role, user(T1, "super_admin")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with conn.transaction():
                    conn.execute("select ops.audit('x', 'y', 'z', 'r', 'run')")
    # second layer: even a mistaken GRANT does not let a non-owner rewrite history
    with conn.transaction(force_rollback=True):
        conn.execute("grant update, delete on ops.audit_log to service_role")
        conn.execute("set local role service_role")
        for stmt in ("update ops.audit_log set reason = 'x'", "delete from ops.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                with conn.transaction():
                    conn.execute(stmt)
    assert verify(conn)[0] is True


def test_audit_readable_only_through_the_control_tower(conn):
    append(conn, 1, "read")
    with as_request(conn, "authenticated", user(T1, "ops_manager")):
        assert count(conn, "ops.audit_log") > 0
        assert conn.execute("select ok from ops.verify_audit_chain()").fetchone()[0] is True
    with as_request(conn, "authenticated", user(T1, "dispatcher")):
        assert count(conn, "ops.audit_log") == 0


def test_audit_appends_serialize_under_concurrency(db, conn):
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as c:
                for i in range(25):
                    with c.transaction():
                        c.execute("set local role service_role")
                        c.execute("select ops.audit('w', 'concurrent', %s, 'r', 'run-conc')", (f"w{k}/{i}",))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert count(conn, "ops.audit_log", "run_id = 'run-conc'") == 150
    ok, _n, bad, reason = verify(conn)
    assert ok, (bad, reason)


def test_audit_refuses_non_read_committed_appends(conn):
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
        with conn.transaction():
            conn.execute("set transaction isolation level repeatable read")
            conn.execute("select ops.audit('x', 'y', 'z', 'r', 'run')")


@pytest.fixture(scope="module", autouse=True)
def _embedded_stack(stack):
    """The session's embedded stack provides OPSPROOF_TEST_DSN (an already-set DSN is used as is)."""
    return stack

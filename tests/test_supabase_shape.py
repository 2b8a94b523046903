"""The embedded stack is shaped like a Supabase database, and the migrations went in through the CLI."""

from __future__ import annotations

import json

import psycopg

from opsproof.stack.supabase_cli import migration_files


def test_api_roles_like_supabase(admin_dsn):
    with psycopg.connect(admin_dsn) as conn:
        roles = {r[0]: r[1:] for r in conn.execute(
            "select rolname, rolcanlogin, rolbypassrls, rolinherit from pg_roles "
            "where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')").fetchall()}
        assert set(roles) == {"anon", "authenticated", "service_role", "authenticator"}
        assert roles["service_role"][1] is True, "service_role must bypass RLS"
        assert roles["anon"][1] is False and roles["authenticated"][1] is False
        assert roles["authenticator"][0] is True and roles["authenticator"][2] is False  # login, noinherit
        granted = {r[0] for r in conn.execute(
            "select b.rolname from pg_auth_members m join pg_roles a on a.oid = m.member "
            "join pg_roles b on b.oid = m.roleid where a.rolname = 'authenticator'")}
        assert {"anon", "authenticated", "service_role"} <= granted


def test_auth_functions_honour_request_jwt_claims(admin_dsn):
    claims = {"sub": "11111111-2222-3333-4444-555555555555", "role": "authenticated", "email": "a@b.c"}
    with psycopg.connect(admin_dsn) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            uid, role, jwt_doc = conn.execute("select auth.uid()::text, auth.role(), auth.jwt()").fetchone()
        assert uid == claims["sub"] and role == "authenticated" and jwt_doc["email"] == "a@b.c"
        # a pooled connection reads a previously set-local claim back as '' (not NULL): must not raise
        conn.execute("select set_config('request.jwt.claims', '', false)")
        assert conn.execute("select auth.uid(), auth.jwt()").fetchone() == (None, None)


def test_every_migration_file_was_applied_by_the_supabase_cli(admin_dsn):
    files = {p.name.split("_", 1)[0]: p.name.split("_", 1)[1].removesuffix(".sql") for p in migration_files()}
    with psycopg.connect(admin_dsn) as conn:
        applied = dict(conn.execute("select version, name from supabase_migrations.schema_migrations").fetchall())
    assert applied == files


def test_replica_is_streaming_from_the_primary(stack):
    st = stack.status()
    assert st["healthy"], st["problems"]
    assert [r["state"] for r in st["replication"]] == ["streaming"]


# -- hosted privileges: the suites run as a `postgres` that is NOT a superuser (docs/contract.md) ------------------

HOSTED_ATTRIBUTES = {"rolsuper": False, "rolinherit": True, "rolcreaterole": True, "rolcreatedb": True,
                     "rolcanlogin": True, "rolreplication": True, "rolbypassrls": True}
# hosted also has supabase_realtime_admin (the stack runs no Realtime); pg_create_subscription exists from PG 16
HOSTED_MEMBERSHIPS = {"anon": True, "authenticated": True, "service_role": True, "authenticator": True,
                      "pg_read_all_data": True, "pg_monitor": True, "pg_signal_backend": True}


def test_the_suites_role_is_hosted_postgres_not_a_superuser(admin_dsn):
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "postgres"
        cols = ", ".join(HOSTED_ATTRIBUTES)
        row = conn.execute(f"select {cols} from pg_roles where rolname = current_user").fetchone()
        assert dict(zip(HOSTED_ATTRIBUTES, row)) == HOSTED_ATTRIBUTES
        assert conn.execute("select current_setting('is_superuser')").fetchone()[0] == "off"
        members = dict(conn.execute(
            "select r.rolname, m.admin_option from pg_auth_members m join pg_roles r on r.oid = m.roleid "
            "where m.member = 'postgres'::regrole").fetchall())
        want = dict(HOSTED_MEMBERSHIPS)
        if conn.info.server_version >= 160000:
            want["pg_create_subscription"] = members.get("pg_create_subscription", False)
        assert members == want
        db_owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = current_database()")
        assert db_owner.fetchone()[0] == "supabase_admin"


def test_supabase_admin_is_the_only_superuser_and_only_the_stack_holds_its_dsn(stack):
    from psycopg.conninfo import conninfo_to_dict

    env = stack.env()
    assert conninfo_to_dict(env["SUPABASE_DB_URL"])["user"] == "postgres"
    assert conninfo_to_dict(env["OPSPROOF_SUPERUSER_DB_URL"])["user"] == "supabase_admin"
    assert stack.superuser_dsn() == env["OPSPROOF_SUPERUSER_DB_URL"]
    with psycopg.connect(stack.admin_dsn()) as conn:
        supers = [r[0] for r in conn.execute("select rolname from pg_roles where rolsuper order by 1")]
    assert supers == ["supabase_admin"]


def test_operations_hosted_supabase_does_not_support_are_refused(admin_dsn):
    """Supabase's docs list COPY ... FROM PROGRAM and ALTER USER ... WITH SUPERUSER as unsupported: so here."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for sql in ("copy (select 1) to program 'true'", "create temp table t (x int); copy t from program 'true'",
                    "alter role postgres with superuser"):
            try:
                conn.execute(sql)
            except psycopg.errors.InsufficientPrivilege:
                continue
            raise AssertionError(f"{sql!r} ran as postgres")


def test_what_the_product_needs_of_postgres_is_granted(admin_dsn):
    """The privileges docs/contract.md maps the product's operations to, and the one grant beyond hosted."""
    with psycopg.connect(admin_dsn) as conn:
        got = conn.execute(
            "select has_database_privilege('postgres', 'create'), has_schema_privilege('public', 'create'), "
            "has_schema_privilege('auth', 'create'), has_table_privilege('auth.users', 'select'), "
            "has_function_privilege('pg_catalog.pg_wal_replay_pause()', 'execute'), "
            "has_function_privilege('pg_catalog.pg_wal_replay_resume()', 'execute'), "
            "has_function_privilege('pg_catalog.pg_reload_conf()', 'execute'), "
            "(select count(*) from pg_extension where extnamespace = 'extensions'::regnamespace)").fetchone()
    assert got == (True, True, False, True, True, True, True, 2)


def test_docs_list_the_grants_the_embedded_stack_gives_beyond_hosted():
    """Every grant the bootstrap marks BEYOND HOSTED is spelled out in docs/contract.md's section."""
    import re

    from opsproof.paths import project_dir
    from opsproof.stack.manager import BOOTSTRAP_SQL

    sql = BOOTSTRAP_SQL.read_text()
    beyond = sql[sql.index("BEYOND HOSTED"):]
    grants = re.findall(r"^grant [^;]+;", beyond, flags=re.M | re.I)
    assert grants
    doc = (project_dir() / "docs" / "contract.md").read_text()
    section = doc[doc.index("## Privileges a hosted project must give"):]
    for g in grants:
        assert g.upper() in section.upper(), g

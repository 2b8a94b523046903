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

"""Fixtures for the project's own tests: one embedded stack per test session (small seed), torn down at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from opsproof.stack.manager import Stack



def _quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="session")
def stack_home():
    home = Path(tempfile.mkdtemp(prefix="opsproof-test-"))
    os.chmod(home, 0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_home) -> Stack:
    """A running embedded stack with 3 days of seeded telemetry; stopped and deleted after the session."""
    st = Stack(home=stack_home)
    st.up(seed_days=3, requests_per_day=5000, log=_quiet)
    # the SQL-level tests bootstrap scratch databases: that takes the bootstrap superuser (supabase_admin)
    os.environ.setdefault("OPSPROOF_TEST_DSN", st.superuser_dsn())
    yield st
    st.destroy()


@pytest.fixture(scope="session")
def admin_dsn(stack) -> str:
    return stack.admin_dsn()


@pytest.fixture(scope="module")
def scratch_db(stack):
    """A factory of fresh databases on the session stack with the bootstrap and every migration applied (as the
    bootstrap superuser, like `opsproof stack up`); all dropped at module end."""
    import uuid

    from psycopg.conninfo import make_conninfo

    repo = Path(__file__).resolve().parents[1]
    bootstrap = repo / "src" / "opsproof" / "stack" / "sql" / "bootstrap.sql"
    admin_dsn = stack.superuser_dsn()
    made: list[str] = []

    def make() -> str:
        name = f"test_scratch_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        made.append(name)
        dsn = make_conninfo(admin_dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(bootstrap.read_text())
            for path in sorted((repo / "supabase" / "migrations").glob("*.sql")):
                conn.execute(path.read_text())
        return dsn

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(f'drop database if exists "{name}" with (force)')

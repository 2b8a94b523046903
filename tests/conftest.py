"""Fixtures for the project's own tests: one embedded stack per test session (small seed), torn down at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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

"""Fixtures for the project's own tests: one embedded stack per test session (small seed), torn down at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from opsproof.stack.manager import Stack

REPO = Path(__file__).resolve().parents[1]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))


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
    os.environ["OPSPROOF_TEST_DSN"] = st.admin_dsn()
    yield st
    st.destroy()


@pytest.fixture(scope="session")
def admin_dsn(stack) -> str:
    return stack.admin_dsn()


def run_cli(*args: str, home: Path, env: dict | None = None, timeout: float = 300, user: str | None = None):
    """Run the real `opsproof` command (optionally as another OS user) with its own state dir."""
    full = dict(os.environ, OPSPROOF_HOME=str(home), OPSPROOF_PROJECT_DIR=str(REPO))
    full.update(env or {})
    argv = [OPSPROOF, *args]
    if user:
        argv = ["runuser", "-u", user, "--", "env", f"OPSPROOF_HOME={home}", f"OPSPROOF_PROJECT_DIR={REPO}",
                *(f"{k}={v}" for k, v in (env or {}).items()), *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full, cwd=REPO)

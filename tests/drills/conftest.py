"""An isolated embedded stack + reference plane for the drill safety proofs (its own OPSPROOF_HOME, so the
drills' data never mixes with the shared test stack), with a policy whose drill lease is short."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from drill_helpers import LEASE_S, REPO, DrillHome

from opsproof.levers import overrides  # noqa: E402
from opsproof.measure import steady_state  # noqa: E402
from opsproof.policy import load as load_policy  # noqa: E402
from opsproof.stack.manager import Stack  # noqa: E402



@pytest.fixture(scope="session")
def drill_home():
    home = Path(tempfile.mkdtemp(prefix="opsproof-drills-"))
    os.chmod(home, 0o755)
    stack = Stack(home=home)
    dh = None
    try:
        stack.up(seed_days=1, requests_per_day=500, log=lambda m: None)
        text = (REPO / "opsproof.toml").read_text()
        text = re.sub(r"(?m)^lease_seconds\s*=.*$", f"lease_seconds = {LEASE_S}", text)
        policy = home / "opsproof-drills.toml"
        policy.write_text(text)
        env = stack.env()
        dh = DrillHome(home, env["SUPABASE_DB_URL"], env["OPSPROOF_REPLICA_DB_URL"], policy)
        up = dh.cli("plane", "up")
        assert up.returncode == 0, up.stderr + up.stdout
        yield dh
    finally:
        if dh is not None:
            dh.cli("plane", "down")
        stack.destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def healthy(drill_home):
    """Each proof starts from a steady target (plane up, no overrides, replica streaming, reads on it)."""
    up = drill_home.cli("plane", "up")
    assert up.returncode == 0, up.stderr + up.stdout
    flags = load_policy(drill_home.policy).flags
    report = steady_state.wait_steady(drill_home.dsn, flags, timeout_s=30, replica_dsn=drill_home.replica_dsn)
    assert report.ok, report.problems
    return overrides.fingerprint(drill_home.dsn)


@pytest.fixture
def policy_flags(drill_home):
    return load_policy(drill_home.policy).flags

"""A private embedded stack + reference plane for the watch's end-to-end test (its own OPSPROOF_HOME: the watch
acts on flags and budgets, which must never touch the shared session stack)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))
SCRUB = ("SUPABASE_", "OPSPROOF_", "ALERT_", "N8N_", "PYTEST_", "TRACE_")


@dataclass
class WatchHome:
    home: Path
    dsn: str

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        env.update(OPSPROOF_HOME=str(self.home), OPSPROOF_PROJECT_DIR=str(REPO), PYTHONUNBUFFERED="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cli(self, *args: str, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
        return subprocess.run([OPSPROOF, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(**extra), cwd=REPO)

    def popen(self, *args: str, out: Path, **extra) -> subprocess.Popen:
        return subprocess.Popen([OPSPROOF, *args], stdout=out.open("w"), stderr=subprocess.STDOUT,
                                env=self.env(**extra), cwd=REPO)


@pytest.fixture(scope="module")
def watch_home():
    from opsproof.stack.manager import Stack

    home = Path(tempfile.mkdtemp(prefix="opsproof-watch-"))
    os.chmod(home, 0o755)
    stack = Stack(home=home)
    wh = None
    try:
        stack.up(seed_days=1, requests_per_day=500, log=lambda m: None)
        wh = WatchHome(home, stack.env()["SUPABASE_DB_URL"])
        up = wh.cli("plane", "up")
        assert up.returncode == 0, up.stderr + up.stdout
        yield wh
    finally:
        if wh is not None:
            wh.cli("plane", "down")
        stack.destroy()
        shutil.rmtree(home, ignore_errors=True)

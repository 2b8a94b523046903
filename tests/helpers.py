"""Helpers shared by the project's tests (a module, not conftest: tests/plane has a conftest of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))


def run_cli(*args: str, home: Path, env: dict | None = None, timeout: float = 300, user: str | None = None):
    """Run the real `opsproof` command (optionally as another OS user) with its own state dir."""
    full = dict(os.environ, OPSPROOF_HOME=str(home), OPSPROOF_PROJECT_DIR=str(REPO))
    full.update(env or {})
    argv = [OPSPROOF, *args]
    if user:
        argv = ["runuser", "-u", user, "--", "env", f"OPSPROOF_HOME={home}", f"OPSPROOF_PROJECT_DIR={REPO}",
                *(f"{k}={v}" for k, v in (env or {}).items()), *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full, cwd=REPO)

"""`opsproof daily|gate|drills|acceptance`: make sure the target is up (embedded default), then run the suite."""

from __future__ import annotations

import os
import subprocess
import sys

from opsproof import paths
from opsproof.config import load_settings


def ensure_embedded(with_plane: bool = True, log=print) -> None:
    """Bring up the embedded stack (and the reference plane) when no other target is configured."""
    from opsproof.stack.manager import Stack

    st = Stack().up(log=lambda m: log(f"stack: {m}"))
    if not st["healthy"]:
        from opsproof.errors import OpsproofError

        raise OpsproofError("embedded stack unhealthy: " + "; ".join(st["problems"]))
    if with_plane:
        from opsproof.plane.supervisor import Supervisor

        Supervisor(paths.plane_dir()).up(log=lambda m: log(f"plane: {m}"))


def run_suite(marker: str, extra: list[str], with_plane: bool = True) -> int:
    settings_target = os.environ.get("OPSPROOF_TARGET", "embedded")
    if settings_target == "embedded":
        ensure_embedded(with_plane=with_plane, log=lambda m: print(m, file=sys.stderr))
        if marker == "daily":
            # the embedded default has no cron of its own: do the daily maintenance first, as
            # deploy/crontab does before the daily controls (a failed task is reported, the run goes on)
            subprocess.call([sys.executable, "-m", "opsproof.cli", "cadence", "daily"], cwd=str(paths.project_dir()))
    else:
        load_settings("env")  # bad settings: exit 2 before pytest starts
    argv = [sys.executable, "-m", "pytest", "-m", marker, *extra]
    return subprocess.call(argv, cwd=str(paths.project_dir()))

"""Helpers for the plane tests (importable: pytest puts a conftest's folder on the import path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def set_flag(conn, key: str, value: str, seconds: int = 600) -> int:
    """A leased override row (how drills flip flags)."""
    return conn.execute(
        """insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
           values (%s, %s::jsonb, 'tests/plane', 'test', 'plane test', now() + make_interval(secs => %s::int))
           returning id""", (key, value, seconds)).fetchone()[0]


def release_flags(conn) -> None:
    conn.execute("update ops.flag_overrides set released_at = now() where released_at is null")


def plane_env(plane_db: PlaneDB, plane_dir: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "OPSPROOF_", "ALERT_"))}
    env.update({"SUPABASE_DB_URL": plane_db.primary, "OPSPROOF_REPLICA_DB_URL": plane_db.replica,
                "OPSPROOF_PLANE_DIR": str(plane_dir), "OPSPROOF_STACK_ENV": str(plane_dir / "no-stack-env"),
                "OPSPROOF_PLANE_CYCLE_S": "0.5", "OPSPROOF_PROBE_INTERVAL_S": "1", "N8N_SIGNING_KEY": "k" * 64,
                "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Component:
    """One plane component as a real OS process (its own process group)."""

    def __init__(self, name: str, env: dict, log: Path):
        self.name, self.log, self.env = name, log, env
        self.fh = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", f"opsproof.plane.{name}"], env=env, stdout=self.fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        self.fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(pred, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    from opsproof.clock import wait_until

    value = wait_until(pred, timeout, interval)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


def audit_since(conn, since_id: int) -> list[tuple]:
    return conn.execute("select action, reason, detail from ops.audit_log where id > %s order by id",
                        (since_id,)).fetchall()


def audit_max(conn) -> int:
    return conn.execute("select coalesce(max(id), 0) from ops.audit_log").fetchone()[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

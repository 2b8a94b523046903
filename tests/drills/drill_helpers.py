"""Helpers for the drill safety proofs: an isolated stack + plane, the real drills in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))
LEASE_S = 6  # the drill lease in the proofs' policy file (short, so the SIGKILL proofs are quick; >= 3)
SCRUB = ("SUPABASE_", "OPSPROOF_", "ALERT_", "N8N_", "PYTEST_", "TRACE_")


@dataclass
class DrillHome:
    home: Path
    dsn: str = field(repr=False)
    replica_dsn: str = field(repr=False)
    policy: Path          # opsproof.toml with a short lease

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        env.update(OPSPROOF_HOME=str(self.home), OPSPROOF_PROJECT_DIR=str(REPO), OPSPROOF_NO_ALLURE_HTML="1",
                   PYTHONUNBUFFERED="1")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cli(self, *args: str, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
        return subprocess.run([OPSPROOF, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(**extra), cwd=REPO)

    def conn(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


class DrillRun:
    """`pytest -m drill ...` in its own process (group), output to a file."""

    def __init__(self, dh: DrillHome, tmp: Path, *args: str, run_id: str, policy: Path | None = None,
                 ignore_signals: tuple[int, ...] = (), **env):
        """`ignore_signals`: start the run with these signals inherited as SIG_IGN (cron, nohup, `&` jobs)."""
        self.run_id, self.evidence = run_id, tmp / f"evidence-{run_id}"
        self.out_path = tmp / f"drill-{run_id}.out"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "drill", "-q", "-p", "no:randomly",
                "--opsproof-suite=drill",  # a one-file drill run is still the drill kind's run (RED for what did not run)
                f"--opsproof-policy={policy or dh.policy}", f"--opsproof-evidence-dir={self.evidence}", *args]
        self._fh = self.out_path.open("w")
        self.t0 = time.monotonic()

        def preexec():
            import signal

            for sig in ignore_signals:
                signal.signal(sig, signal.SIG_IGN)

        self.proc = subprocess.Popen(argv, cwd=REPO, env=dh.env(OPSPROOF_RUN_ID=run_id, **env), stdout=self._fh,
                                     stderr=subprocess.STDOUT, preexec_fn=preexec if ignore_signals else None)
        self.ended: float | None = None

    def wait(self, timeout: float = 240) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._fh.close()
        self.ended = time.monotonic()
        return rc

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.t0

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.out_path.read_text(errors="replace")

    def record(self, drill: str) -> dict | None:
        found = sorted(self.evidence.glob(f"*/drills/{drill}.json"))
        return json.loads(found[-1].read_text()) if found else None

    def results(self) -> dict | None:
        found = sorted(self.evidence.glob("*/results-drill.json"))
        return json.loads(found[-1].read_text()) if found else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(pred, timeout: float, what: str, step: float = 0.1):
    from opsproof.clock import wait_until

    value = wait_until(pred, timeout, step)
    if not value:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return value


def active_override(conn, run_id: str):
    return conn.execute("select id, key, expires_at from ops.flag_overrides where run_id = %s and released_at is null "
                        "and expires_at > now() order by id limit 1", (run_id,)).fetchone()


def unreleased(conn, run_id: str) -> list:
    return conn.execute("select id, key, expires_at from ops.flag_overrides where run_id = %s and released_at is null",
                        (run_id,)).fetchall()


def effective(conn, key: str):
    return conn.execute("select value, base_value, overridden from ops.effective_flags where key = %s", (key,)).fetchone()


def audit_actions(conn, run_id: str) -> list[str]:
    return [r[0] for r in conn.execute("select action from ops.audit_log where run_id = %s order by id", (run_id,))]

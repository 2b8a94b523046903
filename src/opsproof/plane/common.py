"""Shared plumbing for the plane components: connections, effective flags, budgets, heartbeats, audit."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger("opsproof.plane")

CANARY_SAFE_KINDS = frozenset({"quote", "track", "notify"})


def connect(dsn: str, *, autocommit: bool = True, timeout: float = 5.0, app: str = "opsproof-plane") -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=max(1, int(timeout)), application_name=app)


@dataclass(frozen=True)
class Flags:
    emergency_stop: bool
    autonomous_enabled: bool
    mode: str
    otel_enabled: bool
    replay_enabled: bool
    relay_enabled: bool

    @property
    def agents_may_claim(self) -> bool:
        return not self.emergency_stop and self.autonomous_enabled


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "on", "yes")
    return bool(v)


def read_flags(conn: psycopg.Connection) -> Flags:
    """The ONE way a flag is read: ops.effective_flags (leased overrides included, expired ones ignored).
    A missing flag reads as its fail-safe value (stop on, features off)."""
    rows = dict(conn.execute("select key, value from ops.effective_flags").fetchall())
    return Flags(
        emergency_stop=_truthy(rows.get("autonomy.emergencyStop", True)),
        autonomous_enabled=_truthy(rows.get("agents.autonomousEnabled", False)),
        mode=str(rows.get("autonomy.mode", "SAFE")).upper(),
        otel_enabled=_truthy(rows.get("obs.otelEnabled", True)),
        replay_enabled=_truthy(rows.get("dlq.replayEnabled", False)),
        relay_enabled=_truthy(rows.get("outbox.relayEnabled", False)),
    )


def read_budget(conn: psycopg.Connection, key: str, default: float) -> float:
    row = conn.execute("select value from ops.budgets where key = %s", (key,)).fetchone()
    return float(row[0]) if row else default


def heartbeat(conn: psycopg.Connection, component: str, detail: dict | None = None) -> None:
    conn.execute(
        """insert into ops.heartbeats (component, pid, host, beat_at, detail)
           values (%s, %s::int, %s, now(), %s)
           on conflict (component) do update set pid = excluded.pid, host = excluded.host,
                                                beat_at = excluded.beat_at, detail = excluded.detail""",
        (component, os.getpid(), socket.gethostname(), Jsonb(detail or {})),
    )


def audit(conn: psycopg.Connection, actor: str, action: str, target: str, reason: str,
          run_id: str | None = None, detail: dict | None = None) -> int:
    row = conn.execute("select ops.audit(%s, %s, %s, %s, %s, %s)",
                       (actor, action, target, reason, run_id or f"plane-{os.getpid()}", Jsonb(detail or {}))).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class Stopper:
    """SIGTERM/SIGINT -> a set event the loops watch."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> "Stopper":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.event.set())
        return self

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(max(0.0, seconds))


class HeartbeatThread(threading.Thread):
    """For the HTTP servers (their main thread is the event loop): beat every cycle on its own connection."""

    def __init__(self, dsn: str, component: str, cycle_s: float, detail: dict | None = None) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{component}")
        self.dsn, self.component, self.cycle_s, self.detail = dsn, component, cycle_s, detail or {}
        self.stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(self.dsn, app=f"opsproof-{self.component}")
                heartbeat(conn, self.component, self.detail)
            except psycopg.Error as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
                conn = None
            self.stop.wait(self.cycle_s)


def setup_logging(component: str) -> None:
    logging.basicConfig(level=os.environ.get("OPSPROOF_PLANE_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format=f"%(asctime)s {component}[%(process)d] %(levelname)s %(message)s")


def dumps(obj) -> str:
    return json.dumps(obj, default=str, separators=(",", ":"))


def now() -> float:
    return time.monotonic()

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

import psycopg
from psycopg.types.json import Jsonb

from opsproof.measure.flags import Flags, _truthy, read_budget, read_flags  # noqa: F401 - the plane's names

log = logging.getLogger("opsproof.plane")

CANARY_SAFE_KINDS = frozenset({"quote", "track", "notify"})


def connect(dsn: str, *, autocommit: bool = True, timeout: float = 5.0, app: str = "opsproof-plane") -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=max(1, int(timeout)), application_name=app)


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

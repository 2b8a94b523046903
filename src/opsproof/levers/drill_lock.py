"""One drill run at a time per target: a session-level Postgres advisory lock on a dedicated connection.

The lock lives exactly as long as the holder's connection: a runner killed with SIGKILL loses its socket,
the server ends the session and the lock is free again (no stale lock to clean). The holder is named by
its connection's application_name ("opsproof-drill <run id> <host>:<pid>") and by the audit row written
when it took the lock (owner, run id, host, pid, started). A second run fails fast naming the holder, or
waits up to `wait_s` seconds (`pytest -m drill --drill-wait 300`).

Poolers: through a session-mode pooler (Supabase's pooler on port 5432, PgBouncer pool_mode=session) the
client owns its server session, so the lock holds; when the client goes away the pooler resets the server
session (DISCARD ALL releases advisory locks). Through a transaction-mode pooler (port 6543) a session lock
would stay on a pooled server connection that other clients then use, held by nobody: drills are refused
before anything is taken, with one line naming the session-mode URL (found by the DSN's port 6543 or by
probing whether two clients share a server session: opsproof.target.db.pooler_mode).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import psycopg

from opsproof.levers.common import LeverError, audit, connect, owner_tag, require_audit
from opsproof.target.db import describe_connect_error, dsn_port, pooler_mode, session_mode_url

# pg_try_advisory_lock(int4, int4): classid/objid in pg_locks, objsubid = 2
LOCK_CLASS = 0x0D5F  # "opsproof"
LOCK_OBJ = 0x0D21  # "drill"
APP_PREFIX = "opsproof-drill"


class DrillLockBusy(LeverError):
    """Another drill run holds the target's drill lock."""

    def __init__(self, holder: dict, waited_s: float):
        self.holder = holder
        who = describe_holder(holder)
        how = f"after waiting {waited_s:.0f}s" if waited_s else "(fail fast; --drill-wait SECONDS to wait)"
        super().__init__(f"another drill run holds the drill lock on this target {how}: {who}")


class DrillLockUnsupported(LeverError):
    """The target is reached through a transaction-mode pooler: no session, so no drill lock (one line)."""

    def __init__(self, dsn: str):
        port = dsn_port(dsn)
        super().__init__(
            f"drills need a session-mode connection, and SUPABASE_DB_URL{f' (port {port})' if port else ''} is a "
            f"transaction-mode pooler where the drill lock cannot hold: use the session-mode pooler "
            f"{session_mode_url(dsn)} (same host, port 5432) or the direct connection")


def refuse_transaction_pooler(dsn: str) -> None:
    """Raise DrillLockUnsupported when `dsn` reaches a transaction-mode pooler (port 6543 or found by probing)."""
    try:
        mode = pooler_mode(dsn)
    except psycopg.Error as exc:
        raise LeverError(describe_connect_error(exc)) from None
    if mode == "transaction":
        raise DrillLockUnsupported(dsn)


def describe_holder(h: dict) -> str:
    parts = [f"run {h.get('run_id') or '?'}", f"owner {h.get('owner') or '?'}",
             f"host {h.get('host') or '?'}", f"pid {h.get('pid') or '?'}"]
    if h.get("since"):
        parts.append(f"since {h['since']}")
    if h.get("backend_pid"):
        parts.append(f"db backend pid {h['backend_pid']}")
    return ", ".join(parts)


HOLDER_SQL = """
select a.pid, a.application_name, a.backend_start, a.client_addr::text
  from pg_locks l join pg_stat_activity a on a.pid = l.pid
 where l.locktype = 'advisory' and l.classid = %s and l.objid = %s and l.objsubid = 2 and l.granted
 limit 1
"""


@dataclass
class DrillLock:
    dsn: str = field(repr=False)
    run_id: str
    owner: str = ""
    conn: psycopg.Connection | None = field(default=None, repr=False)
    acquired_at: float | None = None
    info: dict = field(default_factory=dict)
    attempts: int = 0  # pg_try_advisory_lock calls made so far (observable while acquire() waits)

    def __post_init__(self) -> None:
        self.owner = self.owner or owner_tag(self.run_id)

    @property
    def app_name(self) -> str:
        return f"{APP_PREFIX} {self.run_id} {socket.gethostname()}:{os.getpid()}"[:63]

    def holder(self, conn: psycopg.Connection) -> dict:
        """Who holds the lock now (empty dict when nobody)."""
        row = conn.execute(HOLDER_SQL, (LOCK_CLASS, LOCK_OBJ)).fetchone()
        if row is None:
            return {}
        backend_pid, app, started, addr = row
        out = {"backend_pid": backend_pid, "application_name": app, "since": started.isoformat() if started else None}
        bits = (app or "").split()
        if len(bits) >= 3 and bits[0] == APP_PREFIX:
            out["run_id"] = bits[1]
            host, _, pid = bits[2].rpartition(":")
            out["host"], out["pid"] = host, pid
        # the holder's own audit row says more (owner string); match it by run id
        if out.get("run_id"):
            try:
                arow = conn.execute(
                    """select detail from ops.audit_log where action = 'drill.lock.acquire' and run_id = %s
                        order by id desc limit 1""", (out["run_id"],)).fetchone()
                if arow:
                    d = arow[0] or {}
                    out.update({k: d[k] for k in ("owner", "host", "pid") if k in d})
            except psycopg.Error:
                pass
        return out

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> "DrillLock":
        refuse_transaction_pooler(self.dsn)
        conn = connect(self.dsn, application_name=self.app_name)
        try:
            require_audit(conn)
            t0 = time.monotonic()
            while True:
                got = conn.execute("select pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJ)).fetchone()[0]
                self.attempts += 1
                if got:
                    break
                waited = time.monotonic() - t0
                if waited >= wait_s:
                    raise DrillLockBusy(self.holder(conn), waited if wait_s else 0.0)
                time.sleep(min(poll_s, max(0.05, wait_s - waited)))
            self.info = {"owner": self.owner, "run_id": self.run_id, "host": socket.gethostname(),
                         "pid": os.getpid(), "backend_pid": conn.info.backend_pid,
                         "waited_s": round(time.monotonic() - t0, 3), "attempts": self.attempts}
            audit(conn, action="drill.lock.acquire", target="drills", reason="drill run started", run_id=self.run_id,
                  detail=self.info, checked=True)
        except BaseException:
            conn.close()
            raise
        self.conn, self.acquired_at = conn, time.monotonic()
        return self

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            held_s = round(time.monotonic() - (self.acquired_at or time.monotonic()), 3)
            audit(conn, action="drill.lock.release", target="drills", reason="drill run finished", run_id=self.run_id,
                  detail={"owner": self.owner, "held_s": held_s})
            conn.execute("select pg_advisory_unlock(%s, %s)", (LOCK_CLASS, LOCK_OBJ))
        except psycopg.Error:
            pass  # closing the session releases the lock anyway
        finally:
            conn.close()

    def alive(self) -> bool:
        if self.conn is None or self.conn.closed:
            return False
        try:
            return bool(self.conn.execute(
                "select exists (select 1 from pg_locks where locktype = 'advisory' and classid = %s and objid = %s "
                "and objsubid = 2 and pid = pg_backend_pid() and granted)", (LOCK_CLASS, LOCK_OBJ)).fetchone()[0])
        except psycopg.Error:
            return False

    def __enter__(self) -> "DrillLock":
        return self if self.conn else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

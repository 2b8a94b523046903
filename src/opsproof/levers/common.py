"""Shared plumbing of the levers: where a connection comes from, who is acting, and the audit write.

The two doors every lever goes through:
- `connect(dsn, ...)` / `connection(where, ...)`: the one connection factory (application_name, timeouts,
  autocommit; never server-side prepared statements, so it works behind a transaction pooler such as
  Supavisor/PgBouncer);
- `audit(conn, action=..., target=..., reason=..., run_id=...)`: the one audited write (ops.audit), keyword
  arguments only, refused on a target without the audit chain.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import psycopg
from psycopg.types.json import Jsonb

from opsproof.errors import OpsproofError

AUDIT_SIGNATURE = "ops.audit(text,text,text,text,text,jsonb,uuid)"
ACTOR = "opsproof"
APP_NAME = "opsproof-levers"


class LeverError(OpsproofError):
    """A lever could not act (or refused to act without an audit trail)."""


def owner_tag(run_id: str) -> str:
    """Who holds a lever: run id, host and pid (written to ops.flag_overrides.owner and the audit row)."""
    return f"opsproof:{run_id}@{socket.gethostname()}:{os.getpid()}"


def connect(dsn: str, *, application_name: str = APP_NAME, connect_timeout: float = 10, autocommit: bool = True,
            statement_timeout_ms: int | None = None, prepare_threshold: int | None = None) -> psycopg.Connection:
    """The one way a lever opens a connection of its own (the caller closes it, or uses it as a context manager).

    prepare_threshold=None (the default) disables server-side prepared statements: behind a transaction pooler
    a server connection serves many clients, and a second client's `_pg3_0` collides with the first's.
    statement_timeout_ms travels as a startup option, which PgBouncer refuses ("unsupported startup parameter"):
    behind a pooler use `set local statement_timeout` inside the transaction instead."""
    kwargs: dict[str, Any] = {"autocommit": autocommit, "connect_timeout": max(1, int(connect_timeout)),
                              "application_name": application_name, "prepare_threshold": prepare_threshold}
    if statement_timeout_ms is not None:
        kwargs["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return psycopg.connect(dsn, **kwargs)


@contextmanager
def connection(where: Any, **connect_kw: Any) -> Iterator[psycopg.Connection]:
    """`where` is a psycopg Connection (used as is), an opsproof Target (a pooled connection) or a DSN
    (a new connection from `connect(where, **connect_kw)`, closed on the way out)."""
    if isinstance(where, psycopg.Connection):
        with nullcontext(where) as conn:
            yield conn
        return
    if isinstance(where, str):
        with connect(where, **connect_kw) as conn:
            yield conn
        return
    if hasattr(where, "connection"):
        with where.connection() as conn:
            yield conn
        return
    raise TypeError(f"not a connection, Target or DSN: {type(where).__name__}")


def require_audit(conn: psycopg.Connection) -> None:
    """Levers never write unaudited: a target without ops.audit(...) is refused with a clear message."""
    ok = conn.execute("select to_regprocedure(%s) is not null", (AUDIT_SIGNATURE,)).fetchone()[0]
    if not ok:
        raise LeverError(f"{AUDIT_SIGNATURE} is missing on the target: levers refuse to write without an "
                         "audit row (apply supabase/migrations, 20261125000300_audit_chain.sql)")


def audit(conn: psycopg.Connection, *, action: str, target: str, reason: str, run_id: str,
          detail: dict | None = None, actor: str = ACTOR, incident_id: str | None = None,
          checked: bool = False) -> int:
    """One row in the audit chain; returns its id. Call inside the same transaction as the write.

    incident_id ties the row to an ops.incidents row; checked=True skips the contract check (the caller has
    already called require_audit on this connection)."""
    if not checked:
        require_audit(conn)
    row = conn.execute("select ops.audit(%s, %s, %s, %s, %s, %s, %s::uuid)",
                       (actor, action, target, reason, run_id, Jsonb(detail or {}), incident_id)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def db_now(conn: psycopg.Connection, *, plus_s: float = 0.0):
    """The database's clock (now(): the transaction's start), optionally plus some seconds: lease expiries are
    computed on the target's clock, never the runner's."""
    return conn.execute("select now() + make_interval(secs => %s::float8)", (float(plus_s),)).fetchone()[0]

"""Shared plumbing of the levers: where a connection comes from, who is acting, and the audit write."""

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


class LeverError(OpsproofError):
    """A lever could not act (or refused to act without an audit trail)."""


def owner_tag(run_id: str) -> str:
    """Who holds a lever: run id, host and pid (written to ops.flag_overrides.owner and the audit row)."""
    return f"opsproof:{run_id}@{socket.gethostname()}:{os.getpid()}"


@contextmanager
def connection(where: Any) -> Iterator[psycopg.Connection]:
    """`where` is a psycopg Connection (used as is), an opsproof Target (a pooled connection) or a DSN."""
    if isinstance(where, psycopg.Connection):
        with nullcontext(where) as conn:
            yield conn
        return
    if isinstance(where, str):
        with psycopg.connect(where, autocommit=True, connect_timeout=10,
                             application_name="opsproof-levers") as conn:
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


def audit(conn: psycopg.Connection, action: str, target: str, reason: str, run_id: str,
          detail: dict | None = None, actor: str = ACTOR) -> int:
    """One row in the audit chain; returns its id. Call inside the same transaction as the write."""
    require_audit(conn)
    row = conn.execute("select ops.audit(%s, %s, %s, %s, %s, %s)",
                       (actor, action, target, reason, run_id, Jsonb(detail or {}))).fetchone()
    return int(row[0]) if row and row[0] is not None else 0

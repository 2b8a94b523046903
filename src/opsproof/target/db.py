"""The target's Postgres: one pool per session; `as_user(claims)` does exactly what PostgREST does per request.

Pooler-safe by construction (Supabase's transaction pooler on port 6543, PgBouncer in transaction mode): no
server-side prepared statements (`prepare_threshold=None` on every connection: a pooled server connection
may already hold another client's `_pg3_0`), and no session state carried across statements: whatever must
hold for a while is transaction-local (`set local`, `set_config(..., true)`, `pg_advisory_xact_lock`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from opsproof.errors import OpsproofError, UsageError

# Every connection to the target: autocommit, no server-side prepared statements (transaction poolers).
CONNECT_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
SUPABASE_TRANSACTION_POOLER_PORT = 6543
SESSION_POOLER_PORT = 5432


def describe_connect_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if "password authentication failed" in low or "authentication failed" in low:
        return "target refused the credentials (wrong SUPABASE_DB_URL user/password)"
    if "connection refused" in low or "could not connect" in low or "timeout" in low or "no route" in low:
        return f"target unreachable: {text.split('failed:')[-1].strip()[:160]}"
    return f"cannot connect to target: {text[:200]}"


@contextmanager
def _contract_errors() -> Iterator[None]:
    """A missing contract object is a clear 'cannot measure', not a driver traceback."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedColumn) as exc:
        raise OpsproofError(f"ops contract incomplete on the target: {str(exc).splitlines()[0]} "
                            "(apply supabase/migrations)") from None
    except psycopg.OperationalError as exc:
        raise OpsproofError(describe_connect_error(exc)) from None


def _configure(conn: psycopg.Connection) -> None:
    """Belt and braces for the pool: whatever a caller passes, a pooled connection never prepares."""
    conn.prepare_threshold = None


def dsn_port(dsn: str) -> int | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        port = str(conninfo_to_dict(dsn).get("port") or "").split(",")[0]
        return int(port) if port else None
    except (psycopg.Error, ValueError):
        return None


def session_mode_url(dsn: str) -> str:
    """The same target on the session-mode port (5432 on Supabase's pooler host), password masked: safe to print."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(dsn)
    except psycopg.Error:
        return f"the same host on port {SESSION_POOLER_PORT}"
    user = quote(str(d.get("user") or "postgres"), safe=".")
    host = str(d.get("host") or d.get("hostaddr") or "localhost").split(",")[0]
    return f"postgresql://{user}:***@{host}:{SESSION_POOLER_PORT}/{d.get('dbname') or 'postgres'}"


def probe_shared_sessions(dsn: str, *, connect_timeout: int = 10) -> bool:
    """True when two clients are served by the same server session, i.e. a transaction-mode pooler.

    `SHOW pool_mode` is not answered on a pooler's client port, so probe (writing no session state): client A
    runs one statement and goes idle -- a transaction pooler hands its server connection back, and serves the
    next client's statement with it (PgBouncer reuses the last released server first); directly or through a
    session pooler client B, connected while A still is, always has a server session of its own.
    """
    kw = dict(CONNECT_KWARGS, connect_timeout=connect_timeout, application_name="opsproof-pooler-probe")
    with psycopg.connect(dsn, **kw) as a, psycopg.connect(dsn, **kw) as b:
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
        return pid_a == pid_b


def pooler_mode(dsn: str, *, probe: bool = True) -> str | None:
    """'transaction' when the DSN reaches a transaction-mode pooler (Supabase's port 6543, or found by probing),
    else None (a direct connection or a session-mode pooler: one client, one server session)."""
    if dsn_port(dsn) == SUPABASE_TRANSACTION_POOLER_PORT:
        return "transaction"
    if probe and probe_shared_sessions(dsn):
        return "transaction"
    return None


class Target:
    """A pooled connection to the target database."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10):
        self._dsn = dsn
        try:
            with psycopg.connect(dsn, connect_timeout=int(timeout), **CONNECT_KWARGS) as probe:
                probe.execute("select 1")
        except psycopg.Error as exc:
            raise UsageError(describe_connect_error(exc)) from None
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, open=True,
                                   kwargs={**CONNECT_KWARGS, "connect_timeout": int(timeout)},
                                   configure=_configure)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.pool.connection() as conn:
            yield conn

    def value(self, sql: str, params: Any = None) -> Any:
        """Run one statement and return the first column of the first row."""
        with _contract_errors(), self.pool.connection() as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def rows(self, sql: str, params: Any = None) -> list[dict]:
        with _contract_errors(), self.pool.connection() as conn:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(sql, params).fetchall()

    def measure(self, function: str, *args: Any) -> dict:
        """Call one ops measurement function returning jsonb; a missing function is a clear error."""
        placeholders = ", ".join(["%s"] * len(args))
        sql = f"select {function}({placeholders})"
        try:
            result = self.value(sql, args)
        except psycopg.errors.UndefinedFunction:
            raise OpsproofError(f"contract function {function} is missing on the target (apply supabase/migrations)") from None
        except psycopg.errors.UndefinedTable as exc:
            raise OpsproofError(f"contract table missing on the target: {str(exc).splitlines()[0]}") from None
        if result is None:
            raise OpsproofError(f"{function} returned nothing")
        return result if isinstance(result, dict) else json.loads(result)

    @contextmanager
    def as_user(self, claims: dict, *, role: str | None = None, method: str = "GET",
                path: str = "/rest/v1/") -> Iterator[psycopg.Connection]:
        """A transaction running as PostgREST runs a request: `set local role`, request.jwt.claims, method, path.

        Always rolled back: a read path never changes the target.
        """
        role = role or claims.get("role", "anon")
        full_claims = dict(claims, role=role)
        with self.pool.connection() as conn:
            with conn.transaction(force_rollback=True):
                conn.execute(psycopg.sql.SQL("set local role {}").format(psycopg.sql.Identifier(role)))
                conn.execute("select set_config('request.jwt.claims', %s, true), "
                             "set_config('request.method', %s, true), set_config('request.path', %s, true), "
                             "set_config('request.headers', '{}', true)",
                             (json.dumps(full_claims), method, path))
                yield conn

"""The target's Postgres: one pool per session; `as_user(claims)` does exactly what PostgREST does per request."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from opsproof.errors import OpsproofError, UsageError


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


class Target:
    """A pooled connection to the target database."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10):
        self._dsn = dsn
        try:
            with psycopg.connect(dsn, connect_timeout=int(timeout)) as probe:
                probe.execute("select 1")
        except psycopg.Error as exc:
            raise UsageError(describe_connect_error(exc)) from None
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, open=True,
                                   kwargs={"autocommit": True, "connect_timeout": int(timeout)})

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

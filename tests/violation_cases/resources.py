"""Resource saturation on the embedded default (RES-001, RES-002): real growth and real connections, judged by
the same controls that read the Metrics API on hosted Supabase.

- RES-001: the database really grows past 80% of its disk budget. The case's policy (a budget of 256 MiB; the
  session's 3-day stack is far below 80% of it) is a fixed file; inject writes incompressible rows into a scratch
  table until the database holds more than 85% of the budget; undo drops it.
- RES-002: more than 80% of max_connections are really held: inject opens idle sessions (as the stack's admin)
  until client backends exceed 82% of max_connections; undo closes them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from violation_cases import Case

_POLICY = Path(__file__).with_name("resources_budget.toml")
_BUDGET = 256 * 1024 * 1024
_TABLE = "public.violation_disk_fill"
_HELD: list[psycopg.Connection] = []


def _fill(stack) -> None:
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        size = conn.execute("select pg_database_size(current_database())").fetchone()[0]
        assert size < 0.6 * _BUDGET, f"the session stack already holds {size} bytes: raise the case's budget"
        need = int(0.85 * _BUDGET) - size
        conn.execute(f"create table {_TABLE} (id int, pad text)")
        conn.execute(f"alter table {_TABLE} alter column pad set storage plain")
        conn.execute(f"alter table {_TABLE} enable row level security")   # SEC-002 must stay green
        rows = need // 1900 + 1000
        # ~1.9 kB per row, uncompressed (storage plain, md5 hex is not repetitive enough to matter)
        conn.execute(f"insert into {_TABLE} select g, repeat(md5(g::text), 59) from generate_series(1, %s) g",
                     (rows,))


def _drop(stack) -> None:
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"drop table if exists {_TABLE}")


def _hold(stack) -> None:
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        used, max_conn = conn.execute(
            "select (select count(*) from pg_stat_activity where backend_type = 'client backend'), "
            "current_setting('max_connections')::int").fetchone()
    for _ in range(max(0, int(0.82 * max_conn) - used + 2)):
        _HELD.append(psycopg.connect(stack.admin_dsn(), autocommit=True, application_name="violation-hold"))


def _release(stack) -> None:
    while _HELD:
        _HELD.pop().close()


CASES = [
    Case(name="RES-001/database-past-its-disk-budget", red={"RES-001": "fail"},
         inject=_fill, undo=_drop, args=(f"--opsproof-policy={_POLICY}",),
         why="the database grew past 80% of [resources] disk_budget_bytes (real rows written)"),
    Case(name="RES-002/connections-saturated", red={"RES-002": "fail"},
         inject=_hold, undo=_release,
         why="more than 80% of max_connections are held by idle sessions"),
]

"""Every measurement returns the query that actually ran: the statement a `Measurement` carries is the one its
function executed (logged by a Target subclass), with the same parameters, and its rendered `query` run by hand
(as an auditor would paste it into psql) gives the same rows.

Runs against the session's embedded stack (tests/conftest.py): every migration applied, 3 seeded days.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row

from opsproof.measure import freshness, security
from opsproof.measure import ops as measure
from opsproof.measure.models import Measurement, render
from opsproof.target.db import Target


class LoggingTarget(Target):
    """A Target that logs every statement it executes, with its parameters and raw result."""

    def __init__(self, dsn: str):
        super().__init__(dsn)
        self.log: list[tuple[str, tuple, object]] = []

    def value(self, sql, params=None):
        out = super().value(sql, params)
        self.log.append((sql, tuple(params or ()), out))
        return out

    def rows(self, sql, params=None):
        out = super().rows(sql, params)
        self.log.append((sql, tuple(params or ()), out))
        return out


# columns computed from now(): equal up to the seconds between the two runs
CLOCK_COLUMNS = {"age_days"}


def _same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b):
            if isinstance(x, dict) and isinstance(y, dict):
                for k in CLOCK_COLUMNS & x.keys() & y.keys():
                    assert abs(float(x[k]) - float(y[k])) < 60 / 86400, k
                    x[k] = y[k]
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@pytest.fixture(scope="module")
def logged(stack):
    t = LoggingTarget(stack.admin_dsn())
    yield t
    t.close()


END = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
START = END - timedelta(hours=24)

CASES = {
    "slo_snapshot": lambda t: measure.slo_snapshot(t, START, END, 98.0, 99.95),
    "slo_snapshot(burn, settle)": lambda t: measure.slo_snapshot(t, START, END, 98, 99.95, burn_hours=[1, 6],
                                                                 settle_s=120),
    "outbox_lag": lambda t: measure.outbox_lag(t, START, END),
    "agent_health": lambda t: measure.agent_health(t, START, END),
    "dlq_health": lambda t: measure.dlq_health(t, START, END),
    "trace_coverage": lambda t: measure.trace_coverage(t, START, END),
    "ci_health": lambda t: measure.ci_health(t, START, END, "main"),
    "agent_stalls": lambda t: measure.agent_stalls(t, START, END, 600.0),
    "effective_flags": measure.effective_flags,
    "budgets": measure.budgets,
    "active_alerts": measure.active_alerts,
    "alerts_ever_raised": measure.alerts_ever_raised,
    "telemetry_freshness": lambda t: freshness.telemetry_freshness(t, START, END),
    "rls_tables": lambda t: security.rls_tables(t, ["public", "ops"]),
    "service_account_keys": security.service_account_keys,
    "service_account_permissions": security.service_account_permissions,
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_recorded_query_is_the_one_executed(name, logged, stack):
    logged.log.clear()
    m = CASES[name](logged)
    assert isinstance(m, Measurement) and m.source == "sql"
    assert len(logged.log) == 1, f"{name} ran {len(logged.log)} statements, its Measurement names one"
    [(statement, params, raw)] = logged.log
    assert m.statement == statement and m.params == params
    assert m.query == render(statement, params)
    # the rendered query, pasted by hand, answers the same
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        again = cur.execute(m.query).fetchall()
    if isinstance(raw, list):
        assert _same(again, raw)
    else:
        assert _same(next(iter(again[0].values())), raw)


def test_every_measurement_function_is_covered():
    """A new measurement function in ops/freshness/security gets a case here (or says why not)."""
    import inspect

    names = {n for mod in (measure, freshness, security) for n, f in inspect.getmembers(mod, inspect.isfunction)
             if f.__module__ == mod.__name__ and not n.startswith("_")
             and "Measurement" in str(inspect.signature(f).return_annotation)}
    helpers = {"call", "rows", "value"}  # the generic doors the cases go through
    covered = {c.split("(")[0] for c in CASES}
    assert names - helpers - covered == set()


def test_render_is_what_psql_would_run():
    when = datetime(2026, 1, 10, tzinfo=timezone.utc)
    assert render("select ops.ci_health(%s, %s, %s)", (when, when, "it's")) == (
        "select ops.ci_health('2026-01-10 00:00:00+00:00'::timestamptz, '2026-01-10 00:00:00+00:00'::timestamptz, "
        "'it''s')")
    assert render("select 1 where 'a' like 'a%%'") == "select 1 where 'a' like 'a%'"
    assert render("select %(k)s", {"k": 5}) == "select 5"
    assert Measurement([], "supabase db advisors ...", source="supabase-cli").query == "supabase db advisors ..."

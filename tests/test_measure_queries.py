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

from opsproof.measure import (audit_chain, cadence, canary, dlq, flag_overrides, freshness, ingest, routing, security,
                              worker)
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
    "rollup_status": lambda t: measure.rollup_status(t, START, END),
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
    "canary_tasks": lambda t: canary.canary_tasks(t, START, END),
    # the cadence checks (CAD-002..004)
    "agent_logs_ttl": lambda t: cadence.agent_logs_ttl(t, 14),
    "partitions_missing": lambda t: cadence.partitions_missing(t, "requests", 7),
    "recent": lambda t: audit_chain.recent(t, 24),
    "head": audit_chain.head,
    "verify": audit_chain.verify,
    "anchored_row": lambda t: audit_chain.anchored_row(t, _some(t, "select min(id) from ops.audit_log")),
    "entry": lambda t: audit_chain.entry(t, _some(t, "select max(id) from ops.audit_log")),
    # the drills and acceptance steps
    "drill_tasks": lambda t: worker.drill_tasks(t, "no-such-run", "succeeded"),
    "queued_drill_tasks": lambda t: worker.queued_drill_tasks(t, "no-such-run"),
    "running_tasks": worker.running_tasks,
    "late_claims": lambda t: worker.late_claims(t, START, 1.5),
    "last_claim": lambda t: worker.last_claim(t, END),
    "inflight_finished": lambda t: worker.inflight_finished(t, END, 1.5),
    "first_claim_after": lambda t: worker.first_claim_after(t, START),
    "tasks_finished": lambda t: worker.tasks_finished(t, _task_ids(t)),
    "drain_stats": lambda t: worker.drain_stats(t, START, END, _task_ids(t)[:2], _task_ids(t)),
    "task_executions": lambda t: worker.task_executions(t, _task_ids(t)),
    "task": lambda t: worker.task(t, _task_ids(t)[0]),
    "task_started_at": lambda t: worker.task_started_at(t, _task_ids(t)[0]),
    "task_spans": lambda t: worker.task_spans(t, _task_ids(t)[0]),
    "task_audit_rows": lambda t: worker.task_audit_rows(t, _task_ids(t)[0]),
    "worker_halted_since": lambda t: worker.worker_halted_since(t, START),
    "db_clock": routing.db_clock,
    "replica_reads_on": routing.replica_reads_on,
    "replica_routed_to": lambda t: routing.replica_routed_to(t, "primary"),
    "replica_routed_to(changed_after)": lambda t: routing.replica_routed_to(t, "replica", changed_after=START),
    "last_probe_id": routing.last_probe_id,
    "replica_probes": lambda t: routing.replica_probes(t, 0, END),
    "cutover_audit": lambda t: routing.cutover_audit(t, START),
    "idempotency_effects": lambda t: ingest.idempotency_effects(t, "no-such-key"),
    "replayed_items": lambda t: dlq.replayed_items(t, [1, 2, 3]),
    "rails_tasks_created": lambda t: dlq.rails_tasks_created(t, "no-such-run"),
    "rails_tasks_succeeded": lambda t: dlq.rails_tasks_succeeded(t, "no-such-run"),
    "replay_row": lambda t: dlq.replay_row(t, 1),
    "task_entries": lambda t: dlq.task_entries(t, _task_ids(t)[0]),
    "override_times": lambda t: flag_overrides.override_times(t, _some(t, "select max(id) from ops.flag_overrides")),
}

# a second run cannot answer the same: the database's clock moved on
NOT_REPEATABLE = {"db_clock"}
MODULES = (measure, freshness, security, canary, cadence, audit_chain, worker, routing, ingest, dlq, flag_overrides)


def _some(t: Target, statement: str):
    """An id the case needs, read past the logging (so the case still runs exactly one statement)."""
    with t.pool.connection() as conn:
        got = conn.execute(statement).fetchone()[0]
    if got is None:
        pytest.fail(f"the session stack has no row for: {statement}")
    return got


def _task_ids(t: Target) -> list[int]:
    with t.pool.connection() as conn:
        ids = [r[0] for r in conn.execute("select id from ops.agent_tasks order by id limit 3").fetchall()]
    assert ids, "the session stack holds no agent task"
    return ids


@pytest.fixture
def released_override(stack):
    """A released (never effective) override row for override_times to read; removed afterwards."""
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        oid = conn.execute(
            "insert into ops.flag_overrides (key, value, owner, run_id, reason, created_at, expires_at, released_at) "
            "select key, value, 'test_measure_queries', 'test', 'measurement case', now() - interval '2 minutes', "
            "now() - interval '1 minute', now() - interval '90 seconds' from ops.feature_flags order by key limit 1 "
            "returning id").fetchone()[0]
        yield oid
        conn.execute("delete from ops.flag_overrides where id = %s", (oid,))


@pytest.mark.parametrize("name", list(CASES))
def test_the_recorded_query_is_the_one_executed(name, logged, stack, request):
    if name == "override_times":
        request.getfixturevalue("released_override")
    logged.log.clear()
    m = CASES[name](logged)
    assert isinstance(m, Measurement) and m.source == "sql"
    assert len(logged.log) == 1, f"{name} ran {len(logged.log)} statements, its Measurement names one"
    [(statement, params, raw)] = logged.log
    assert m.statement == statement and m.params == params
    assert m.query == render(statement, params)
    if name in NOT_REPEATABLE:
        return
    # the rendered query, pasted by hand, answers the same
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        again = cur.execute(m.query).fetchall()
    if isinstance(raw, list):
        assert _same(again, raw)
    else:
        assert _same(next(iter(again[0].values())) if again else None, raw)  # no row reads as None


def test_every_measurement_function_is_covered():
    """A new measurement function in the modules above gets a case here (or says why not)."""
    import inspect

    names = {n for mod in MODULES for n, f in inspect.getmembers(mod, inspect.isfunction)
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


# ---- helper "incident": measure/incident.py (what the incident levers read) -------------------------------------
# Appended as one block: the parametrized test above lists CASES when it is defined, so these cases run through
# their own parametrized test below (the same body); CASES/MODULES grow here so the coverage test sees them.
from opsproof.levers.common import AUDIT_SIGNATURE  # noqa: E402
from opsproof.measure import incident as incident_measure  # noqa: E402

NO_INCIDENT = "00000000-0000-0000-0000-000000000000"
PLANE = ["plane.worker", "plane.relay", "plane.replayer"]
INCIDENT_CASES = {
    "contract_missing": lambda t: incident_measure.contract_missing(t, AUDIT_SIGNATURE),
    "table_md5": incident_measure.table_md5,
    "base_flags": incident_measure.base_flags,
    "base_budgets": incident_measure.base_budgets,
    "current_row": lambda t: incident_measure.current_row(t, "flag", "autonomy.emergencyStop"),
    "current_row(budget, lock)": lambda t: incident_measure.current_row(t, "budget", "agent.concurrency", lock=True),
    "masking_overrides": lambda t: incident_measure.masking_overrides(t, "autonomy.mode", "SAFE", lock=True),
    "last_known_good": incident_measure.last_known_good,
    "expectations": lambda t: incident_measure.expectations(t, tuple(PLANE)),
    "heartbeats": lambda t: incident_measure.heartbeats(t, PLANE),
    # deadline 0: exactly one poll
    "wait_for_components": lambda t: incident_measure.wait_for_components(t, {"plane.worker": {}}, START, 0.0, 0.1),
    "claims_after": lambda t: incident_measure.claims_after(t, END),
    "effective_flag_values": incident_measure.effective_flag_values,
    "alert_open": lambda t: incident_measure.alert_open(t, 0),
    "recent_failed_traces": incident_measure.recent_failed_traces,
    "incident_audit_ids": lambda t: incident_measure.incident_audit_ids(t, NO_INCIDENT),
    "incident_row": lambda t: incident_measure.incident_row(t, NO_INCIDENT, lock=True),
    "other_open_incidents": lambda t: incident_measure.other_open_incidents(t, NO_INCIDENT),
    "incident_resolution": lambda t: incident_measure.incident_resolution(t, NO_INCIDENT),
    "recent_incidents": lambda t: incident_measure.recent_incidents(t, limit=5, days=7),
    "open_incidents": incident_measure.open_incidents,
}
CASES.update(INCIDENT_CASES)
NOT_REPEATABLE.update({"heartbeats", "wait_for_components", "recent_incidents"})  # ages from the database's clock
MODULES = (*MODULES, incident_measure)


@pytest.mark.parametrize("name", list(INCIDENT_CASES))
def test_incident_recorded_query_is_the_one_executed(name, logged, stack, request):
    test_the_recorded_query_is_the_one_executed(name, logged, stack, request)

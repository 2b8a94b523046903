"""One function per measurement: a single call of the contract's SQL, returned as a `Measurement` (the model
with the statement that ran and its parameters; `m.query` is what a check records).

Each statement is built once, executed, and returned: the SQL recorded is the SQL executed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from opsproof.measure.models import (AgentHealth, AgentStalls, CiHealth, DlqHealth, FlagState, Measurement, OutboxLag,
                                     RollupStatus, SloSnapshot, TraceCoverage)
from opsproof.recorder import MeasurementError
from opsproof.target.db import Target


def call(target: Target, function: str, *args: Any) -> Measurement[dict]:
    """`select <function>(%s, ...)` with the arguments bound: one jsonb document (a missing function is an
    OpsproofError from the Target, a null result a MeasurementError)."""
    statement = f"select {function}({', '.join(['%s'] * len(args))})"
    raw = target.value(statement, args)
    if raw is None:
        raise MeasurementError(f"{function} returned nothing")
    return Measurement(raw if isinstance(raw, (dict, list)) else json.loads(raw), statement, tuple(args))


def _doc(model, target: Target, function: str, *args) -> Measurement:
    m = call(target, function, *args)
    try:
        doc = model.model_validate(m.result)
    except ValidationError as exc:
        raise MeasurementError(f"{function} returned an unexpected document: {exc.errors()[0]['loc']}") from None
    return Measurement(doc, m.statement, m.params, m.source)


def rows(target: Target, statement: str, params: tuple = ()) -> Measurement[list[dict]]:
    """Rows of one read-only statement."""
    return Measurement(target.rows(statement, params or None), statement, tuple(params))


def value(target: Target, statement: str, params: tuple = ()) -> Measurement[Any]:
    """The first column of the first row of one read-only statement."""
    return Measurement(target.value(statement, params or None), statement, tuple(params))


def slo_snapshot(target: Target, start: datetime, end: datetime, success_target: float = 98.0,
                 uptime_target: float = 99.95, burn_hours: list[int] | None = None,
                 settle_s: float | None = None) -> Measurement[SloSnapshot]:
    """Uptime counts every whole minute of the window (an unprobed one is not up, bar the trailing settle_s);
    burn_hours picks the burn-rate windows (the SQL's default: 1 h and 6 h)."""
    if burn_hours is None and settle_s is None:
        return _doc(SloSnapshot, target, "ops.slo_snapshot", start, end, float(success_target), float(uptime_target))
    return _doc(SloSnapshot, target, "ops.slo_snapshot", start, end, float(success_target), float(uptime_target),
                [int(h) for h in (burn_hours if burn_hours is not None else [1, 6])],
                float(120.0 if settle_s is None else settle_s))


def rollup_status(target: Target, start: datetime, end: datetime) -> Measurement[RollupStatus]:
    """How current and complete the per-minute rollup is over the window (TEL-008)."""
    return _doc(RollupStatus, target, "ops.rollup_status", start, end)


def outbox_lag(target: Target, start: datetime, end: datetime) -> Measurement[OutboxLag]:
    return _doc(OutboxLag, target, "ops.outbox_lag", start, end)


def agent_health(target: Target, start: datetime, end: datetime) -> Measurement[AgentHealth]:
    return _doc(AgentHealth, target, "ops.agent_health", start, end)


def dlq_health(target: Target, start: datetime, end: datetime) -> Measurement[DlqHealth]:
    return _doc(DlqHealth, target, "ops.dlq_health", start, end)


def trace_coverage(target: Target, start: datetime, end: datetime) -> Measurement[TraceCoverage]:
    return _doc(TraceCoverage, target, "ops.trace_coverage", start, end)


def ci_health(target: Target, start: datetime, end: datetime, branch: str) -> Measurement[CiHealth]:
    return _doc(CiHealth, target, "ops.ci_health", start, end, branch)


def agent_stalls(target: Target, start: datetime, end: datetime, stall_after_s: float) -> Measurement[AgentStalls]:
    """Tasks queued or running longer than stall_after_s at the window's end (however old)."""
    return _doc(AgentStalls, target, "ops.agent_stalls", start, end, float(stall_after_s))


EFFECTIVE_FLAGS_SQL = ("select key, value, base_value, overridden, override_owner, override_reason, "
                       "override_expires_at, updated_at, updated_by from ops.effective_flags order by key")


def effective_flags(target: Target) -> Measurement[dict[str, FlagState]]:
    m = rows(target, EFFECTIVE_FLAGS_SQL)
    return Measurement({r["key"]: FlagState.model_validate(r) for r in m.result}, m.statement)


BUDGETS_SQL = "select key, value, unit from ops.budgets order by key"


def budgets(target: Target) -> Measurement[dict[str, float]]:
    m = rows(target, BUDGETS_SQL)
    return Measurement({r["key"]: float(r["value"]) for r in m.result}, m.statement)


ACTIVE_ALERTS_SQL = ("select id, raised_at, severity, source, title, trace_id from ops.alerts "
                     "where resolved_at is null order by raised_at")


def active_alerts(target: Target) -> Measurement[list[dict]]:
    return rows(target, ACTIVE_ALERTS_SQL)


def alerts_ever_raised(target: Target) -> Measurement[int]:
    """How many alerts ops.alerts has ever held (a zero active alerts means nothing on a table never written)."""
    return value(target, "select count(*) from ops.alerts")

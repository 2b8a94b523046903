"""One function per measurement: a single call of the contract's SQL function, returned as a model."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from opsproof.measure.models import (AgentHealth, AgentStalls, CiHealth, DlqHealth, FlagState, OutboxLag, SloSnapshot,
                                     TraceCoverage)
from opsproof.recorder import MeasurementError
from opsproof.target.db import Target

QUERIES = {
    "slo_snapshot": "select ops.slo_snapshot(%s, %s)",
    "outbox_lag": "select ops.outbox_lag(%s, %s)",
    "agent_health": "select ops.agent_health(%s, %s)",
    "dlq_health": "select ops.dlq_health(%s, %s)",
    "trace_coverage": "select ops.trace_coverage(%s, %s)",
    "ci_health": "select ops.ci_health(%s, %s, %s)",
    "agent_stalls": "select ops.agent_stalls(%s, %s, %s)",
    "effective_flags": "select key, value, base_value, overridden, override_owner, override_reason, "
                       "override_expires_at, updated_at, updated_by from ops.effective_flags order by key",
    "budgets": "select key, value, unit from ops.budgets order by key",
}


def _doc(model, target: Target, function: str, *args):
    raw = target.measure(function, *args)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise MeasurementError(f"{function} returned an unexpected document: {exc.errors()[0]['loc']}") from None


def slo_snapshot(target: Target, start: datetime, end: datetime, success_target: float = 98.0,
                 uptime_target: float = 99.95, burn_hours: list[int] | None = None,
                 settle_s: float | None = None) -> SloSnapshot:
    """Uptime counts every whole minute of the window (an unprobed one is not up, bar the trailing settle_s);
    burn_hours picks the burn-rate windows (the SQL's default: 1 h and 6 h)."""
    if burn_hours is None and settle_s is None:
        return _doc(SloSnapshot, target, "ops.slo_snapshot", start, end, success_target, uptime_target)
    return _doc(SloSnapshot, target, "ops.slo_snapshot", start, end, success_target, uptime_target,
                [int(h) for h in (burn_hours if burn_hours is not None else [1, 6])],
                float(120.0 if settle_s is None else settle_s))


def outbox_lag(target: Target, start: datetime, end: datetime) -> OutboxLag:
    return _doc(OutboxLag, target, "ops.outbox_lag", start, end)


def agent_health(target: Target, start: datetime, end: datetime) -> AgentHealth:
    return _doc(AgentHealth, target, "ops.agent_health", start, end)


def dlq_health(target: Target, start: datetime, end: datetime) -> DlqHealth:
    return _doc(DlqHealth, target, "ops.dlq_health", start, end)


def trace_coverage(target: Target, start: datetime, end: datetime) -> TraceCoverage:
    return _doc(TraceCoverage, target, "ops.trace_coverage", start, end)


def ci_health(target: Target, start: datetime, end: datetime, branch: str) -> CiHealth:
    return _doc(CiHealth, target, "ops.ci_health", start, end, branch)


def effective_flags(target: Target) -> dict[str, FlagState]:
    return {r["key"]: FlagState.model_validate(r) for r in target.rows(QUERIES["effective_flags"])}


def budgets(target: Target) -> dict[str, float]:
    return {r["key"]: float(r["value"]) for r in target.rows(QUERIES["budgets"])}


def active_alerts(target: Target) -> tuple[str, list[dict]]:
    sql = ("select id, raised_at, severity, source, title, trace_id from ops.alerts "
           "where resolved_at is null order by raised_at")
    return sql, target.rows(sql)


def agent_stalls(target: Target, start: datetime, end: datetime, stall_after_s: float) -> AgentStalls:
    """Tasks queued or running longer than stall_after_s at the window's end (however old)."""
    return _doc(AgentStalls, target, "ops.agent_stalls", start, end, float(stall_after_s))

"""Telemetry freshness: per stream, how many rows the window holds, the newest row's age, the longest gap and the
share of the window covered (ops.telemetry_freshness, one server-side call), and the judgement against the policy.

The judgement lives here (pure, unit-testable) so the checks and the watch read the same rule; the checks turn
each finding into a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from opsproof.measure.models import Measurement, StreamFreshnessDoc, TelemetryFreshness
from opsproof.measure.ops import call
from opsproof.recorder import MeasurementError
from opsproof.target.db import Target

# stream -> (table.column that puts a row in the window, what the stream is)
STREAMS: dict[str, tuple[str, str]] = {
    "health_probes": ("ops.health_probes.ts", "health probes (the uptime SLO's input)"),
    "requests": ("ops.requests.ts", "API requests (success, latency and burn-rate SLOs' input)"),
    "agent_tasks": ("ops.agent_tasks.enqueued_at", "agent tasks enqueued (agent health, stalls, concurrency)"),
    "spans": ("ops.spans.started_at", "trace spans (trace coverage)"),
    "outbox": ("ops.outbox.created_at", "outbox events (outbox lag)"),
    "dlq_replays": ("ops.dlq_replays.at", "DLQ replay batches (replay health, replay rails)"),
    "ci_events": ("ops.ci_events.at", "CI events, every branch (CI self-heal)"),
}


def telemetry_freshness(target: Target, start: datetime, end: datetime) -> Measurement[TelemetryFreshness]:
    m = call(target, "ops.telemetry_freshness", start, end)
    try:
        doc = TelemetryFreshness.model_validate(m.result)
    except ValidationError as exc:
        raise MeasurementError(f"ops.telemetry_freshness returned an unexpected document: "
                               f"{exc.errors()[0]['loc']}") from None
    missing = sorted(set(STREAMS) - set(doc.streams))
    if missing:
        raise MeasurementError(f"ops.telemetry_freshness did not report {missing} (apply supabase/migrations)")
    return Measurement(doc, m.statement, m.params, m.source)


@dataclass(frozen=True)
class Finding:
    """One rule of a stream's policy: what was measured, the threshold, whether it holds."""

    name: str
    measured: Any
    op: str
    threshold: Any
    ok: bool
    unit: str = ""


def _age_s(doc: TelemetryFreshness, s: StreamFreshnessDoc) -> float | None:
    """The newest row's age at the window's end, looking before the window when it holds none."""
    if s.newest_age_s is not None:
        return float(s.newest_age_s)
    if s.previous_at is None:
        return None
    end = doc.window.get("end")
    if end is None:
        return None
    return max(0.0, (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(s.previous_at))).total_seconds())


def judge(doc: TelemetryFreshness, stream: str, rule) -> list[Finding]:
    """The findings for one stream under its policy (opsproof.policy.StreamFreshness). Every rule is a finding;
    an empty window is never a pass: a required stream fails on rows, every stream on age (nothing ever = no age)."""
    s = doc.streams[stream]
    out: list[Finding] = []
    if rule.required:
        out.append(Finding(f"{stream} rows in the window", s.rows, ">=", 1, s.rows >= 1))
    age = _age_s(doc, s) if not rule.required else (s.newest_age_s if s.rows else None)
    if age is None:
        out.append(Finding(f"{stream} newest row age", "no row" + ("" if rule.required else " ever"), "<=",
                           rule.max_age_s, False, " s"))
    else:
        out.append(Finding(f"{stream} newest row age", round(float(age), 3), "<=", rule.max_age_s,
                           float(age) <= rule.max_age_s, " s"))
    if rule.max_gap_s is not None:
        gap = float(s.max_gap_s) if s.max_gap_s is not None else doc.window_s
        out.append(Finding(f"{stream} longest gap", round(gap, 3), "<=", rule.max_gap_s, gap <= rule.max_gap_s, " s"))
    if rule.min_coverage_pct is not None:
        pct = s.coverage_pct if rule.coverage_bucket == "minute" else s.hour_coverage_pct
        if pct is None:  # a window shorter than one bucket: nothing to cover, nothing shown
            out.append(Finding(f"{stream} {rule.coverage_bucket}s covered", "window shorter than one "
                               + rule.coverage_bucket, ">=", rule.min_coverage_pct, False, "%"))
        else:
            out.append(Finding(f"{stream} {rule.coverage_bucket}s covered", float(pct), ">=", rule.min_coverage_pct,
                               float(pct) >= rule.min_coverage_pct, "%"))
    return out

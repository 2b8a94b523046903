"""Telemetry freshness: every stream the other controls read must keep arriving through the window.

An SLO or watchlist rate computed over what is left of a window whose telemetry stopped proves nothing: each
stream's newest row must be young enough, its longest gap short enough and enough of the window covered
(thresholds: [telemetry] in opsproof.toml). One control per stream; an empty window is a fail, never a pass.
"""

from __future__ import annotations

import pytest

from opsproof.measure import freshness


# stream -> (control id, also in the CI gate); title, severity and frameworks are in controls.toml
CONTROLS = {
    "health_probes": ("TEL-001", True),
    "requests": ("TEL-002", True),
    "agent_tasks": ("TEL-003", False),
    "spans": ("TEL-004", False),
    "outbox": ("TEL-005", False),
    "dlq_replays": ("TEL-006", False),
    "ci_events": ("TEL-007", False),
}


def _param(stream: str):
    cid, gate = CONTROLS[stream]
    marks = [pytest.mark.control(cid)]
    if gate:
        marks.append(pytest.mark.gate)
    return pytest.param(stream, marks=marks, id=stream)


@pytest.fixture(scope="module")
def measured(target, window):
    """The Measurement: the freshness document and the statement that produced it."""
    return freshness.telemetry_freshness(target, *window.args)


@pytest.mark.daily
@pytest.mark.telemetry
@pytest.mark.parametrize("stream", [_param(s) for s in CONTROLS])
def test_stream_fresh(stream, measured, policy, window, evidence):
    fresh = measured.result
    evidence.artifact("telemetry_freshness.json", fresh.model_dump(mode="json"))
    rule = policy.telemetry.stream(stream)
    s = fresh.streams[stream]
    column, what = freshness.STREAMS[stream]
    detail = {"stream": what, "column": column, "required": rule.required, "rows": s.rows,
              "newest_at": s.newest_at, "previous_at": s.previous_at, "max_gap_from": s.max_gap_from,
              "max_gap_to": s.max_gap_to, "coverage_pct": s.coverage_pct, "hour_coverage_pct": s.hour_coverage_pct,
              "window": fresh.window}
    findings = freshness.judge(fresh, stream, rule)
    evidence.require(bool(findings), f"{stream}: the policy judges nothing")
    for f in findings:  # record every rule first, so a red run shows all of them
        evidence.record(name=f.name, measured=f.measured, threshold=f"{f.op} {f.threshold}{f.unit}", verdict=f.ok,
                        query=measured.query, detail=detail)
    bad = [f for f in findings if not f.ok]
    if bad:
        raise AssertionError("; ".join(f"{f.name}: measured {f.measured}{f.unit if not isinstance(f.measured, str) else ''}"
                                       f", required {f.op} {f.threshold}{f.unit}" for f in bad)
                             + f" (window {window.label} ending {window.end.isoformat()})")

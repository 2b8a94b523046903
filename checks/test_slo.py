"""SLO gates over the window: uptime, success, p95 latency — with error budget and burn rates in the evidence."""

from __future__ import annotations

import pytest

from opsproof.measure import ops as measure

FW = {"SOC2": ["A1.1", "CC7.1"], "ISO27001": ["A.8.16"]}


@pytest.fixture(scope="module")
def snapshot(target, policy, window):
    return measure.slo_snapshot(target, *window.args, policy.slo.success_pct_min, policy.slo.uptime_pct_min)


def _artifact(evidence, snapshot, window):
    evidence.artifact("slo_snapshot.json", {"window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
                                            **snapshot.model_dump(mode="json")})


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.slo
@pytest.mark.control(id="SLO-001", title="Uptime (health probes) meets the SLO", severity="critical", frameworks=FW)
def test_uptime(snapshot, policy, window, evidence):
    _artifact(evidence, snapshot, window)
    evidence.require(snapshot.probes > 0, f"no health probes in the {window.label} window")
    evidence.check("uptime", snapshot.uptime_pct, ">=", policy.slo.uptime_pct_min, unit="%",
                   query=measure.QUERIES["slo_snapshot"], detail=snapshot.error_budget.get("uptime"))


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.slo
@pytest.mark.control(id="SLO-002", title="Request success rate meets the SLO", severity="critical", frameworks=FW)
def test_success_rate(snapshot, policy, window, evidence):
    _artifact(evidence, snapshot, window)
    evidence.require(snapshot.requests > 0, f"no requests in the {window.label} window")
    evidence.check("success", snapshot.success_pct, ">=", policy.slo.success_pct_min, unit="%",
                   query=measure.QUERIES["slo_snapshot"],
                   detail={"error_budget": snapshot.error_budget.get("success"), "burn_rates": snapshot.burn_rates})


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.slo
@pytest.mark.control(id="SLO-003", title="p95 request latency meets the SLO", severity="high", frameworks=FW)
def test_p95_latency(snapshot, policy, window, evidence):
    _artifact(evidence, snapshot, window)
    evidence.require(snapshot.requests > 0, f"no requests in the {window.label} window")
    evidence.check("p95 latency", snapshot.p95_ms, "<=", policy.slo.p95_ms_max, unit=" ms",
                   query=measure.QUERIES["slo_snapshot"])

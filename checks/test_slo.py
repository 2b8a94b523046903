"""SLO gates over the window: uptime, success, p95 latency — with error budget and burn rates in the evidence.

Uptime counts every whole minute of the window: a minute without any health probe is NOT up (only the last
`telemetry.settle_s` seconds are spared while their probes may still be arriving), so an outage nobody recorded
lowers uptime instead of vanishing from the denominator. A burn-rate window without requests is an error: a
null burn rate proves nothing, and never sits in a green pack.
"""

from __future__ import annotations

import pytest

from opsproof.measure import ops as measure



@pytest.fixture(scope="module")
def measured(target, policy, window):
    """The Measurement: the snapshot and the statement that produced it (recorded as each control's query)."""
    return measure.slo_snapshot(target, *window.args, policy.slo.success_pct_min, policy.slo.uptime_pct_min,
                                burn_hours=list(policy.slo.burn_rate_windows_hours),
                                settle_s=policy.telemetry.settle_s)


@pytest.fixture(scope="module")
def traffic(measured, settings, policy, window):
    """SLO-002/003's traffic: the contract's ops.requests (`measured`), or with `[slo] source = "gateway"` the
    project's REST/Auth requests from Supabase's edge logs (measure/gateway.py; needs the Management API)."""
    if policy.slo.source != "gateway":
        return measured
    from opsproof.measure import gateway
    from opsproof.recorder import MeasurementError
    from opsproof.target.http import from_settings

    api = from_settings(settings)
    if api is None:
        raise MeasurementError('[slo] source = "gateway" needs SUPABASE_ACCESS_TOKEN and SUPABASE_PROJECT_REF')
    with api:
        return gateway.slo(api, *window.args, policy.slo.success_pct_min,
                           burn_hours=list(policy.slo.burn_rate_windows_hours))


def _doc(m):
    """The snapshot of either source as an object with the keys SLO-002/003 read."""
    from types import SimpleNamespace

    return SimpleNamespace(**m.result) if isinstance(m.result, dict) else m.result


def _artifact(evidence, snapshot, window):
    evidence.artifact("slo_snapshot.json", {"window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
                                            **snapshot.model_dump(mode="json")})


def _burn_rates(snapshot, policy, window, evidence) -> dict:
    """Every burn-rate window the policy names, measured: a missing or null one is an error, never a pass."""
    rates = snapshot.burn_rates or {}
    empty = [f"{h}h" for h in policy.slo.burn_rate_windows_hours if rates.get(f"{h}h") is None]
    evidence.require(not empty, f"burn-rate window(s) {', '.join(empty)} hold no requests (window ends "
                                f"{window.end.isoformat()}): the request stream stopped, a burn rate cannot be shown")
    return rates


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.monthly  # the 30-day SLO review: the same control with --opsproof-window 30d
@pytest.mark.slo
@pytest.mark.control("SLO-001")
def test_uptime(measured, policy, window, evidence):
    snapshot = measured.result
    _artifact(evidence, snapshot, window)
    evidence.require(snapshot.probes > 0, f"no health probes in the {window.label} window")
    window_minutes = getattr(snapshot, "window_minutes", None)
    evidence.require(window_minutes is not None and "unprobed_minutes" in (snapshot.model_extra or {}),
                     "ops.slo_snapshot does not count unprobed minutes (apply migration 20261203000100)")
    evidence.require(window_minutes > 0, f"the {window.label} window holds no whole minute to judge")
    evidence.check("uptime (an unprobed minute is not up)", snapshot.uptime_pct, ">=", policy.slo.uptime_pct_min,
                   unit="%", query=measured.query,
                   detail={"window_minutes": window_minutes, "up_minutes": getattr(snapshot, "up_minutes", None),
                           "down_minutes": getattr(snapshot, "down_minutes", None),
                           "unprobed_minutes": getattr(snapshot, "unprobed_minutes", None),
                           "probe_coverage_pct": getattr(snapshot, "probe_coverage_pct", None),
                           "settle_s": getattr(snapshot, "settle_s", None),
                           "error_budget": snapshot.error_budget.get("uptime")})


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.monthly  # the 30-day SLO review: the same control with --opsproof-window 30d
@pytest.mark.slo
@pytest.mark.control("SLO-002")
def test_success_rate(measured, traffic, policy, window, evidence):
    _artifact(evidence, measured.result, window)
    if traffic is not measured:
        evidence.artifact("gateway_slo.json", {**traffic.result, "query": traffic.query})
    snapshot = _doc(traffic)
    evidence.require(snapshot.requests > 0, f"no requests in the {window.label} window ({traffic.source})")
    rates = _burn_rates(snapshot, policy, window, evidence)
    evidence.check("success", snapshot.success_pct, ">=", policy.slo.success_pct_min, unit="%", query=traffic.query,
                   detail={"error_budget": snapshot.error_budget.get("success"), "burn_rates": rates},
                   source=traffic.source)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.monthly  # the 30-day SLO review: the same control with --opsproof-window 30d
@pytest.mark.slo
@pytest.mark.control("SLO-003")
def test_p95_latency(measured, traffic, policy, window, evidence):
    _artifact(evidence, measured.result, window)
    snapshot = _doc(traffic)
    evidence.require(snapshot.requests > 0, f"no requests in the {window.label} window ({traffic.source})")
    # a histogram p95 (the rollup, migration 20261203001100) is judged at the top of its stated error bound, so a
    # true p95 just over the maximum can never pass on the histogram's rounding
    bound = getattr(snapshot, "p95_error_bound_pct", None) or 0.0
    p95 = snapshot.p95_ms if snapshot.p95_ms is None or not bound else round(snapshot.p95_ms * (1 + bound / 100), 3)
    evidence.check("p95 latency" + (f" (histogram estimate + {bound:g}% bound)" if bound else ""), p95, "<=",
                   policy.slo.p95_ms_max, unit=" ms", query=traffic.query, source=traffic.source,
                   detail={"how": getattr(snapshot, "p95_how", "ops.slo_snapshot"), "p95_ms": snapshot.p95_ms,
                           "p95_error_bound_pct": bound or None, "source": getattr(snapshot, "source", None),
                           "rollup_lag_s": getattr(snapshot, "rollup_lag_s", None),
                           "rollup_gaps": getattr(snapshot, "rollup_gaps", None)})

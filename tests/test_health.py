"""The health score (src/opsproof/health.py): formula, weights from the policy, caps (no green-looking score while
a critical control is red)."""

from __future__ import annotations

from opsproof.health import score
from opsproof.policy import Health, Policy


def _e(cid, area, severity="high", verdict="pass", budget=None):
    rec = {"name": cid, "measured": 1, "threshold": "x", "verdict": verdict,
           "detail": {"error_budget": {"remaining_pct": budget}} if budget is not None else None}
    return {"id": cid, "area": area, "severity": severity, "verdict": verdict, "records": [rec]}


GREEN = [_e("SLO-001", "slo", "critical", budget=100), _e("SLO-002", "slo", "critical", budget=100),
         _e("SLO-003", "slo"), _e("WCH-001", "watchlist"), _e("WCH-002", "watchlist"),
         _e("FLG-001", "flags", "critical"), _e("BUD-001", "budgets"), _e("SEC-001", "security", "critical"),
         _e("CAD-001", "cadence"), _e("TEL-001", "telemetry", "critical")]


def test_all_green_is_100():
    h = score(GREEN, Policy())
    assert h["score"] == 100 and h["caps"] == [] and h["formula"]
    assert set(h["components"]) == {"slo", "watchlist", "compliance", "incidents"}


def test_kill_switch_engaged_caps_the_score():
    entries = [e if e["id"] != "FLG-001" else _e("FLG-001", "flags", "critical", "fail") for e in GREEN]
    h = score(entries, Policy())
    assert h["raw"] > 90  # everything else green: the weighted mean alone would look fine ...
    assert h["score"] <= 49  # ... the cap does not let it
    assert any("FLG-001" in c.get("controls", []) for c in h["caps"])


def test_an_error_caps_and_scores_zero_in_its_component():
    entries = [e if e["id"] != "SLO-003" else _e("SLO-003", "slo", "high", "error") for e in GREEN]
    h = score(entries, Policy())
    assert h["score"] <= Health().error_cap
    assert h["components"]["slo"]["score"] < 100


def test_budget_burn_lowers_the_slo_component():
    entries = [e if e["id"] != "SLO-002" else _e("SLO-002", "slo", "critical", budget=40.0) for e in GREEN]
    h = score(entries, Policy())
    assert h["components"]["slo"]["score"] == (100 + 40 + 100) / 3
    assert h["score"] < 100 and h["caps"] == []


def test_weights_come_from_the_policy():
    entries = [e if e["id"] != "WCH-001" else _e("WCH-001", "watchlist", "medium", "waived") for e in GREEN]
    only_watchlist = Policy(health=Health(weights={"slo": 0, "watchlist": 100, "compliance": 0, "incidents": 0}))
    h = score(entries, only_watchlist)
    assert h["components"]["watchlist"]["weight"] == 100
    assert h["score"] == round(h["components"]["watchlist"]["score"])
    assert h["score"] < score(entries, Policy())["score"] or h["score"] < 100


def test_open_incidents_lower_and_cap():
    h = score(GREEN, Policy(), open_incidents=[{"id": "x"}, {"id": "y"}])
    assert h["components"]["incidents"]["score"] == 50
    assert h["score"] <= Health().open_incident_cap


def test_nothing_measured_is_zero():
    assert score([], Policy())["score"] == 0


def test_incidents_that_cannot_be_read_are_not_counted_as_none():
    h = score(GREEN, Policy(), open_incidents=None)
    assert h["score"] <= Health().error_cap and h["components"]["incidents"]["score"] == 0
    assert any("could not be read" in c["why"] for c in h["caps"])


def test_controls_that_never_ran_are_unmeasured():
    entries = [*GREEN, {"id": "SEC-003", "area": "security", "severity": "high", "verdict": "not_run"}]
    assert score(entries, Policy())["score"] <= Health().error_cap

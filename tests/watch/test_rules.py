"""Unit tests of the watch without a stack: burn-rate math and multi-window rules, alert dedup / escalation /
recovery across a restart (freezegun), the catalog-driven comparison, the sample line."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun import freeze_time

from opsproof.policy import BurnRule, Policy, Watch
from opsproof.watch import burn
from opsproof.watch.alerts import AlertState, Breach
from opsproof.watch.measure import compare

RULES = Policy().watch.burn_rules
T = "http://trace/{trace_id}"


def test_burn_rate_math():
    assert burn.burn_rate(2, 100, 98.0) == 1.0            # spending the budget exactly
    assert burn.burn_rate(0, 100, 98.0) == 0.0
    assert burn.burn_rate(0, 0, 98.0) is None              # no traffic: nothing shown
    assert burn.burn_from_budget({"allowed_failures": 2.0, "failures": 29}) == 14.5
    assert burn.burn_from_budget({"allowed_failures": 0, "failures": 0}) is None


def test_fast_burn_pages_slow_burn_only_tickets():
    fast = {300: 30.0, 1800: 20.0, 3600: 15.0, 21600: 7.0}
    ev = burn.evaluate(RULES, fast)
    assert ev["page"]["firing"] and ev["ticket"]["firing"]
    slow = {300: 8.0, 1800: 7.0, 3600: 6.5, 21600: 6.2}   # 6x over 6 h: a ticket, never a page
    ev = burn.evaluate(RULES, slow)
    assert not ev["page"]["firing"] and ev["ticket"]["firing"]


def test_both_windows_must_burn():
    over = {300: 1.0, 1800: 1.0, 3600: 20.0, 21600: 1.0}   # burned an hour ago, stopped now: resets fast
    assert not burn.evaluate(RULES, over)["page"]["firing"]
    assert not burn.evaluate(RULES, {300: None, 3600: 20.0, 1800: 1, 21600: 1})["page"]["firing"]


def test_rules_and_windows_come_from_the_policy():
    w = Watch(burn_rules={"fast": BurnRule(factor=2.0, long_s=600, short_s=60)})
    assert burn.windows(w.burn_rules) == [60, 600]
    assert burn.evaluate(w.burn_rules, {60: 3.0, 600: 2.5})["fast"]["firing"]
    with pytest.raises(ValueError):
        BurnRule(factor=1, long_s=60, short_s=600)


def test_compare_is_the_recorders_and_strict_on_json_types():
    assert compare(98.5, ">", 98.0) and not compare(98.0, ">", 98.0)
    assert compare(True, "==", True) and not compare(1, "==", True) and not compare("true", "==", True)


def _b(key="WCH-002", sev="high"):
    return Breach(key=key, severity=sev, title="agents succeed", measured=90.0, required="> 98.0%",
                  trace_id="abc")


def test_dedup_escalation_recovery_and_restart(tmp_path):
    path = tmp_path / "alerts.json"
    with freeze_time("2026-12-03 10:00:00") as ft:
        st = AlertState.load(path)
        first = st.update([_b()], target="t", trace_link_template=T)
        assert [m["kind"] for m in first] == ["breach"] and first[0]["trace_link"] == "http://trace/abc"
        assert "98.0" in str(first[0]["payload"]["blocks"])
        ft.tick(timedelta(seconds=30))
        assert st.update([_b()], target="t", trace_link_template=T) == []     # deduplicated
        st.save()
        st = AlertState.load(path)                                              # a restarted watch
        assert st.update([_b()], target="t", trace_link_template=T) == []     # does not re-page
        ft.tick(timedelta(seconds=31))                                          # high: 60 s unanswered
        esc = st.update([_b()], target="t", trace_link_template=T)
        assert [(m["kind"], m["severity"]) for m in esc] == [("escalation", "critical")]
        ft.tick(timedelta(seconds=31))                                          # critical is the top: no more
        assert st.update([_b()], target="t", trace_link_template=T) == []
        rec = st.update([], target="t", trace_link_template=T)
        assert [m["kind"] for m in rec] == ["recovery"] and st.open == {}
        assert st.update([], target="t", trace_link_template=T) == []          # one recovery only


def test_escalation_timeouts_are_the_incident_levels():
    from opsproof.levers.incident_plan import TIMEOUT_S

    with freeze_time("2026-12-03 10:00:00") as ft:
        st = AlertState(path=None)
        st.update([_b(sev="critical"), _b("WCH-003", "medium")], target="t", trace_link_template=T)
        ft.tick(timedelta(seconds=TIMEOUT_S["critical"] + 1))
        assert st.update([_b(sev="critical"), _b("WCH-003", "medium")], target="t", trace_link_template=T) == []
        ft.tick(timedelta(seconds=TIMEOUT_S["medium"]))
        out = st.update([_b(sev="critical"), _b("WCH-003", "medium")], target="t", trace_link_template=T)
        assert [(m["key"], m["severity"]) for m in out] == [("WCH-003", "high")]


def test_the_tick_line_is_one_line():
    from opsproof.watch.loop import Watcher

    s = {"at": "2026-12-03T10:00:00+00:00", "target": "embedded", "score": 49, "tick_s": 0.3, "alerts": [{}],
         "controls": [{"id": "A", "verdict": "pass"}, {"id": "B", "verdict": "fail"}],
         "burn": {"rules": {"page": {"long_burn": 1.0, "short_burn": 2.0}}},
         "actions": [{"action": "quarantine", "incident_id": "x"}]}
    line = Watcher.line(s)
    assert "\n" not in line and "score 49" in line and "B fail" in line and "quarantine:x" in line

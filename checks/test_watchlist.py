"""Watchlist: outbox lag, agent health, DLQ replays, CI self-heal, trace coverage, active alerts."""

from __future__ import annotations

import pytest

from opsproof.measure import ops as measure
from opsproof.measure import traces



@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-001")
def test_outbox_lag(target, policy, window, evidence):
    m = measure.outbox_lag(target, *window.args)
    lag = m.result
    evidence.artifact("outbox_lag.json", lag.model_dump(mode="json"))
    evidence.require(lag.events > 0, f"no outbox events in the {window.label} window")
    w, q = policy.watchlist, m.query
    evidence.check("outbox lag p95", lag.p95_s, "<", w.outbox_lag_p95_s_max, unit=" s", query=q)
    evidence.check("outbox lag avg", lag.avg_s, "<", w.outbox_lag_avg_s_max, unit=" s", query=q)


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-002")
def test_agent_health(target, policy, window, evidence):
    m = measure.agent_health(target, *window.args)
    h = m.result
    evidence.require(h.finished > 0, f"no finished agent tasks in the {window.label} window")
    w, q = policy.watchlist, m.query
    evidence.check("agent success", h.success_pct, ">", w.agent_success_pct_min, unit="%", query=q)
    evidence.check("agent quarantine", h.quarantine_pct, "<", w.agent_quarantine_pct_max, unit="%", query=q)
    # success counts finished tasks only: a pool that stops finishing work must not keep a perfect rate
    ms = measure.agent_stalls(target, *window.args, w.agent_stall_after_s)
    s = ms.result
    evidence.check(f"tasks queued/running > {w.agent_stall_after_s:g} s", s.stalled, "<=", w.agent_stalled_max,
                   query=ms.query,
                   detail={"oldest_unfinished_s": s.oldest_unfinished_s, "stalled_task_ids": s.stalled_task_ids})


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-003")
def test_dlq_replays(target, policy, window, evidence):
    m = measure.dlq_health(target, *window.args)
    d = m.result
    evidence.require(d.replays > 0, f"no DLQ replays in the {window.label} window")
    w, q = policy.watchlist, m.query
    evidence.check("DLQ replay fail", d.fail_pct, "<", w.dlq_replay_fail_pct_max, unit="%", query=q)
    evidence.check("replays per tenant per day (max)", d.max_replays_per_tenant_day, "<",
                   w.replays_per_tenant_day_max, query=q)


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-004")
def test_ci_self_heal(target, policy, window, evidence):
    m = measure.ci_health(target, *window.args, policy.watchlist.ci_branch)
    ci = m.result
    evidence.require(ci.events > 0, f"no CI events on {policy.watchlist.ci_branch} in the {window.label} window: "
                                    "a zero would prove nothing")
    evidence.check("CI self-heal triggers", ci.self_heal_triggers, "<=", policy.watchlist.ci_self_heal_triggers_max,
                   query=m.query)


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-005")
def test_trace_coverage(target, settings, policy, window, evidence):
    # [traces] backend: "contract" = ops.spans; "jaeger" / "tempo" = that backend's query API (measure/traces.py)
    if policy.traces.backend == "contract":
        m = measure.trace_coverage(target, *window.args)
    else:
        m = traces.backend_coverage(target, policy.traces, *window.args)
    tc = m.result
    lines = [f"{t}  {settings.trace_link_template.format(trace_id=t)}" for t in tc.sample_trace_ids[:3]]
    evidence.artifact("trace-sample.txt", f"source: {m.source}\n" + "\n".join(lines) + "\n")
    evidence.require(tc.canary_tasks > 0, f"no canary agent tasks in the {window.label} window")
    evidence.check("canary trace coverage", tc.coverage_pct, ">=", policy.watchlist.trace_coverage_pct_min,
                   unit="%", query=m.query, source=m.source,
                   detail={"missing": tc.missing, "missing_task_ids": getattr(tc, "missing_task_ids", None)})


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("WCH-006")
def test_active_alerts(target, evidence):
    m = measure.active_alerts(target)
    rows = m.result
    body = "\n".join(f"{r['id']}\t{r['raised_at']}\t{r['severity']}\t{r['source']}\t{r['title']}\t{r['trace_id']}"
                     for r in rows) or "(0 rows)"
    evidence.artifact("alerts.sql.out", f"{m.query};\n\n{body}\n")
    total = measure.alerts_ever_raised(target)
    evidence.require(total.result > 0, f"ops.alerts has never been written ({total.query}): a zero would prove nothing")
    serious = [r for r in rows if r["severity"] in ("critical", "high")]
    evidence.check("active critical/high alerts", len(serious), "==", 0, query=m.query,
                   detail=[{"id": r["id"], "title": r["title"]} for r in serious])

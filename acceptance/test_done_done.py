"""Done-done acceptance: the five steps, each a control; the record goes into today's pack (acceptance.json).

Runs on the live target (embedded default: stack + plane) under the same safety machinery as the
drills: the drill lock, leased overrides released on every exit path, audited levers.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from opsproof import clock
from opsproof.levers import acceptance as levers
from opsproof.measure import dlq, flag_overrides, tenancy, worker



@pytest.fixture(scope="module")
def record(suite):
    """acceptance.json: one entry per step, written into the run's pack at the end."""
    rec = {"run_id": suite.run_id, "started": clock.now().isoformat(), "steps": {}}
    yield rec
    rec["ended"] = clock.now().isoformat()
    rec["green"] = bool(rec["steps"]) and all(s.get("verdict") == "pass" for s in rec["steps"].values())
    suite.artifacts["acceptance.json"] = json.loads(json.dumps(rec, default=str))


@pytest.fixture
def step(request, record):
    """Collects one step's facts; the verdict is set from the test outcome."""
    name = request.node.name.removeprefix("test_")
    facts: dict = {"started": clock.now().isoformat()}
    record["steps"][name] = facts
    yield facts
    call = request.node.__dict__.get("_opsproof_rep_call")
    facts["verdict"] = "pass" if call is not None and call.passed else "fail"
    if call is not None and call.failed:
        facts["failure"] = (getattr(call, "longreprtext", "") or "").strip().splitlines()[-1:][0][:500] \
            if getattr(call, "longreprtext", "") else "failed"


def _plane_url(settings, attr: str, what: str) -> str:
    url = getattr(settings, attr)
    if not url:
        from opsproof.recorder import MeasurementError

        raise MeasurementError(f"the plane's {what} URL is unknown: start it (`opsproof plane up`)")
    return url.rstrip("/")


def _wait(pred, timeout: float, every: float = 0.2):
    return clock.wait_until(pred, timeout, every)


def _task(target, task_id: int) -> dict:
    return worker.task(target, task_id).result


@pytest.mark.acceptance
@pytest.mark.control("ACC-001")
def test_synthetic_task_end_to_end(target, settings, suite, drill_session, step, evidence):
    feed_url = _plane_url(settings, "ingest_url", "API/feed") + "/feed?limit=200"
    task_id = levers.enqueue_synthetic(drill_session.dsn, suite.run_id)
    step["task_id"] = task_id
    done = _wait(lambda: _task(target, task_id)["status"] == "succeeded", timeout=30)
    task = _task(target, task_id)
    step["task"] = task
    assert done, f"the worker did not execute synthetic task {task_id} within 30 s (status {task['status']})"
    trace = task["trace_id"]
    feed = httpx.get(feed_url, timeout=10).json()["items"]
    in_feed = [i for i in feed if i["id"] == task_id]
    spanned = worker.task_spans(target, task_id)
    spans = spanned.result
    audited = worker.task_audit_rows(target, task_id)
    audits = audited.result
    step.update(trace_id=trace, feed_item=in_feed[:1], spans=len(spans), audit_rows=[a["id"] for a in audits])
    evidence.record(name="end to end", measured={"feed": len(in_feed), "spans": len(spans), "audit": len(audits)},
                    threshold="1 each, one trace id", verdict=bool(in_feed and spans and audits),
                    query=f"GET {feed_url}; {spanned.query}; {audited.query}")
    assert in_feed, f"task {task_id} is not in the live feed ({feed_url})"
    assert in_feed[0]["trace_id"] == trace and in_feed[0]["status"] == "succeeded", in_feed[0]
    assert [s["trace_id"] for s in spans] == [trace], f"span trace ids {spans} != task trace id {trace}"
    assert [a["run_id"] for a in audits] == [trace], f"audit rows {audits} do not carry trace id {trace}"


@pytest.mark.acceptance
@pytest.mark.control("ACC-002")
def test_forced_error_alerts_and_dead_letters(target, settings, suite, drill_session, override, step, evidence):
    sink = _plane_url(settings, "sink_url", "webhook sink")
    # hold the DLQ replayer while the entry is inspected (a leased override, released by the fixture)
    override("dlq.replayEnabled", False, "acceptance: keep the forced-error DLQ entry still while it is checked")
    before = httpx.get(sink + "/received", params={"path": "/slack"}, timeout=10).json()["count"]
    task_id = levers.enqueue_synthetic(drill_session.dsn, suite.run_id, force_error=True)
    step["task_id"] = task_id
    try:
        quarantined = _wait(lambda: _task(target, task_id)["status"] == "quarantined", timeout=60)
        task = _task(target, task_id)
        step["task"] = task
        assert quarantined, f"forced-error task {task_id} was not quarantined within 60 s (status {task['status']})"
        trace = task["trace_id"]
        link = settings.trace_link_template.format(trace_id=trace)

        def slack_message():
            got = httpx.get(sink + "/received", params={"path": "/slack", "since": before}, timeout=10).json()
            return [i for i in got["items"] if trace in json.dumps(i.get("body"))]

        messages = _wait(slack_message, timeout=20)
        dead = dlq.task_entries(target, task_id)
        entries = dead.result
        step.update(trace_id=trace, slack_messages=len(messages or []), dlq_ids=[d["id"] for d in entries])
        evidence.record(name="forced error", measured={"slack": len(messages or []), "dlq": len(entries)},
                        threshold=">= 1 each", verdict=bool(messages and entries),
                        query=f"GET {sink}/received?path=/slack; {dead.query}")
        assert messages, f"no Slack-format message mentioning trace {trace} reached the sink"
        body = messages[0]["body"]
        assert isinstance(body.get("text"), str) and isinstance(body.get("blocks"), list), "not a Slack payload"
        assert link in json.dumps(body), f"the Slack message lacks the trace link {link}"
        assert entries, f"no DLQ entry for task {task_id}"
    finally:
        step["cleanup"] = levers.clean_up_forced_error(drill_session.dsn, task_id, suite.run_id)


@pytest.mark.acceptance
@pytest.mark.control("ACC-003")
def test_rls_cross_read_is_zero(target, step, evidence):
    m = tenancy.cross_tenant_matrix(target)          # the daily control's matrix, not a copy
    step.update(m.summary())
    evidence.require(not m.unproven() and len(m.tenants) >= 2, "the isolation matrix has unproven zeros")
    evidence.check("cross-tenant rows read", sum(x["rows_at_least"] for x in m.leaks), "==", 0, detail=m.summary())


@pytest.mark.acceptance
@pytest.mark.control("ACC-004")
def test_kill_switch_stops_and_resumes(target, suite, plane_settings, drill_session, override, step, evidence):
    """The drills' lever (a leased autonomy.emergencyStop override), exercised on one synthetic task."""
    cycle = float(plane_settings.cycle_s)
    stop = override("autonomy.emergencyStop", True, "acceptance: the kill switch stops the loop")
    t_stop = flag_overrides.override_times(target, stop.id).result["created_at"]

    def worker_halted():
        return worker.worker_halted_since(target, t_stop).result

    halted = _wait(worker_halted, timeout=2 * cycle + 1)
    task_id = levers.enqueue_synthetic(drill_session.dsn, suite.run_id)
    time.sleep(2 * cycle)
    held = _task(target, task_id)["status"]
    step.update(task_id=task_id, halted=bool(halted), status_during_stop=held)
    assert halted, f"the worker did not report itself halted within {2 * cycle + 1:g}s of autonomy.emergencyStop"
    assert held == "queued", f"a task was claimed under the emergency stop (status {held})"
    override.release(stop, "acceptance: resume the loop")
    t_go = flag_overrides.override_times(target, stop.id).result["released_at"]
    ran = _wait(lambda: _task(target, task_id)["status"] == "succeeded", timeout=5 * cycle + 5)
    started = worker.task_started_at(target, task_id).result
    resume_s = (started - t_go).total_seconds() if started else None
    executed = worker.task_executions(target, [task_id])
    executions = executed.result["n"]
    step.update(resume_latency_s=resume_s, executions=executions)
    assert ran, f"task {task_id} did not run after the kill switch was released"
    evidence.check("resume latency", round(resume_s / cycle, 3), "<=", 1.1, unit=" cycles")
    evidence.check("executions of the held task", executions, "==", 1, query=executed.query)


@pytest.mark.acceptance
@pytest.mark.control("ACC-005")
def test_todays_pack_passes(suite, step, evidence):
    from opsproof.evidence.verify import verify_pack

    pack = suite.root / suite.day.isoformat()
    step["pack"] = str(pack)
    assert pack.is_dir(), f"no evidence pack for {suite.day} at {pack}: run the daily suite first (make daily)"
    result = verify_pack(pack)
    assert result.ok, f"today's pack does not verify: {result.problems[0]}"
    results_file = pack / "results.json"
    assert results_file.exists(), f"today's pack has no daily results ({results_file.name}): run `pytest -m daily`"
    daily = json.loads(results_file.read_text())
    red = [f"{c['id']} {c['verdict']}" for c in daily["controls"] if c["verdict"] != "pass"]
    step.update(controls=len(daily["controls"]), red=red, suite=daily.get("suite"))
    evidence.record(name="daily controls not green", measured=len(red), threshold="== 0", verdict=not red)
    assert daily["controls"], "today's daily results hold no controls"
    assert not red, f"today's daily pack is not green: {', '.join(red[:10])}"



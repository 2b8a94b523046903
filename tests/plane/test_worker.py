"""The agent worker pool as a real process against a real database."""

from __future__ import annotations

import time

import httpx
from plane_helpers import audit_max, audit_since, release_flags, set_flag, wait_for

CYCLE = 0.5


def _enqueue(db, n: int, kind: str = "quote", payload: str = "{}", canary: bool = False) -> None:
    db.execute("insert into ops.agent_tasks (kind, payload, canary) select %s, %s::jsonb, %s from generate_series(1, %s::int)",
               (kind, payload, canary, n))


def _count(db, status: str) -> int:
    return db.execute("select count(*) from ops.agent_tasks where status = %s", (status,)).fetchone()[0]


def _beat(db, component="plane.worker"):
    return db.execute("select beat_at, detail from ops.heartbeats where component = %s", (component,)).fetchone()


def test_emergency_stop_halts_within_one_cycle_and_resumes_within_one_cycle(clean, spawn):
    db = clean
    db.execute("update ops.budgets set value = 5 where key = 'agent.concurrency'")
    _enqueue(db, 3000, payload='{"sleep_ms": 10}')
    w = spawn("worker", OPSPROOF_PLANE_CYCLE_S=CYCLE)
    wait_for(lambda: _count(db, "succeeded") >= 50, what="worker draining the queue")

    set_flag(db, "autonomy.emergencyStop", "true")
    t_stop = db.execute("select clock_timestamp()").fetchone()[0]
    time.sleep(3 * CYCLE)
    last_claim = db.execute("select max(started_at) from ops.agent_tasks").fetchone()[0]
    halt_latency = max(0.0, (last_claim - t_stop).total_seconds())
    queued_then = _count(db, "queued")
    time.sleep(2 * CYCLE)
    assert _count(db, "queued") == queued_then > 0, "claims continued under the emergency stop"
    assert _count(db, "running") == 0
    assert halt_latency <= CYCLE + 0.1, f"halted {halt_latency:.3f}s after the stop (cycle {CYCLE}s)"

    release_flags(db)
    t_go = db.execute("select clock_timestamp()").fetchone()[0]
    first = wait_for(lambda: db.execute("select min(started_at) from ops.agent_tasks where started_at > %s",
                                        (t_go,)).fetchone()[0], timeout=5, what="resume")
    resume_latency = (first - t_go).total_seconds()
    assert resume_latency <= CYCLE + 0.1, f"resumed {resume_latency:.3f}s after release (cycle {CYCLE}s)"
    print(f"\nworker halt latency {halt_latency * 1000:.0f} ms, resume latency {resume_latency * 1000:.0f} ms "
          f"(cycle {CYCLE * 1000:.0f} ms)")
    assert w.proc.poll() is None


def test_autonomous_disabled_claims_nothing_and_safe_mode_runs_only_safe_kinds(clean, spawn):
    db = clean
    set_flag(db, "agents.autonomousEnabled", "false")
    spawn("worker", OPSPROOF_PLANE_CYCLE_S=CYCLE)
    wait_for(lambda: _beat(db), what="heartbeat")
    _enqueue(db, 5, "quote")
    time.sleep(3 * CYCLE)
    assert _count(db, "queued") == 5
    assert _beat(db)[1]["halted"] is True

    release_flags(db)
    set_flag(db, "autonomy.mode", '"SAFE"')
    _enqueue(db, 3, "dispatch")
    _enqueue(db, 3, "invoice")
    _enqueue(db, 3, "notify")
    wait_for(lambda: _count(db, "succeeded") == 8, timeout=10, what="safe kinds done")
    time.sleep(2 * CYCLE)
    left = dict(db.execute("select kind, count(*) from ops.agent_tasks where status = 'queued' group by kind").fetchall())
    assert left == {"dispatch": 3, "invoice": 3}


def test_concurrency_never_exceeds_budget_under_a_backlog_of_1000(clean, spawn):
    db = clean
    budget = 5
    db.execute("update ops.budgets set value = %s::int where key = 'agent.concurrency'", (budget,))
    _enqueue(db, 1000, payload='{"sleep_ms": 8}')
    # two worker processes (64 threads between them) compete for the same budget
    spawn("worker", OPSPROOF_PLANE_CYCLE_S=CYCLE)
    spawn("worker", OPSPROOF_PLANE_CYCLE_S=CYCLE)
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        running, done = db.execute("select count(*) filter (where status = 'running'), "
                                   "count(*) filter (where status = 'succeeded') from ops.agent_tasks").fetchone()
        samples.append(running)
        if done == 1000:
            break
    assert done == 1000, f"only {done} of 1000 done"
    assert max(samples) <= budget, f"running peaked at {max(samples)} > budget {budget}"
    assert max(samples) == budget, "the sampler never saw the pool at its budget"
    print(f"\n{len(samples)} samples, peak running {max(samples)} (budget {budget}), "
          f"1000 tasks in {time.monotonic() - t0:.1f}s")


def test_failing_task_retries_then_quarantines_with_dlq_span_audit_and_alert(clean, spawn, tmp_path):
    db = clean
    sink = spawn("sink", OPSPROOF_SINK_PORT=_port())
    sink_url = f"http://127.0.0.1:{sink_port_of(sink)}"
    wait_for(lambda: _ok(sink_url + "/healthz"), what="sink up")
    a0 = audit_max(db)
    spawn("worker", OPSPROOF_PLANE_CYCLE_S=CYCLE, MAX_RETRY_ATTEMPTS=3, ALERT_WEBHOOK_URL=sink_url + "/slack")
    tid = db.execute("insert into ops.agent_tasks (kind, payload, canary) values ('quote', '{\"force_error\": true}', true) "
                     "returning id").fetchone()[0]
    wait_for(lambda: _count(db, "quarantined") == 1, timeout=15, what="quarantine")
    status, attempts, quarantined, trace = db.execute(
        "select status, attempts, quarantined, trace_id from ops.agent_tasks where id = %s", (tid,)).fetchone()
    assert (status, attempts, quarantined) == ("quarantined", 3, True)
    assert db.execute("select count(*) from ops.dlq where task_id = %s", (tid,)).fetchone()[0] == 1
    spans = db.execute("select name, flow, canary, attributes->>'status' from ops.spans where task_id = %s "
                       "and trace_id = %s", (tid, trace)).fetchall()
    assert len(spans) == 3 and all(s[:3] == ("agent.task.execute", "canary", True) for s in spans)
    actions = [a[0] for a in audit_since(db, a0)]
    assert actions == ["agent.task.retry", "agent.task.retry", "agent.task.quarantine"]
    alert = db.execute("select severity, source, trace_id from ops.alerts").fetchall()
    assert alert == [("high", "plane.worker", trace)]
    got = wait_for(lambda: httpx.get(sink_url + "/received", params={"path": "/slack"}).json()["items"],
                   what="alert at the sink")
    assert trace in got[0]["body"]["text"]

    ok_id = db.execute("insert into ops.agent_tasks (kind) values ('track') returning id").fetchone()[0]
    wait_for(lambda: db.execute("select status from ops.agent_tasks where id = %s", (ok_id,)).fetchone()[0] == "succeeded",
             what="a healthy task")
    # a non-canary task's span is exported by the worker's BatchSpanProcessor shortly after (canaries before commit)
    wait_for(lambda: db.execute("select count(*) from ops.spans where task_id = %s and flow = 'agent'",
                                (ok_id,)).fetchone()[0] == 1, what="the healthy task's span")


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sink_port_of(component) -> int:
    return int(component.env["OPSPROOF_SINK_PORT"])


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


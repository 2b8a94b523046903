"""DRL-001 Kill switch: autonomy.emergencyStop halts the worker pool within one cycle, in-flight tasks
finish, flipping it back resumes within one cycle, and no task is lost or duplicated across the stop."""

from __future__ import annotations

import threading
import time

import pytest

from opsproof import clock

from opsproof.levers import workload
from opsproof.measure import flag_overrides, worker

# Halt/resume are measured on the database clock, from the override's transaction start (conservative) to
# the claim transaction's start. The worker reads the flags at the top of each cycle and claims right after,
# so a claim lands at most one cycle plus that refresh's own duration after the flip: TOLERANCE_S covers
# the refresh (a few ms on the embedded stack; 100 ms is the documented ceiling).
TOLERANCE_S = 0.1
TASK_SLEEP_CYCLES = 0.5   # each drill task takes half a cycle: some are always in flight at the stop


class Feeder(threading.Thread):
    """Feeds the queue at a steady rate for the whole drill (the system keeps receiving work)."""

    def __init__(self, dsn: str, run_id: str, cycle_s: float, per_tick: int = 4):
        super().__init__(daemon=True, name="drill-feeder")
        self.dsn, self.run_id, self.cycle_s, self.per_tick = dsn, run_id, cycle_s, per_tick
        self.stop = threading.Event()
        self.batches: list[tuple[float, list[int]]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                ids = workload.enqueue_tasks(self.dsn, self.per_tick, "quote",
                                             {"sleep_ms": int(self.cycle_s * TASK_SLEEP_CYCLES * 1000)},
                                             self.run_id, "kill-switch drill workload")
                self.batches.append((time.time(), ids))
                self.stop.wait(self.cycle_s / 5)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the drill
            self.error = exc

    @property
    def ids(self) -> list[int]:
        return sorted(i for _, b in self.batches for i in b)


def _wait(pred, timeout: float, step: float = 0.1):
    return clock.wait_until(pred, timeout, step)


@pytest.mark.drill
@pytest.mark.control("DRL-001")
def test_kill_switch(target, suite, plane_settings, drill_session, override, drill_record, evidence, request):
    cycle = float(plane_settings.cycle_s)
    drill_record.intervals(worker_cycle_s=cycle)
    drill_record.plan([
        "queue ~20 'quote' agent tasks per cycle (payload.drill = run id) for the whole drill",
        f"override autonomy.emergencyStop = true (leased {suite.policy.drills.lease_seconds}s, renewed)",
        "release that override after 3 worker cycles",
    ], request.config)
    run_id = suite.run_id
    feeder = Feeder(drill_session.dsn, run_id, cycle)
    feeder.start()
    try:
        # 1. flowing
        flowing = _wait(lambda: worker.drill_tasks(target, run_id, "succeeded").result, timeout=10 * cycle + 5)
        evidence.require(flowing, "the worker pool executes nothing before the drill: no reaction to observe")
        drill_record.step("flowing", succeeded=flowing)

        # 2. stop
        stop = override("autonomy.emergencyStop", True, "kill switch drill: halt the worker pool")
        t_stop = flag_overrides.override_times(target, stop.id).result["created_at"]
        running_at_stop = worker.running_tasks(target).result
        drill_record.step("stop", override_id=stop.id, t_stop=t_stop, running_at_stop=running_at_stop)
        time.sleep(3 * cycle)
        late = worker.late_claims(target, t_stop, cycle + TOLERANCE_S)
        claims_late = late.result
        last = worker.last_claim(target, t_stop)
        last_claim = last.result
        halt_s = max(0.0, (last_claim - t_stop).total_seconds()) if last_claim else 0.0
        held = worker.queued_drill_tasks(target, run_id).result
        queued_during_stop = len(held)
        drill_record.step("halted", last_claim=last_claim, halt_latency_s=round(halt_s, 3),
                          queued_during_stop=queued_during_stop, late_claims=len(claims_late))
        drill_record.measure("halt_latency_cycles", round(halt_s / cycle, 3), "cycles", "<= 1")
        drill_record.measure("halt_latency_s", round(halt_s, 3), "s")
        drill_record.measure("late_claims", sum(r["n"] for r in claims_late), "tasks", "== 0")
        if claims_late:
            who = ", ".join(f"{r['worker']} claimed {r['n']} (last {(r['last'] - t_stop).total_seconds():.2f}s after "
                            f"the stop)" for r in claims_late)
            evidence.record(name="claims later than 1 cycle after the stop", measured=sum(r["n"] for r in claims_late),
                            threshold="== 0", verdict=False, query=late.query)
            raise AssertionError(f"kill switch did NOT halt the worker pool: with autonomy.emergencyStop=true, tasks "
                                 f"were still claimed more than 1 cycle ({cycle:g}s) after the stop: {who}")
        evidence.check("halt latency", round(halt_s / cycle, 3), "<=", 1.0 + TOLERANCE_S / cycle, unit=" cycles",
                       detail={"halt_latency_s": halt_s, "cycle_s": cycle}, query=last.query)
        evidence.require(queued_during_stop > 0, "no task was waiting during the stop: the halt was not observable")
        settled = _wait(lambda: worker.running_tasks(target).result == 0, timeout=2 * cycle + 2)
        if not settled:
            n = worker.running_tasks(target).result
            raise AssertionError(f"in-flight tasks did NOT finish under the emergency stop: {n} task(s) still "
                                 f"running {5 * cycle + 2:g}s after the stop")
        inflight_finished = worker.inflight_finished(target, t_stop, cycle + TOLERANCE_S).result
        drill_record.step("inflight.finished", finished_after_stop=inflight_finished)

        # 3. resume
        override.release(stop, "kill switch drill: resume")
        t_go = flag_overrides.override_times(target, stop.id).result["released_at"]
        first = _wait(lambda: worker.first_claim_after(target, t_go).result, timeout=5 * cycle + 2)
        resume_s = (first - t_go).total_seconds() if first else None
        drill_record.step("resumed", t_go=t_go, first_claim=first,
                          resume_latency_s=None if resume_s is None else round(resume_s, 3))
        drill_record.measure("resume_latency_cycles", None if resume_s is None else round(resume_s / cycle, 3),
                             "cycles", "<= 1")
        if resume_s is None:
            raise AssertionError(f"tasks did NOT flow again after autonomy.emergencyStop was released: no claim "
                                 f"within {5 * cycle + 2:g}s")
        evidence.check("resume latency", round(resume_s / cycle, 3), "<=", 1.0 + TOLERANCE_S / cycle,
                       unit=" cycles", detail={"resume_latency_s": resume_s, "cycle_s": cycle})
        time.sleep(cycle)
    finally:
        feeder.stop.set()
        feeder.join(10)
    if feeder.error:
        raise feeder.error

    # 4. drain: every task queued during the drill runs exactly once
    enqueued = feeder.ids
    done = _wait(lambda: worker.tasks_finished(target, enqueued).result == len(enqueued), timeout=20 * cycle + 10)
    drained = worker.drain_stats(target, t_stop, t_go, held, enqueued)
    stats = drained.result
    executed = worker.task_executions(target, enqueued)
    executions = executed.result
    drill_record.step("drained", all_done=bool(done), enqueued=len(enqueued), **stats, executions=executions)

    drill_record.measure("tasks_enqueued", len(enqueued), "tasks")
    drill_record.measure("tasks_executed", executions["n"], "executions", f"== {len(enqueued)}")
    drill_record.measure("enqueued_during_stop", stats["enqueued_during_stop"], "tasks")
    drill_record.measure("held_by_the_stop", stats["held_by_the_stop"], "tasks")

    evidence.check("tasks not finished after the drill", len(enqueued) - stats["succeeded"], "==", 0,
                   detail=stats, query=drained.query)
    evidence.check("tasks executed more than once", executions["n"] - executions["distinct_tasks"] + stats["reclaimed"],
                   "==", 0, detail=executions, query=executed.query)
    evidence.check("tasks held by the stop that did not run (once) after the resume",
                   stats["held_by_the_stop"] - stats["held_run_after_resume"], "==", 0, detail=stats,
                   query=drained.query)

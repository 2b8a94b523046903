"""Agent worker pool: `python -m opsproof.plane.worker`.

Every cycle (OPSPROOF_PLANE_CYCLE_S, default 1 s) it beats into ops.heartbeats and re-reads the
effective flags and the concurrency budget. Between refreshes it claims queued ops.agent_tasks with
FOR UPDATE SKIP LOCKED whenever a slot is free, and runs them on a bounded thread pool.

Rails:
- autonomy.emergencyStop=true or agents.autonomousEnabled=false -> claims nothing new (in-flight tasks finish).
- autonomy.mode=SAFE -> claims only canary-safe kinds (CANARY_SAFE_KINDS: quote, track, notify).
- never more 'running' rows than budget agent.concurrency: claims are serialised by a transaction-level
  advisory lock and sized by (budget - running rows), so the cap holds across worker processes too.
- a failing task (kind 'fail' or payload {"force_error": true}) is re-queued until it has been attempted
  MAX_RETRY_ATTEMPTS times, then quarantined: status quarantined + quarantined=true + an ops.dlq row +
  an alert (ops.alerts + Slack payload). AUTO_RECOVERY=false: no retry, the first failure quarantines.

Each execution is one OpenTelemetry span `agent.task.execute` (opentelemetry-sdk; when obs.otelEnabled) on the
task's trace (ops.agent_tasks.trace_id; a child of the ingest request's span when the task carries a W3C
`traceparent` in its payload), exported by a BatchSpanProcessor into ops.spans (span_export.py), and an audit
row. A canary task's span is flushed before its status commits, so a finished canary always has its span.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from opentelemetry import trace as otel_trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Status, StatusCode
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from opsproof.plane import common, notifier, span_export
from opsproof.plane.settings import PlaneSettings, load_or_exit

log = logging.getLogger("opsproof.plane.worker")
COMPONENT = "plane.worker"
CLAIM_LOCK = "opsproof.plane.worker.claim"


class TaskError(RuntimeError):
    pass


@dataclass
class Task:
    id: int
    kind: str
    payload: dict
    tenant_id: object
    trace_id: str
    canary: bool
    attempts: int


class WorkerPool:
    def __init__(self, settings: PlaneSettings, name: str | None = None, provider=None) -> None:
        self.settings = settings
        self.provider = provider or span_export.setup_tracing(COMPONENT, settings.db_url)
        self.tracer = self.provider.get_tracer("opsproof.plane.worker")
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.size = settings.worker_pool_max
        self.control = common.connect(settings.db_url, app="opsproof-plane-worker")
        self.pool = ConnectionPool(settings.db_url, min_size=1, max_size=self.size, open=True,
                                   kwargs={"application_name": "opsproof-plane-worker-task"})
        self.executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="task")
        self.lock = threading.Lock()
        self.inflight = 0
        self.wake = threading.Event()
        self.flags: common.Flags | None = None
        self.budget = 0
        self.stats = {"succeeded": 0, "retried": 0, "quarantined": 0, "claimed": 0}

    # -- control ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.flags = common.read_flags(self.control)
        self.budget = int(common.read_budget(self.control, "agent.concurrency", 0))
        self.control.execute(
            """update ops.agent_tasks set status = 'queued', worker = null, error = 'requeued: timed out running'
                where status = 'running' and started_at < now() - make_interval(secs => %s::float8)""",
            (self.settings.task_timeout_s,))
        common.heartbeat(self.control, COMPONENT, {
            "worker": self.name, "inflight": self.inflight, "budget": self.budget,
            "halted": not self.flags.agents_may_claim, "mode": self.flags.mode, **self.stats})

    def requeue_orphans(self) -> int:
        """Rows left 'running' by a dead worker process on this host go back to the queue."""
        host = socket.gethostname()
        rows = self.control.execute(
            "select id, worker from ops.agent_tasks where status = 'running' and worker like %s", (f"{host}:%",)).fetchall()
        dead = []
        for task_id, worker in rows:
            try:
                pid = int(worker.rsplit(":", 1)[1])
            except (ValueError, IndexError):
                continue
            if worker != self.name and not _pid_alive(pid):
                dead.append(task_id)
        if dead:
            self.control.execute("update ops.agent_tasks set status = 'queued', worker = null, "
                                 "error = 'requeued: worker died' where id = any(%s) and status = 'running'", (dead,))
        return len(dead)

    def claim(self, want: int) -> list[Task]:
        if want <= 0 or self.flags is None or not self.flags.agents_may_claim:
            return []
        kinds = sorted(common.CANARY_SAFE_KINDS) if self.flags.mode == "SAFE" else None
        with self.control.transaction():
            self.control.execute("select pg_advisory_xact_lock(hashtext(%s))", (CLAIM_LOCK,))
            running = self.control.execute("select count(*) from ops.agent_tasks where status = 'running'").fetchone()[0]
            slots = min(want, self.budget - running)
            if slots <= 0:
                return []
            cur = self.control.cursor(row_factory=dict_row)
            rows = cur.execute(
                """with c as (
                     select id from ops.agent_tasks
                      where status = 'queued' and (%(kinds)s::text[] is null or kind = any(%(kinds)s::text[]))
                      order by id limit %(n)s::int
                      for update skip locked)
                   update ops.agent_tasks t
                      set status = 'running', started_at = now(), attempts = t.attempts + 1, worker = %(w)s,
                          trace_id = coalesce(t.trace_id, md5(random()::text || t.id::text))
                     from c where t.id = c.id
                   returning t.id, t.kind, t.payload, t.tenant_id, t.trace_id, t.canary, t.attempts""",
                {"kinds": kinds, "n": slots, "w": self.name}).fetchall()
        self.stats["claimed"] += len(rows)
        return [Task(**r) for r in sorted(rows, key=lambda r: r["id"])]

    # -- execution -------------------------------------------------------------------------------
    def _work(self, conn: psycopg.Connection, task: Task) -> None:
        """A few ms of real DB work decided by the task kind."""
        payload = task.payload if isinstance(task.payload, dict) else {}
        sleep_ms = float(payload.get("sleep_ms", 0) or 0)
        if sleep_ms > 0:
            conn.execute("select pg_sleep(%s::float8)", (sleep_ms / 1000.0,))
        conn.execute("insert into ops.agent_logs (ts, task_id, level, message) values (now(), %s, 'info', %s)",
                     (task.id, f"{task.kind} attempt {task.attempts} on {self.name}"))
        if task.kind == "quote":
            conn.execute("select sum(g) from generate_series(1, 2000) g").fetchone()
        elif task.kind == "track":
            conn.execute("select count(*) from ops.agent_tasks where tenant_id is not distinct from %s",
                         (task.tenant_id,)).fetchone()
        elif task.kind in ("notify", "dispatch", "invoice"):
            conn.execute("insert into ops.outbox (tenant_id, topic, payload) values (%s, %s, %s)",
                         (task.tenant_id, f"task.{task.kind}",
                          Jsonb({"task_id": task.id, "trace_id": task.trace_id, **_traceparent()})))
        else:
            conn.execute("select pg_sleep(0.002)")
        if task.kind == "fail" or payload.get("force_error"):
            raise TaskError(f"forced error in task {task.id} ({task.kind})")

    def _start_span(self, task: Task):
        """The task's agent.task.execute span (None when obs.otelEnabled=false)."""
        if self.flags is not None and not self.flags.otel_enabled:
            return None
        payload = task.payload if isinstance(task.payload, dict) else {}
        tp = payload.get("traceparent") if isinstance(payload.get("traceparent"), str) else None
        return span_export.start_task_span(self.tracer, "agent.task.execute", task.trace_id, tp, attributes={
            "task.id": task.id, "tenant.id": str(task.tenant_id) if task.tenant_id else None,
            "task.canary": bool(task.canary), "opsproof.flow": "canary" if task.canary else "agent",
            "kind": task.kind, "attempt": task.attempts, "worker": self.name})

    def _end_span(self, span, task: Task, status: str, error: str | None = None,
                  exc: BaseException | None = None) -> None:
        """End the span (once) and, for a canary, export it now: called before the task's status commits."""
        if span is None or not span.is_recording():
            return
        span.set_attribute("status", status)
        if error:
            span.set_attribute("error", error)
            if exc is not None:
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, error))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end()
        if task.canary:
            self.provider.force_flush(2000)

    def execute(self, task: Task) -> str:
        started, t0 = time.time(), time.perf_counter()
        span = self._start_span(task)
        try:
            try:
                with self.pool.connection() as conn, _current(span):
                    with conn.transaction():
                        self._work(conn, task)
                        conn.execute("update ops.agent_tasks set status = 'succeeded', finished_at = now(), error = null "
                                     "where id = %s", (task.id,))
                        common.audit(conn, "agents@", "agent.task.execute", f"ops.agent_tasks/{task.id}", "succeeded",
                                     task.trace_id, {"kind": task.kind, "attempt": task.attempts, "canary": task.canary})
                        self._end_span(span, task, "ok")
                self.stats["succeeded"] += 1
                return "succeeded"
            except Exception as exc:  # noqa: BLE001 - any task error is recorded, never kills the pool
                return self._failed(task, started, (time.perf_counter() - t0) * 1000, exc, span)
        finally:
            with self.lock:
                self.inflight -= 1
            self.wake.set()

    def _failed(self, task: Task, started: float, ms: float, exc: Exception, span=None) -> str:
        error = f"{type(exc).__name__}: {exc}"[:500]
        retry = self.settings.auto_recovery and task.attempts < self.settings.max_retry_attempts
        with self.pool.connection() as conn:
            with conn.transaction():
                if retry:
                    conn.execute("update ops.agent_tasks set status = 'queued', worker = null, error = %s where id = %s",
                                 (error, task.id))
                else:
                    conn.execute("""update ops.agent_tasks set status = 'quarantined', quarantined = true,
                                           finished_at = now(), error = %s where id = %s""", (error, task.id))
                    body = {"kind": task.kind, "payload": task.payload, "trace_id": task.trace_id,
                            "attempts": task.attempts, "canary": task.canary}
                    conn.execute("""insert into ops.dlq (task_id, tenant_id, payload, bytes, error)
                                    values (%s, %s, %s, octet_length(%s::jsonb::text), %s)""",
                                 (task.id, task.tenant_id, Jsonb(body), Jsonb(body), error))
                self._end_span(span, task, "error", error, exc)
                common.audit(conn, "agents@", "agent.task.retry" if retry else "agent.task.quarantine",
                             f"ops.agent_tasks/{task.id}", error, task.trace_id,
                             {"kind": task.kind, "attempt": task.attempts, "max": self.settings.max_retry_attempts})
            if retry:
                self.stats["retried"] += 1
                return "retried"
            self.stats["quarantined"] += 1
            recent = conn.execute("select count(*) from ops.agent_tasks where status = 'quarantined' "
                                  "and finished_at > now() - interval '1 hour'").fetchone()[0]
            conn.commit()
        try:
            with self.pool.connection() as conn:
                conn.autocommit = True
                try:
                    notifier.notify(conn, self.settings,
                                    severity="critical" if recent >= self.settings.escalation_threshold else "high",
                                    source=COMPONENT, title=f"task {task.id} ({task.kind}) quarantined after "
                                    f"{task.attempts} attempt(s)", trace_id=task.trace_id, parent=span,
                                    detail={"task_id": task.id, "kind": task.kind, "error": error,
                                            "quarantined_last_hour": recent})
                finally:
                    conn.autocommit = False
        except Exception as exc:  # noqa: BLE001 - the quarantine stands even if the alert path fails
            log.warning("alert for task %s failed: %s", task.id, type(exc).__name__)
        return "quarantined"

    # -- loop ------------------------------------------------------------------------------------
    def submit(self, tasks: list[Task]) -> None:
        for task in tasks:
            with self.lock:
                self.inflight += 1
            self.executor.submit(self.execute, task)

    def run(self, stop: threading.Event) -> None:
        self.requeue_orphans()
        cycle = self.settings.cycle_s
        next_refresh = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                try:
                    self.refresh()
                except psycopg.Error as exc:
                    log.warning("refresh failed (%s); reconnecting", type(exc).__name__)
                    self._reconnect()
                    stop.wait(cycle)
                    continue
                next_refresh = now + cycle
            free = self.size - self.inflight
            claimed = []
            if free > 0 and self.flags and self.flags.agents_may_claim:
                try:
                    claimed = self.claim(free)
                except psycopg.Error as exc:
                    log.warning("claim failed (%s)", type(exc).__name__)
                    self._reconnect()
                self.submit(claimed)
            if claimed:
                continue
            # Nothing to claim (empty queue, halted, or at budget): wait for a completion or poll again.
            self.wake.wait(max(0.0, min(next_refresh - time.monotonic(), cycle / 10)))
            self.wake.clear()
        self.close()

    def _reconnect(self) -> None:
        try:
            self.control.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.control = common.connect(self.settings.db_url, app="opsproof-plane-worker")
        except psycopg.Error:
            pass

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        span_export.shutdown_tracing(self.provider)  # flush the queued spans before the process goes
        self.pool.close()
        self.control.close()


def _current(span):
    """Make the task's span the current one (its events then carry its traceparent); a no-op without a span."""
    if span is None:
        return contextlib.nullcontext()
    return otel_trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def _traceparent() -> dict:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> None:
    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    stopper = common.Stopper().install()
    pool = WorkerPool(settings)
    log.info("worker pool up: %d threads, cycle %.2fs", pool.size, settings.cycle_s)
    pool.run(stopper.event)


if __name__ == "__main__":
    main()

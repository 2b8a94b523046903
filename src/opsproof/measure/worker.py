"""What the worker pool did with agent tasks (ops.agent_tasks, its execution audit rows, spans, heartbeat): the
drills' and acceptance steps' observations. Every function takes a Target or a psycopg Connection."""

from __future__ import annotations

from datetime import datetime

from opsproof.measure import _db
from opsproof.measure.models import Measurement
from opsproof.recorder import MeasurementError

DRILL_TASKS_SQL = "select count(*) from ops.agent_tasks where payload->>'drill' = %s and status = %s"
QUEUED_DRILL_TASKS_SQL = "select id from ops.agent_tasks where payload->>'drill' = %s and status = 'queued'"
RUNNING_SQL = "select count(*) from ops.agent_tasks where status = 'running'"
LATE_CLAIMS_SQL = ("select worker, count(*) as n, max(started_at) as last from ops.agent_tasks "
                   "where started_at > %s + make_interval(secs => %s::float8) group by worker")
LAST_CLAIM_SQL = "select max(started_at) from ops.agent_tasks where started_at >= %s - interval '1 hour'"
INFLIGHT_FINISHED_SQL = (
    "select count(*) from ops.agent_tasks where started_at <= %s + make_interval(secs => %s::float8) "
    "and started_at >= %s - interval '1 hour' and status = 'succeeded' and finished_at > %s")
FIRST_CLAIM_SQL = "select min(started_at) from ops.agent_tasks where started_at > %s"
FINISHED_SQL = ("select count(*) from ops.agent_tasks where id = any(%s::bigint[]) "
                "and status in ('succeeded', 'failed', 'quarantined')")
DRAIN_SQL = """select count(*) filter (where t.status = 'succeeded') as succeeded,
       count(*) filter (where t.status <> 'succeeded') as not_succeeded,
       count(*) filter (where t.attempts <> 1) as reclaimed,
       count(*) filter (where t.enqueued_at > %s and t.enqueued_at < %s) as enqueued_during_stop,
       count(*) filter (where t.id = any(%s::bigint[])) as held_by_the_stop,
       count(*) filter (where t.id = any(%s::bigint[]) and t.started_at >= %s and t.status = 'succeeded')
         as held_run_after_resume
  from ops.agent_tasks t where t.id = any(%s::bigint[])"""
EXECUTIONS_SQL = ("select count(*) as n, count(distinct target) as distinct_tasks from ops.audit_log "
                  "where action = 'agent.task.execute' and target = any(%s::text[])")
TASK_SQL = "select id, status, trace_id, attempts, finished_at from ops.agent_tasks where id = %s"
STARTED_AT_SQL = "select started_at from ops.agent_tasks where id = %s"
TASK_SPANS_SQL = "select trace_id, name from ops.spans where task_id = %s and name = 'agent.task.execute'"
TASK_AUDIT_SQL = "select id, run_id from ops.audit_log where action = 'agent.task.execute' and target = %s"
HALTED_SQL = ("select (detail->>'halted')::boolean and beat_at > %s from ops.heartbeats "
              "where component = 'plane.worker'")


def _target_of(task_id: int) -> str:
    return f"ops.agent_tasks/{task_id}"


def drill_tasks(db, run_id: str, status: str) -> Measurement[int]:
    """Agent tasks of a drill run (payload.drill = run id) in one status."""
    params = (run_id, status)
    return Measurement(int(_db.value(db, DRILL_TASKS_SQL, params)), DRILL_TASKS_SQL, params)


def queued_drill_tasks(db, run_id: str) -> Measurement[list[int]]:
    """Ids of a drill run's tasks still queued."""
    params = (run_id,)
    return Measurement([r["id"] for r in _db.rows(db, QUEUED_DRILL_TASKS_SQL, params)], QUEUED_DRILL_TASKS_SQL,
                       params)


def running_tasks(db) -> Measurement[int]:
    """Tasks running right now (any run)."""
    return Measurement(int(_db.value(db, RUNNING_SQL)), RUNNING_SQL)


def late_claims(db, since: datetime, after_s: float) -> Measurement[list[dict]]:
    """Per worker: tasks claimed more than after_s seconds after `since` ({"worker", "n", "last"})."""
    params = (since, float(after_s))
    return Measurement(_db.rows(db, LATE_CLAIMS_SQL, params), LATE_CLAIMS_SQL, params)


def last_claim(db, since: datetime) -> Measurement[datetime | None]:
    """The newest claim (started_at) from an hour before `since` on."""
    params = (since,)
    return Measurement(_db.value(db, LAST_CLAIM_SQL, params), LAST_CLAIM_SQL, params)


def inflight_finished(db, stop: datetime, after_s: float) -> Measurement[int]:
    """Tasks claimed up to after_s seconds after `stop` (and at most an hour before) that succeeded after it."""
    params = (stop, float(after_s), stop, stop)
    return Measurement(int(_db.value(db, INFLIGHT_FINISHED_SQL, params)), INFLIGHT_FINISHED_SQL, params)


def first_claim_after(db, since: datetime) -> Measurement[datetime | None]:
    """The first claim (started_at) after `since`; None while there is none."""
    params = (since,)
    return Measurement(_db.value(db, FIRST_CLAIM_SQL, params), FIRST_CLAIM_SQL, params)


def tasks_finished(db, ids: list[int]) -> Measurement[int]:
    """How many of the given tasks reached a final status (succeeded, failed, quarantined)."""
    params = (list(ids),)
    return Measurement(int(_db.value(db, FINISHED_SQL, params)), FINISHED_SQL, params)


def drain_stats(db, stop: datetime, go: datetime, held: list[int], enqueued: list[int]) -> Measurement[dict]:
    """Over the enqueued tasks: succeeded, not_succeeded, reclaimed (attempts <> 1), enqueued_during_stop,
    held_by_the_stop (ids in `held`) and held_run_after_resume (held ones started at/after `go` and succeeded)."""
    params = (stop, go, list(held), list(held), go, list(enqueued))
    return Measurement(_db.rows(db, DRAIN_SQL, params)[0], DRAIN_SQL, params)


def task_executions(db, task_ids: list[int]) -> Measurement[dict]:
    """{"n": agent.task.execute audit rows of the tasks, "distinct_tasks": tasks among them}."""
    params = ([_target_of(i) for i in task_ids],)
    return Measurement(_db.rows(db, EXECUTIONS_SQL, params)[0], EXECUTIONS_SQL, params)


def task(db, task_id: int) -> Measurement[dict]:
    """{"id", "status", "trace_id", "attempts", "finished_at"} of one task (a MeasurementError if it is gone)."""
    params = (task_id,)
    got = _db.rows(db, TASK_SQL, params)
    if not got:
        raise MeasurementError(f"agent task {task_id} is not in ops.agent_tasks")
    return Measurement(got[0], TASK_SQL, params)


def task_started_at(db, task_id: int) -> Measurement[datetime | None]:
    """When the worker claimed one task (None before it did)."""
    params = (task_id,)
    return Measurement(_db.value(db, STARTED_AT_SQL, params), STARTED_AT_SQL, params)


def task_spans(db, task_id: int) -> Measurement[list[dict]]:
    """The agent.task.execute spans of one task ({"trace_id", "name"})."""
    params = (task_id,)
    return Measurement(_db.rows(db, TASK_SPANS_SQL, params), TASK_SPANS_SQL, params)


def task_audit_rows(db, task_id: int) -> Measurement[list[dict]]:
    """The agent.task.execute audit rows of one task ({"id", "run_id"})."""
    params = (_target_of(task_id),)
    return Measurement(_db.rows(db, TASK_AUDIT_SQL, params), TASK_AUDIT_SQL, params)


def worker_halted_since(db, since: datetime) -> Measurement[bool | None]:
    """Whether the worker's heartbeat after `since` says it is halted (None: no worker heartbeat)."""
    params = (since,)
    return Measurement(_db.value(db, HALTED_SQL, params), HALTED_SQL, params)

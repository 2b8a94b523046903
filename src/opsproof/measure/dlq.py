"""The DLQ: what a replay did (the replay rails drill's proof of a hard stop: items stamped replayed, tasks
re-created, the ops.dlq_replays row) and a task's dead letters. Every function takes a Target or a psycopg
Connection -- the drill reads inside its own transaction, where its drill-made items live."""

from __future__ import annotations

from opsproof.measure import _db
from opsproof.measure.models import Measurement

REPLAYED_SQL = "select count(*) from ops.dlq where id = any(%s::bigint[]) and replayed_at is not null"
RAILS_TASKS_SQL = ("select count(*) from ops.agent_tasks where payload->>'drill' = %s and enqueued_at >= "
                   "now() - interval '1 hour' and kind = 'quote' and payload ? 'rails'")
RAILS_SUCCEEDED_SQL = ("select count(*) from ops.agent_tasks where payload->>'drill' = %s and payload ? 'rails' "
                       "and status = 'succeeded'")
REPLAY_ROW_SQL = "select status, items, bytes, reason from ops.dlq_replays where id = %s"
TASK_ENTRIES_SQL = "select id, error from ops.dlq where task_id = %s"


def replayed_items(db, ids: list[int]) -> Measurement[int]:
    """How many of the given DLQ items are stamped replayed."""
    params = (list(ids),)
    return Measurement(int(_db.value(db, REPLAYED_SQL, params)), REPLAYED_SQL, params)


def rails_tasks_created(db, run_id: str) -> Measurement[int]:
    """'quote' tasks (re-)created in the last hour from a drill run's rails items (payload.rails)."""
    params = (run_id,)
    return Measurement(int(_db.value(db, RAILS_TASKS_SQL, params)), RAILS_TASKS_SQL, params)


def rails_tasks_succeeded(db, run_id: str) -> Measurement[int]:
    """A drill run's rails tasks (payload.rails) the worker pool ran successfully."""
    params = (run_id,)
    return Measurement(int(_db.value(db, RAILS_SUCCEEDED_SQL, params)), RAILS_SUCCEEDED_SQL, params)


def replay_row(db, replay_id: int) -> Measurement[dict | None]:
    """{"status", "items", "bytes", "reason"} of one ops.dlq_replays row (None if there is no such row)."""
    params = (replay_id,)
    got = _db.rows(db, REPLAY_ROW_SQL, params)
    return Measurement(got[0] if got else None, REPLAY_ROW_SQL, params)


def task_entries(db, task_id: int) -> Measurement[list[dict]]:
    """The DLQ entries of one agent task ({"id", "error"})."""
    params = (task_id,)
    return Measurement(_db.rows(db, TASK_ENTRIES_SQL, params), TASK_ENTRIES_SQL, params)

"""Acceptance levers: the synthetic work done-done acceptance feeds the system, and its clean-up. Audited."""

from __future__ import annotations


from opsproof.levers.common import audit, connection
from opsproof.levers.workload import enqueue_tasks


def enqueue_synthetic(where, run_id: str, *, force_error: bool = False, canary: bool = True) -> int:
    """One synthetic agent task (payload.drill = run id); force_error makes the worker fail it every attempt."""
    payload = {"synthetic": "acceptance", **({"force_error": True} if force_error else {})}
    [task_id] = enqueue_tasks(where, 1, "quote", payload, run_id,
                              "acceptance: synthetic task" + (" (forced error)" if force_error else ""))
    if canary:
        with connection(where) as conn:
            conn.execute("update ops.agent_tasks set canary = true where id = %s and status = 'queued'", (task_id,))
    return task_id


def clean_up_forced_error(where, task_id: int, run_id: str) -> dict:
    """Undo what the forced error left behind: its DLQ entry (never replayed) and its alert (resolved)."""
    with connection(where) as conn:
        with conn.transaction():
            dlq = conn.execute(
                """delete from ops.dlq where task_id = %s and replayed_at is null
                     and payload->'payload'->>'drill' = %s""", (task_id, run_id)).rowcount
            alerts = conn.execute(
                """update ops.alerts set resolved_at = now() where resolved_at is null
                     and (detail->>'task_id')::bigint = %s""", (task_id,)).rowcount
            audit(conn, action="acceptance.cleanup", target=f"ops.agent_tasks/{task_id}",
                  reason="acceptance: forced-error task's DLQ entry discarded and alert resolved", run_id=run_id,
                  detail={"dlq_discarded": dlq, "alerts_resolved": alerts})
    return {"dlq_discarded": dlq, "alerts_resolved": alerts}



"""The canary ramp over a window: canary agent tasks finished and how many succeeded (CAD-005)."""

from __future__ import annotations

from datetime import datetime

from opsproof.measure.models import Measurement

CANARY_TASKS_SQL = (
    "select count(*) filter (where status in ('succeeded', 'failed', 'quarantined')) as finished, "
    "count(*) filter (where status = 'succeeded' and not quarantined) as succeeded "
    "from ops.agent_tasks where canary and enqueued_at >= %s and enqueued_at < %s")


def canary_tasks(target, start: datetime, end: datetime) -> Measurement[dict]:
    """{"finished", "succeeded", "success_pct" (None when none finished)} of the canary tasks enqueued in the window."""
    params = (start, end)
    row = target.rows(CANARY_TASKS_SQL, params)[0]
    finished, succeeded = int(row["finished"]), int(row["succeeded"])
    result = {"finished": finished, "succeeded": succeeded,
              "success_pct": round(100.0 * succeeded / finished, 3) if finished else None}
    return Measurement(result=result, statement=CANARY_TASKS_SQL, params=params)

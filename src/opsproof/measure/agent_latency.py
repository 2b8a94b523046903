"""Agent task latency: how long finished tasks ran (started -> finished) and waited (enqueued -> started).

One statement over ops.agent_tasks (the dashboard's "task latency"; ops.agent_health counts, it does not time).
"""

from __future__ import annotations

from datetime import datetime

from opsproof.measure import _db
from opsproof.measure.models import Measurement

SQL = """with t as (
  select extract(epoch from finished_at - started_at) as run_s, extract(epoch from started_at - enqueued_at) as wait_s
    from ops.agent_tasks
   where finished_at >= %s and finished_at < %s and started_at is not null
)
select count(*)::int as finished,
       percentile_cont(0.5) within group (order by run_s)::float8 as run_p50_s,
       percentile_cont(0.95) within group (order by run_s)::float8 as run_p95_s,
       max(run_s)::float8 as run_max_s,
       percentile_cont(0.95) within group (order by wait_s)::float8 as wait_p95_s
  from t"""


def task_latency(db, start: datetime, end: datetime) -> Measurement[dict]:
    """{"finished", "run_p50_s", "run_p95_s", "run_max_s", "wait_p95_s"} of the tasks finished in [start, end)
    (the percentiles are None when none finished)."""
    params = (start, end)
    got = _db.rows(db, SQL, params)
    return Measurement(dict(got[0]) if got else {"finished": 0}, SQL, params)

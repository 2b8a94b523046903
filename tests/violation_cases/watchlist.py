"""Watchlist and rotation values that only look healthy."""

from violation_cases import Case

CASES = [
    Case(name="WCH-002/stalled-tasks", red={"WCH-002": "fail"},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, started_at, trace_id) "
                "select 'violation', 'running', now() - interval '3 hours', now() - interval '3 hours', 'violation' "
                "from generate_series(1, 5)",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="tasks that never finish do not lower a success rate over finished tasks; they are stalled"),
    Case(name="WCH-002/stuck-in-queue-since-before-the-window", red={"WCH-002": "fail"},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, trace_id) "
                "values ('violation', 'queued', now() - interval '3 days', 'violation')",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="a task queued before the window and never picked up is still stuck"),
    Case(name="SEC-004/rotated-in-the-future", red={"SEC-004": "error"},
         inject="update ops.service_accounts set rotated_at = rotated_at + interval '400 days' where name = 'ci@'",
         undo="update ops.service_accounts set rotated_at = rotated_at - interval '400 days' where name = 'ci@'",
         why="a future rotation date would make a 400-day-old key look fresh"),
    Case(name="ok/task-queued-a-minute-ago", red={},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, trace_id) "
                "values ('violation', 'queued', now() - interval '1 minute', 'violation')",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="a task waiting its turn is not stalled"),
]

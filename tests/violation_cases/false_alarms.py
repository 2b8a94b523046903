"""False-alarm probes: things that look like violations but are not. The whole daily suite must stay green."""

from __future__ import annotations

import json

import psycopg

from violation_cases import Case

MARK = "false-alarm"


def _peak(conn) -> int:
    doc = conn.execute("select ops.agent_health(now() - interval '24 hours', now())").fetchone()[0]
    doc = doc if isinstance(doc, dict) else json.loads(doc)
    return int(doc["peak_concurrency"])


def _concurrency_exactly_at_budget(stack) -> None:
    """Make the peak number of concurrently running tasks in the daily window exactly the budget (150 <= 150)."""
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        limit = int(conn.execute("select value from ops.budgets where key = 'agent.concurrency'").fetchone()[0])
        for _ in range(20):
            peak = _peak(conn)
            if peak >= limit:
                break
            # every added task runs across the same instant, so the peak there grows by exactly what we add
            # and never past the limit (the peak elsewhere is already <= the measured peak)
            conn.execute(
                "insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id) "
                "select %s, 'succeeded', now() - interval '100 minutes', now() - interval '90 minutes', "
                "now() - interval '89 minutes', %s from generate_series(1, %s)", (MARK, MARK, limit - peak))
        peak = _peak(conn)
    if peak != limit:
        raise RuntimeError(f"could not set the peak concurrency to exactly {limit} (got {peak})")


def _second_replay_of_a_tenant_today(stack) -> None:
    """One more replay batch for a tenant on a UTC day it already had one: 2 per tenant per day, max is strict < 3."""
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        row = conn.execute(
            "with per_day as (select tenant_id, date_trunc('day', at) d, count(*) n, max(at) last "
            "  from ops.dlq_replays where status = 'replayed' and tenant_id is not null group by 1, 2) "
            "select tenant_id, last from per_day where n = 1 and last > now() - interval '20 hours' "
            "and last < now() - interval '1 minute' order by last desc limit 1").fetchone()
        if row is None:
            raise RuntimeError("no tenant with exactly one replay on a day in the window to add a second to")
        tenant, last = row
        conn.execute(
            "insert into ops.dlq_replays (tenant_id, items, bytes, failed, at, status, requested_by) values "
            "(%s, 1, 100, 0, case when date_trunc('day', %s::timestamptz - interval '1 second') = "
            "date_trunc('day', %s::timestamptz) then %s::timestamptz - interval '1 second' "
            "else %s::timestamptz + interval '1 second' end, 'replayed', %s)",
            (tenant, last, last, last, last, MARK))
        n = conn.execute("select count(*) from ops.dlq_replays where tenant_id = %s and status = 'replayed' "
                         "and date_trunc('day', at) = date_trunc('day', %s::timestamptz)", (tenant, last)).fetchone()[0]
    if n != 2:
        raise RuntimeError(f"expected exactly 2 replays of tenant {tenant} that day, got {n}")


CASES = [
    Case(name="ok/expired-override-of-a-required-flag", red={},
         inject="insert into ops.flag_overrides (key, value, owner, run_id, reason, created_at, expires_at) values "
                f"('autonomy.emergencyStop', 'true', '{MARK}', 'fa', 'expired drill', now() - interval '20 minutes', "
                "now() - interval '1 minute')",
         undo=f"delete from ops.flag_overrides where owner = '{MARK}'",
         why="an override past its expiry no longer changes the effective value"),
    Case(name="ok/override-to-the-required-value-by-someone-else", red={},
         inject="insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at) values "
                f"('autonomy.mode', '\"FULL\"', 'someone-else@', 'fa', 'pinning the required value', "
                "now() + interval '10 minutes')",
         undo="delete from ops.flag_overrides where owner = 'someone-else@'",
         why="a live override that sets a flag to its required value keeps it where policy wants it"),
    Case(name="ok/ci-self-heal-on-a-feature-branch", red={},
         inject="insert into ops.ci_events (branch, kind, at, detail) values ('feature/false-alarm', 'self_heal', "
                "now() - interval '1 hour', '{\"false_alarm\": true}')",
         undo="delete from ops.ci_events where detail ? 'false_alarm'",
         why="self-heal triggers count on the policy's branch (main) only"),
    Case(name="ok/resolved-critical-alert", red={},
         inject="insert into ops.alerts (raised_at, resolved_at, severity, source, title) values "
                f"(now() - interval '2 hours', now() - interval '1 hour', 'critical', '{MARK}', 'resolved outage')",
         undo=f"delete from ops.alerts where source = '{MARK}'",
         why="a critical alert that is resolved is not active"),
    Case(name="ok/agent-concurrency-exactly-at-budget", red={},
         inject=_concurrency_exactly_at_budget,
         undo=f"delete from ops.agent_tasks where kind = '{MARK}'",
         why="peak concurrency 150 with a budget of 150: the operator is <= (inclusive)"),
    Case(name="ok/two-replays-of-a-tenant-in-a-day", red={},
         inject=_second_replay_of_a_tenant_today,
         undo=f"delete from ops.dlq_replays where requested_by = '{MARK}'",
         why="2 replays of one tenant in a day against a strict maximum of < 3"),
    Case(name="ok/replay-batch-exactly-at-the-rails", red={},
         inject="insert into ops.dlq_replays (items, bytes, failed, at, status, requested_by) values "
                f"(50, 2097152, 0, now() - interval '1 hour', 'replayed', '{MARK}')",
         undo=f"delete from ops.dlq_replays where requested_by = '{MARK}'",
         why="a batch of exactly 50 items and 2 MB: the rails are <= (inclusive)"),
]

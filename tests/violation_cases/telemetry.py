"""Telemetry that stops arriving is not green (issue #9, class 2).

Each case first tops the session stack's seeded history up to now, then takes the rows of a stretch of one
stream OUT of the stack (kept in this process, as jsonb) and the whole daily suite runs with no further top-up
(a stream that stopped stays stopped). The undo puts every row back, with its id, and checks the count.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from suite_runner import NO_TOP_UP, top_up
from violation_cases import Case

STOPPED = {NO_TOP_UP: "0"}
_HELD: dict[str, list[tuple[str, list]]] = {}


def _take(key: str, *parts: tuple[str, str]):
    """inject/undo that move the rows of each (table, where) out of the stack and back.
    `where` is SQL over the row alias x, relative to now() at inject time."""

    def inject(stack) -> None:
        top_up(Path(stack.dir).parent)
        held = []
        with psycopg.connect(stack.admin_dsn()) as conn:  # one transaction: all taken or none
            for table, where in parts:
                rows = conn.execute(f"select coalesce(jsonb_agg(to_jsonb(x)), '[]'::jsonb) from {table} x "
                                    f"where {where}").fetchone()[0]
                rows = rows if isinstance(rows, list) else json.loads(rows)
                if not rows:
                    raise RuntimeError(f"{key}: no rows of {table} where {where} to take out")
                conn.execute(f"delete from {table} x where {where}")
                held.append((table, rows))
        _HELD[key] = held

    def undo(stack) -> None:
        held = _HELD.pop(key, [])
        with psycopg.connect(stack.admin_dsn()) as conn:
            for table, rows in held:
                n = conn.execute(f"insert into {table} select * from jsonb_populate_recordset(null::{table}, %s)",
                                 (Jsonb(rows),)).rowcount
                if n != len(rows):
                    raise RuntimeError(f"{key}: put back {n} of {len(rows)} rows of {table}")

    return inject, undo


def _case(name: str, red: dict[str, str], why: str, *parts: tuple[str, str], env: dict | None = None) -> Case:
    inject, undo = _take(name, *parts)
    return Case(name=name, red=red, inject=inject, undo=undo, env=dict(STOPPED if env is None else env), why=why)


def _since(hours: float, column: str) -> str:
    return f"x.{column} >= now() - interval '{hours} hours'"


PROBES, REQUESTS, TASKS, SPANS = "ops.health_probes", "ops.requests", "ops.agent_tasks", "ops.spans"

CASES = [
    # -- health probes: the uptime SLO's input -------------------------------------------------------
    _case("TEL-001/probes-stop-6h", {"TEL-001": "fail", "SLO-001": "fail"},
          "6 h without a probe: those minutes are not up (uptime 75%), and the probe stream is stale",
          (PROBES, _since(6, "ts"))),
    _case("TEL-001/probes-stop-22h", {"TEL-001": "fail", "SLO-001": "fail"},
          "22 h without a probe: 2 h of perfect probes left must not make a 100% uptime",
          (PROBES, _since(22, "ts"))),
    _case("TEL-001/probes-gap-10-min-mid-window", {"TEL-001": "fail", "SLO-001": "fail"},
          "a 10-minute hole in the probes 5 h ago: the longest gap passes 300 s and 10 unprobed minutes are down",
          (PROBES, "x.ts >= now() - interval '5 hours' and x.ts < now() - interval '5 hours' + interval '10 minutes'")),
    _case("SLO-001/unprobed-3-minutes", {"SLO-001": "fail"},
          "3 unprobed minutes are 3 minutes not up (99.79% < 99.95%), though the stream's gap and coverage are in policy",
          (PROBES, "x.ts >= now() - interval '4 hours' and x.ts < now() - interval '4 hours' + interval '3 minutes'")),
    # -- requests: success, latency and burn rates --------------------------------------------------
    _case("TEL-002/requests-stop-6h", {"TEL-002": "fail", "SLO-002": "error"},
          "6 h without requests: the stream is stale and the 1 h / 6 h burn-rate windows hold nothing (error, not null)",
          (REQUESTS, _since(6, "ts"))),
    _case("TEL-002/requests-stop-22h", {"TEL-002": "fail", "SLO-002": "error"},
          "22 h without requests: a success rate over the 2 h left is no SLO; burn-rate windows are empty",
          (REQUESTS, _since(22, "ts"))),
    # -- the agent pool --------------------------------------------------------------------------------
    _case("TEL-003/agent-pool-stops-6h", {"TEL-003": "fail", "TEL-004": "fail"},
          "no agent task enqueued (so no span) for 6 h: success rates over the 18 h left hide it",
          (TASKS, _since(6, "enqueued_at")), (SPANS, _since(6, "started_at"))),
    _case("TEL-003/agent-pool-stops-22h", {"TEL-003": "fail", "TEL-004": "fail"},
          "no agent task (nor span) for 22 h",
          (TASKS, _since(22, "enqueued_at")), (SPANS, _since(22, "started_at"))),
    _case("TEL-004/spans-stop-6h", {"TEL-004": "fail", "WCH-005": "fail"},
          "the trace exporter died 6 h ago: spans are stale and canary tasks since have no span",
          (SPANS, _since(6, "started_at"))),
    # -- outbox, DLQ replays, CI -----------------------------------------------------------------------
    _case("TEL-005/outbox-stops-6h", {"TEL-005": "fail"},
          "no outbox event for 6 h: the lag of the 18 h left is fine, the stream is not",
          ("ops.outbox", _since(6, "created_at"))),
    _case("TEL-006/dlq-replays-silent-13h", {"TEL-006": "fail"},
          "no replay batch for 13 h (policy: 12 h), though the window still holds earlier ones",
          ("ops.dlq_replays", _since(13, "at"))),
    _case("TEL-007/ci-silent-13h", {"TEL-007": "fail"},
          "no CI event for 13 h (policy: 12 h), though the window still holds earlier builds on main",
          ("ops.ci_events", _since(13, "at"))),
    # -- false alarms: look like stopped telemetry, are within policy -----------------------------------
    _case("ok/requests-gap-just-under-the-limit", {},
          "a 13-minute lull in requests 3 h ago: longest gap < 900 s, minutes covered > 95%",
          (REQUESTS, "x.ts >= now() - interval '3 hours' and x.ts < now() - interval '3 hours' + interval '13 minutes'"),
          env={}),
    _case("ok/replica-probes-stop-primary-answers", {},
          "the replica's probes stop for 3 h while the primary's keep answering: probes keep arriving, every minute is up",
          (PROBES, "x.region = 'replica' and " + _since(3, "ts")), env={}),
    _case("ok/ci-quiet-for-8h", {},
          "8 h without a CI event (a quiet night) is inside the sparse stream's 12 h allowance",
          ("ops.ci_events", _since(8, "at"))),
    _case("ok/agent-pool-quiet-for-20-minutes", {},
          "no agent task for 20 minutes is inside the 30-minute allowance",
          (TASKS, "x.enqueued_at >= now() - interval '20 minutes'"),
          (SPANS, "x.started_at >= now() - interval '20 minutes'")),
]

"""The watch's automatic actions, as incident levers: each action is ONE ops.incidents row whose changes (flag /
budget, before and after) are written in the same transaction under the incident lock and audited, so
`opsproof incident resume <id>` undoes exactly what it changed (levers/incident.py `resume`).

  throttle        budget agent.concurrency lowered by [watch] throttle_step_pct (never below throttle_min), and
                  the CI rollback posted to the self-heal hook (OPSPROOF_SELF_HEAL_URL; the plane's sink on the
                  embedded default) with the incident id, the breach and trace links
  quarantine      agents.autonomousEnabled = false: the worker pool claims nothing new (in-flight tasks finish)
  pause_replayer  dlq.replayEnabled = false: the DLQ replayer stops replaying
  big_red_button  the emergency_stop plan of levers/incident.py (autonomy.emergencyStop and friends)

Never twice for one breach: an open incident opened for the same breach (response.source) is returned instead of
a new one. ActingLease: one watch acts on a target at a time -- a session advisory lock on the watch's own
connection, gone the moment that process dies (SIGKILL included); an action is one transaction, so a killed
watch leaves either a whole, resumable incident or nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from decimal import Decimal

from psycopg.types.json import Jsonb

from opsproof.errors import UsageError
from opsproof.levers import incident as inc
from opsproof.levers.common import audit, connect
from opsproof.levers.incident_plan import Context, IncidentRequest
from opsproof.measure import incident as mi
from opsproof.measure.routing import db_clock

ACTIONS = ("throttle", "quarantine", "pause_replayer", "big_red_button")
TYPE_OF = {"throttle": "performance_degradation", "quarantine": "system_failure",
           "pause_replayer": "integration_failure", "big_red_button": "emergency_stop"}
ACTOR = "opsproof-watch"


def source_tag(target: str, key: str) -> str:
    return f"opsproof.watch:{target}:{key}"


def open_incident_for(dsn: str, source: str) -> dict | None:
    """The open incident a watch opened for this breach (response.source), if any."""
    with connect(dsn, application_name="opsproof-watch") as conn:
        for r in mi.recent_incidents(conn, limit=200, days=365).result:
            if r["status"] != "open":
                continue
            row = mi.incident_row(conn, r["id"]).result
            if row and (row["response"] or {}).get("source") == source:
                return {"id": str(row["id"]), "plan": row["response"].get("plan"), "opened_at": row["opened_at"]}
    return None


def incident_status(dsn: str, incident_id: str) -> str | None:
    with connect(dsn, application_name="opsproof-watch") as conn:
        row = mi.incident_resolution(conn, incident_id).result
    return row["status"] if row else None


def _throttled(current, step_pct: float, floor_: int) -> str:
    value = Decimal(str(current))
    return str(max(int(floor_), int(math.floor(value * Decimal(str(1 - step_pct / 100.0))))))


def act(ctx: Context, action: str, *, target: str, key: str, level: str, description: str,
        throttle_step_pct: float = 50.0, throttle_min: int = 1, rollback_webhook: bool = True,
        trace_id: str | None = None) -> dict:
    """Open the incident of one action for one breach and verify the plane obeys within the level's timeout.
    Returns {"id", "action", "plan", "changes", "response", "reused"}."""
    if action not in ACTIONS:
        raise UsageError(f"watch: unknown action {action!r} (one of {', '.join(ACTIONS)})")
    source = source_tag(target, key)
    existing = open_incident_for(ctx.dsn, source)
    if existing is not None:
        return {"id": existing["id"], "action": action, "plan": existing["plan"], "reused": True, "changes": [],
                "response": {}}
    req = IncidentRequest(level=level, type=TYPE_OF[action], description=description[:4000], source=source,
                          trace_id=trace_id)
    if action == "big_red_button":
        doc = inc.handle(ctx, IncidentRequest(level="critical", type="emergency_stop",
                                              description=description[:4000], source=source, trace_id=trace_id))
        return {"id": doc["id"], "action": action, "plan": doc["response"]["plan"], "reused": False,
                "changes": doc["changes"], "response": doc["response"]}
    t_start = time.monotonic()
    iid = str(uuid.uuid4())
    plan = action
    reason = f"watch {action}: {description}"[:500]
    with connect(ctx.dsn, application_name="opsproof-watch") as conn:
        inc._require_contract(conn)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (inc.LOCK_KEY,))
            opened_at = conn.execute(
                """insert into ops.incidents (id, level, type, description, opened_by, response)
                   values (%s, %s, %s, %s, %s, %s) returning opened_at""",
                (iid, req.level, req.type, req.description, ACTOR,
                 Jsonb({"plan": plan, "source": source, "trace_id": trace_id}))).fetchone()[0]
            audit(conn, action="incident.open", target=f"ops.incidents/{iid}", reason=reason,
                  detail={"level": req.level, "type": req.type, "plan": plan, "by": "watch"}, **inc._by(iid, ACTOR))
            changes: list = []
            if action == "throttle":
                row = mi.current_row(conn, "budget", "agent.concurrency", lock=True).result
                if row is not None:
                    new = _throttled(row["value"], throttle_step_pct, throttle_min)
                    inc._set_budget(conn, iid, "agent.concurrency", new, changes, reason, only_lower=True)
                else:
                    changes.append({"kind": "budget", "key": "agent.concurrency", "missing": True})
            elif action == "quarantine":
                inc._set_flag(conn, iid, "agents.autonomousEnabled", False, changes, reason)
            elif action == "pause_replayer":
                inc._set_flag(conn, iid, "dlq.replayEnabled", False, changes, reason)
            conn.execute("update ops.incidents set changes = %s where id = %s", (Jsonb(changes), iid))
        since = db_clock(conn).result
        applied_s = round(time.monotonic() - t_start, 3)
        out: dict = {"checks": [], "problems": []}
        if ctx.verify:
            exp = mi.expectations(conn, ctx.components)
            res = mi.wait_for_components(conn, exp.result, since, t_start + ctx.timeouts[level], ctx.poll_s)
            out["checks"].append({"what": "plane heartbeats reflect the flags and budget", "expected": exp.result,
                                  **res.result, "query": f"{exp.query};\n{res.query}"})
            out["problems"] += res.result["problems"]
        if action == "throttle" and rollback_webhook:
            payload = {"event": "opsproof.rollback", "incident_id": iid, "source": source, "level": level,
                       "description": description, "breach": key,
                       "changed": [{k: c[k] for k in ("kind", "key", "before", "after") if k in c}
                                   for c in changes if "before" in c],
                       "trace_links": [ctx.trace_link_template.format(trace_id=t)
                                       for t in ([trace_id] if trace_id else mi.recent_failed_traces(conn).result)]}
            if not ctx.self_heal_url:
                out["problems"].append("no self-heal hook URL (OPSPROOF_SELF_HEAL_URL) to post the CI rollback to")
            else:
                sent = inc._post(ctx.self_heal_url, payload)
                out["checks"].append({"what": "CI rollback posted to the self-heal hook",
                                      "url": inc._redacted_url(ctx.self_heal_url), "ok": sent["delivered"], **sent})
                if not sent["delivered"]:
                    out["problems"].append(f"self-heal hook not reached: {sent}")
                audit(conn, action="incident.webhook", target="self-heal-hook", reason="CI rollback posted by the watch",
                      detail=sent, **inc._by(iid, ACTOR))
        elapsed = time.monotonic() - t_start
        response = {"plan": plan, "source": source, "trace_id": trace_id, "applied_s": applied_s, **out,
                    "time_to_effect_s": round(elapsed, 3), "timeout_s": ctx.timeouts[level],
                    "timed_out": elapsed > ctx.timeouts[level]}
        response["verified"] = not out["problems"] and not response["timed_out"]
        conn.execute("update ops.incidents set response = %s where id = %s", (Jsonb(response), iid))
        audit(conn, action="incident.verify", target=f"ops.incidents/{iid}",
              reason="verified" if response["verified"] else "; ".join(out["problems"])[:500] or "timed out",
              detail={"verified": response["verified"], "time_to_effect_s": response["time_to_effect_s"]},
              **inc._by(iid, ACTOR))
    return {"id": iid, "action": action, "plan": plan, "reused": False, "changes": changes, "response": response,
            "opened_at": opened_at.isoformat()}


class ActingLease:
    """One acting watch per target: a session-level advisory lock held on this object's own connection. The
    database drops it the moment the connection goes (the holder exits, crashes or is SIGKILLed)."""

    def __init__(self, dsn: str, target: str):
        self.dsn, self.key = dsn, f"opsproof.watch.act:{target}"
        self.conn = None

    def acquire(self) -> bool:
        if self.conn is not None and not self.conn.closed:
            return True
        conn = connect(self.dsn, application_name="opsproof-watch-lease")
        got = conn.execute("select pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()[0]
        if not got:
            conn.close()
            return False
        self.conn = conn
        return True

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

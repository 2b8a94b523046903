"""Incident levers: real, persistent writes to ops.feature_flags / ops.budgets (NOT leases), undone only
by `resume`. See docs/operations.md ("Incident levers").

handle(request) -> pick the response plan (incident_plan.py) -> ONE transaction: the ops.incidents row, every
flag/budget write with its before/after values recorded in ops.incidents.changes, one audit row per step
(common.audit, incident_id) -> verify on the live system (measure/incident.py: heartbeats of the plane's
worker/relay/replayer, ops.agent_tasks.started_at, the webhook sink) within the level's timeout ->
ops.incidents.response.

resume(id) restores exactly what the incident changed and nothing else: a value someone else changed
since is a conflict (reported, nothing restored, exit 1) unless force=True; a value another OPEN incident
also needs is handed over to that incident instead of being restored (so resuming one of two stops does
not lift the other's).

rehearse() (`opsproof incident test`): every lever, each resumed at once, as journal entries of kind
"rehearsal". Every read goes through measure/incident.py; this module writes and orchestrates.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from opsproof.alerting import slack_payload
from opsproof.errors import OpsproofError, UsageError
from opsproof.journal import Entry, Record
from opsproof.levers.common import AUDIT_SIGNATURE, audit, connect
from opsproof.levers.incident_plan import (CANARY_FLAGS, COMPONENTS, DEGRADE_FLAGS, EMERGENCY_FLAGS, LEVELS,  # noqa: F401
                                           TIMEOUT_S, TYPES, Context, IncidentRequest, context_from_settings,
                                           parse_request, plan_for)
from opsproof.measure import incident as mi
from opsproof.measure.routing import db_clock

LOCK_KEY = "opsproof.incident"
ACTOR = "opsproof-incident"


class IncidentError(OpsproofError):
    """The lever acted but the response is not proven (timeout, verification failed, conflict)."""


# -- database helpers ------------------------------------------------------------------------------

def _connect(dsn: str) -> psycopg.Connection:
    return connect(dsn, application_name="opsproof-incident")


def _by(incident_id: str, actor: str = ACTOR) -> dict:
    """The audit fields every incident row carries (common.audit keywords): the incident's run id and id, the
    actor; the contract was checked once per connection (_require_contract)."""
    return {"run_id": f"incident-{incident_id}", "incident_id": incident_id, "actor": actor, "checked": True}


def _require_contract(conn) -> None:
    missing = mi.contract_missing(conn, AUDIT_SIGNATURE).result
    if missing:
        raise OpsproofError(f"incident: contract missing on the target: {', '.join(missing)} (apply supabase/migrations)")


def _num(v: Any) -> str:
    """A budget value as exact text (numeric keeps its scale through text)."""
    return str(v) if isinstance(v, Decimal) else str(Decimal(str(v)))


def _row_meta(updated_at: datetime, updated_by: str) -> dict:
    return {"updated_at": updated_at.isoformat(), "updated_by": updated_by}


def writer_tag(incident_id: str) -> str:
    return f"incident:{incident_id}"


# -- snapshots (last known good) ---------------------------------------------------------------------

def take_snapshot(dsn: str, reason: str, *, known_good: bool = True, taken_by: str = "opsproof") -> dict:
    """Snapshot every base flag and budget into ops.flag_snapshots (audited)."""
    with _connect(dsn) as conn:
        _require_contract(conn)
        with conn.transaction():
            flags = mi.base_flags(conn).result
            budgets = {k: _num(v) for k, v in mi.base_budgets(conn).result.items()}
            sid, at = conn.execute(
                """insert into ops.flag_snapshots (taken_by, reason, known_good, flags, budgets)
                   values (%s, %s, %s, %s, %s) returning id, taken_at""",
                (taken_by, reason, known_good, Jsonb(flags), Jsonb(budgets))).fetchone()
            audit(conn, action="flags.snapshot", target="ops.flag_snapshots", reason=reason, run_id=f"snapshot-{sid}",
                  detail={"snapshot_id": sid, "known_good": known_good, "flags": len(flags), "budgets": len(budgets)},
                  actor=taken_by, checked=True)
    return {"id": sid, "taken_at": at.isoformat(), "known_good": known_good, "flags": flags, "budgets": budgets}


def last_known_good(conn) -> dict | None:
    """The newest known-good snapshot row (measure.incident.last_known_good's result)."""
    return mi.last_known_good(conn).result


# -- applying a plan ---------------------------------------------------------------------------------

def _set_flag(conn, iid: str, key: str, target: Any, changes: list, reason: str) -> None:
    row = mi.current_row(conn, "flag", key, lock=True).result
    if row is None:
        changes.append({"kind": "flag", "key": key, "after": target, "missing": True})
        audit(conn, action="incident.flag.missing", target=f"ops.feature_flags/{key}", reason="flag absent on the target", **_by(iid))
        return
    value, updated_at, updated_by = row["value"], row["updated_at"], row["updated_by"]
    if value == target:
        changes.append({"kind": "flag", "key": key, "after": target, "held": True})
    else:
        conn.execute("update ops.feature_flags set value = %s, updated_at = now(), updated_by = %s where key = %s",
                     (Jsonb(target), writer_tag(iid), key))
        changes.append({"kind": "flag", "key": key, "before": value, "after": target,
                        "before_row": _row_meta(updated_at, updated_by), "writer": writer_tag(iid)})
        actor = "system@" if key == "autonomy.emergencyStop" else ACTOR
        audit(conn, action="incident.flag.set", target=f"ops.feature_flags/{key}", reason=reason, detail={"before": value, "after": target}, **_by(iid, actor=actor))
    # an active leased override with another value would mask the base write: release it (audited)
    for o in mi.masking_overrides(conn, key, target, lock=True).result:
        oid, ovalue, owner = o["id"], o["value"], o["owner"]
        conn.execute("update ops.flag_overrides set released_at = now() where id = %s", (oid,))
        changes.append({"kind": "override_released", "key": key, "id": oid, "value": ovalue, "owner": owner})
        audit(conn, action="incident.override.release", target=f"ops.flag_overrides/{oid}", reason="a leased override masked the incident's value", detail={"key": key, "value": ovalue, "owner": owner}, **_by(iid))


def _set_budget(conn, iid: str, key: str, target: str, changes: list, reason: str, only_lower: bool = False) -> None:
    row = mi.current_row(conn, "budget", key, lock=True).result
    if row is None:
        changes.append({"kind": "budget", "key": key, "after": target, "missing": True})
        audit(conn, action="incident.budget.missing", target=f"ops.budgets/{key}", reason="budget absent on the target", **_by(iid))
        return
    value, updated_at, updated_by = row["value"], row["updated_at"], row["updated_by"]
    if Decimal(_num(value)) == Decimal(target) or (only_lower and Decimal(_num(value)) <= Decimal(target)):
        changes.append({"kind": "budget", "key": key, "after": _num(value), "held": True})
        return
    conn.execute("update ops.budgets set value = %s::numeric, updated_at = now(), updated_by = %s where key = %s",
                 (target, writer_tag(iid), key))
    changes.append({"kind": "budget", "key": key, "before": _num(value), "after": target,
                    "before_row": _row_meta(updated_at, updated_by), "writer": writer_tag(iid)})
    audit(conn, action="incident.budget.set", target=f"ops.budgets/{key}", reason=reason, detail={"before": _num(value), "after": target}, **_by(iid))


def _apply(conn, iid: str, plan: str, req: IncidentRequest, ctx: Context) -> tuple[list, dict]:
    changes: list = []
    extra: dict = {}
    reason = f"{plan}: {req.description}"[:500]
    if plan == "emergency_stop":
        for key, v in EMERGENCY_FLAGS.items():
            _set_flag(conn, iid, key, v, changes, reason)
    elif plan == "soft_degrade":
        for key, v in DEGRADE_FLAGS.items():
            _set_flag(conn, iid, key, v, changes, reason)
        _set_budget(conn, iid, "agent.concurrency", str(ctx.degrade_concurrency), changes, reason, only_lower=True)
    elif plan == "rollback":
        snap = mi.last_known_good(conn).result
        if snap is None:
            raise IncidentError("incident: rollback needs a known-good snapshot and there is none "
                                "(take one with `opsproof incident snapshot` while the system is healthy)")
        extra["snapshot"] = {"id": snap["id"], "taken_at": snap["taken_at"].isoformat(), "reason": snap["reason"]}
        for key, v in sorted(snap["flags"].items()):
            _set_flag(conn, iid, key, v, changes, reason)
        for key, v in sorted(snap["budgets"].items()):
            _set_budget(conn, iid, key, _num(v), changes, reason)
    elif plan == "monitor":
        severity = req.level
        aid = conn.execute(
            """insert into ops.alerts (severity, source, title, detail, trace_id)
               values (%s, 'opsproof.incident', %s, %s, %s) returning id""",
            (severity, req.description[:200], Jsonb({"incident_id": iid, "type": req.type, "level": req.level,
                                                     "escalate_after_s": ctx.timeouts[req.level]}),
             req.trace_id)).fetchone()[0]
        changes.append({"kind": "alert", "id": aid})
        audit(conn, action="incident.alert", target=f"ops.alerts/{aid}", reason=reason, detail={"severity": severity}, **_by(iid))
    return changes, extra


# -- verification (every read: measure/incident.py) --------------------------------------------------

def _post(url: str, payload: dict) -> dict:
    try:
        resp = httpx.post(url, json=payload, timeout=5.0)
        return {"delivered": resp.is_success, "status": resp.status_code}
    except httpx.HTTPError as exc:
        return {"delivered": False, "error": type(exc).__name__}


def _read_back(sink_url: str, path: str, incident_id: str) -> bool:
    try:
        resp = httpx.get(f"{sink_url}/received", params={"path": path}, timeout=5.0)
        return any((it.get("body") or {}).get("incident_id") == incident_id for it in resp.json().get("items", []))
    except (httpx.HTTPError, ValueError):
        return False


def _redacted_url(url: str | None) -> str | None:
    if not url:
        return url
    from urllib.parse import urlsplit

    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname}{':' + str(p.port) if p.port else ''}/…" if "hooks.slack.com" in url else \
        f"{p.scheme}://{p.hostname}{':' + str(p.port) if p.port else ''}{p.path}"


def _verify(conn, iid: str, plan: str, req: IncidentRequest, ctx: Context, changes: list, t_start: float,
            since: datetime) -> dict:
    """Each check carries the query that measured it ("query")."""
    deadline = t_start + ctx.timeouts[req.level]
    out: dict = {"checks": [], "problems": []}
    if plan in ("emergency_stop", "soft_degrade", "rollback") and ctx.verify:
        exp = mi.expectations(conn, ctx.components)
        res = mi.wait_for_components(conn, exp.result, since, deadline, ctx.poll_s)
        out["checks"].append({"what": "plane heartbeats reflect the flags", "expected": exp.result, **res.result,
                              "query": f"{exp.query};\n{res.query}"})
        out["problems"] += res.result["problems"]
        if plan == "emergency_stop" and res.result["ok"]:
            # the worker really stopped: nothing claimed after the halted heartbeat (one cycle observed)
            t_conf = db_clock(conn).result
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            claims = mi.claims_after(conn, t_conf)
            started, published = claims.result["tasks_started"], claims.result["events_published"]
            ok = started == 0 and published == 0
            out["checks"].append({"what": "no task claimed and no outbox event published after the stop",
                                  "tasks_started": started, "events_published": published,
                                  "queued_waiting": claims.result["queued_waiting"], "ok": ok, "query": claims.query})
            if not ok:
                out["problems"].append(f"after the stop: {started} task(s) started, {published} event(s) published")
    if plan == "rollback":
        eff = mi.effective_flag_values(conn)
        masked = [c["key"] for c in changes if c["kind"] == "flag" and "after" in c and not c.get("missing")
                  and eff.result.get(c["key"]) != c["after"]]
        out["checks"].append({"what": "effective flags equal the snapshot", "masked": masked, "ok": not masked,
                              "query": eff.query})
        if masked:
            out["problems"].append(f"effective flags differ from the snapshot: {masked}")
        audit_ids = mi.incident_audit_ids(conn, iid).result
        traces = mi.recent_failed_traces(conn).result
        payload = {"event": "opsproof.rollback", "incident_id": iid, "level": req.level,
                   "description": req.description, "audit_ids": audit_ids,
                   "changed": [{k: c[k] for k in ("kind", "key", "before", "after") if k in c}
                               for c in changes if "before" in c],
                   "trace_links": [ctx.trace_link_template.format(trace_id=t) for t in traces]}
        if not ctx.self_heal_url:
            out["problems"].append("no self-heal hook URL (OPSPROOF_SELF_HEAL_URL) to post the rollback to")
        else:
            sent = _post(ctx.self_heal_url, payload)
            if sent["delivered"] and ctx.sink_url and ctx.self_heal_url.startswith(ctx.sink_url):
                from urllib.parse import urlsplit

                sent["read_back"] = _read_back(ctx.sink_url, urlsplit(ctx.self_heal_url).path, iid)
            ok = sent["delivered"] and sent.get("read_back", True)
            out["checks"].append({"what": "rollback posted to the self-heal hook", "url": _redacted_url(ctx.self_heal_url),
                                  "trace_links": len(payload["trace_links"]), "ok": ok, **sent})
            if not ok:
                out["problems"].append(f"self-heal hook not reached: {sent}")
            audit(conn, action="incident.webhook", target="self-heal-hook", reason="rollback posted", detail={**sent, "audit_ids": audit_ids}, **_by(iid))
    if plan == "monitor":
        alert = next(c["id"] for c in changes if c["kind"] == "alert")
        raised = mi.alert_open(conn, alert)
        check = {"what": "alert raised", "alert_id": alert, "ok": raised.result, "query": raised.query}
        if req.level == "medium":  # escalation: page on-call (Slack-format webhook)
            if ctx.alert_url:
                p = slack_payload(req.description[:200], severity=req.level, source="opsproof.incident",
                                  detail={"incident": iid, "type": req.type,
                                          "escalates after": f"{ctx.timeouts[req.level]:.0f}s"},
                                  trace_id=req.trace_id, trace_link_template=ctx.trace_link_template)
                p["incident_id"] = iid
                sent = _post(ctx.alert_url, p)
                check["page"] = sent
                check["ok"] = check["ok"] and sent["delivered"]
            else:
                check["page"] = {"delivered": False, "error": "no ALERT_WEBHOOK_URL"}
                check["ok"] = False
        out["checks"].append(check)
        if not check["ok"]:
            out["problems"].append(f"monitoring/escalation not in place: { {k: v for k, v in check.items() if k != 'query'} }")
    elapsed = time.monotonic() - t_start
    out["time_to_effect_s"] = round(elapsed, 3)
    out["timeout_s"] = ctx.timeouts[req.level]
    out["timed_out"] = elapsed > ctx.timeouts[req.level]
    if out["timed_out"]:
        out["problems"].append(f"response took {elapsed:.1f}s, over the {req.level} timeout of "
                               f"{ctx.timeouts[req.level]:.0f}s")
    out["verified"] = not out["problems"]
    return out


# -- the commands ------------------------------------------------------------------------------------

def handle(ctx: Context, req: IncidentRequest) -> dict:
    """Open an incident and apply its response; returns the incident document. Raises IncidentError (exit 1)
    after recording when the response could not be verified in time (the levers stay applied)."""
    t_start = time.monotonic()
    plan = plan_for(req)
    iid = str(uuid.uuid4())
    with _connect(ctx.dsn) as conn:
        _require_contract(conn)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (LOCK_KEY,))
            opened_at = conn.execute(
                """insert into ops.incidents (id, level, type, description, opened_by, response)
                   values (%s, %s, %s, %s, %s, %s) returning opened_at""",
                (iid, req.level, req.type, req.description, f"opsproof:{ctx.operator}",
                 Jsonb({"plan": plan, "source": req.source, "trace_id": req.trace_id}))).fetchone()[0]
            audit(conn, action="incident.open", target=f"ops.incidents/{iid}", reason=req.description[:500], detail={"level": req.level, "type": req.type, "plan": plan}, **_by(iid))
            changes, extra = _apply(conn, iid, plan, req, ctx)
            conn.execute("update ops.incidents set changes = %s where id = %s", (Jsonb(changes), iid))
        since = db_clock(conn).result
        applied_s = round(time.monotonic() - t_start, 3)
        ver = _verify(conn, iid, plan, req, ctx, changes, t_start, since)
        response = {"plan": plan, "source": req.source, "trace_id": req.trace_id, "applied_s": applied_s, **extra,
                    **ver}
        conn.execute("update ops.incidents set response = %s where id = %s", (Jsonb(response), iid))
        audit(conn, action="incident.verify", target=f"ops.incidents/{iid}", reason="verified" if ver["verified"] else "; ".join(ver["problems"])[:500], detail={"verified": ver["verified"], "time_to_effect_s": ver["time_to_effect_s"],
                "timed_out": ver["timed_out"]}, **_by(iid))
    doc = {"id": iid, "level": req.level, "type": req.type, "description": req.description, "status": "open",
           "opened_at": opened_at.isoformat(), "changes": changes, "response": response}
    return doc


def _same(kind: str, a: Any, b: Any) -> bool:
    if kind == "budget":
        return a is not None and b is not None and Decimal(_num(a)) == Decimal(_num(b))
    return a == b


def resume(ctx: Context, incident_id: str, *, force: bool = False) -> dict:
    """Restore exactly what the incident changed. UsageError (exit 2) for an unknown or resolved id;
    IncidentError (exit 1) on conflicts (nothing restored) or when the plane does not come back in time."""
    try:
        iid = str(uuid.UUID(incident_id))
    except ValueError:
        raise UsageError(f"incident: {incident_id!r} is not an incident id (a uuid; see `opsproof incident list`)") from None
    t_start = time.monotonic()
    restored, handed, already, conflicts, alerts = [], [], [], [], []
    with _connect(ctx.dsn) as conn:
        _require_contract(conn)
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (LOCK_KEY,))
            inc = mi.incident_row(conn, iid, lock=True).result
            if inc is None:
                raise UsageError(f"incident: no incident {iid}")
            if inc["status"] != "open":
                raise UsageError(f"incident: {iid} is already {inc['status']} "
                                 f"(at {inc['resolved_at'].isoformat() if inc['resolved_at'] else '?'})")
            others = mi.other_open_incidents(conn, iid).result
            for ch in inc["changes"]:
                kind = ch["kind"]
                if kind == "alert":
                    conn.execute("update ops.alerts set resolved_at = now() where id = %s and resolved_at is null",
                                 (ch["id"],))
                    alerts.append(ch["id"])
                    continue
                if kind not in ("flag", "budget") or "before" not in ch:
                    continue  # held / missing / released overrides: nothing of ours to undo
                cur_row = mi.current_row(conn, kind, ch["key"], lock=True).result
                if cur_row is None:
                    conflicts.append({"key": ch["key"], "kind": kind, "why": "row deleted since"})
                    continue
                value, by = cur_row["value"], cur_row["updated_by"]
                ours = _same(kind, value, ch["after"]) and by == ch["writer"]
                if _same(kind, value, ch["before"]) and not ours:
                    already.append(ch["key"])
                    continue
                if not ours and not force:
                    conflicts.append({"key": ch["key"], "kind": kind, "expected": ch["after"], "now": (
                        _num(value) if kind == "budget" else value), "changed_by": by})
                    continue
                heir = next((o for o in others if any(
                    oc.get("kind") == kind and oc.get("key") == ch["key"] and "before" not in oc
                    and _same(kind, oc.get("after"), ch["after"]) for oc in o["changes"])), None) if ours else None
                if heir is not None:
                    new = [({**ch, "inherited_from": iid} if (oc.get("kind") == kind and oc.get("key") == ch["key"]
                                                              and "before" not in oc) else oc) for oc in heir["changes"]]
                    conn.execute("update ops.incidents set changes = %s where id = %s", (Jsonb(new), heir["id"]))
                    heir["changes"] = new
                    handed.append({"key": ch["key"], "to": str(heir["id"])})
                    audit(conn, action="incident.handover", target=f"{'ops.feature_flags' if kind == 'flag' else 'ops.budgets'}/"
                           f"{ch['key']}", reason=f"still needed by open incident {heir['id']}", detail={"to": str(heir["id"]), "value": ch["after"]}, **_by(iid))
                    continue
                table = "ops.feature_flags" if kind == "flag" else "ops.budgets"
                cast = "%s" if kind == "flag" else "%s::numeric"
                before = Jsonb(ch["before"]) if kind == "flag" else ch["before"]
                conn.execute(f"update {table} set value = {cast}, updated_at = %s::timestamptz, updated_by = %s "
                             "where key = %s", (before, ch["before_row"]["updated_at"], ch["before_row"]["updated_by"],
                                                ch["key"]))
                restored.append({"kind": kind, "key": ch["key"], "value": ch["before"], "forced": not ours})
                audit(conn, action=f"incident.resume.{kind}.restore", target=f"{table}/{ch['key']}", reason="incident resumed", detail={"restored": ch["before"], "was": _num(value) if kind == "budget" else value, "forced": not ours}, **_by(iid))
            if conflicts:
                raise _Conflict(conflicts)  # aborts the transaction: nothing restored
            resume_doc = {"restored": restored, "handed_over": handed, "already_restored": already,
                          "alerts_resolved": alerts, "forced": force}
            conn.execute("""update ops.incidents set status = 'resolved', resolved_at = now(),
                                   response = response || jsonb_build_object('resume', %s::jsonb) where id = %s""",
                         (Jsonb(resume_doc), iid))
            audit(conn, action="incident.resolve", target=f"ops.incidents/{iid}", reason="resumed", detail={"restored": len(restored), "handed_over": len(handed), "already_restored": len(already)}, **_by(iid))
        since = db_clock(conn).result
        ver: dict = {"verified": True, "problems": []}
        if restored and ctx.verify and inc["response"].get("plan") in ("emergency_stop", "soft_degrade", "rollback"):
            exp = mi.expectations(conn, ctx.components)
            res = mi.wait_for_components(conn, exp.result, since, t_start + ctx.timeouts[inc["level"]], ctx.poll_s)
            ver = {"verified": res.result["ok"], "problems": res.result["problems"], "expected": exp.result,
                   **res.result, "query": f"{exp.query};\n{res.query}"}
        ver["time_to_effect_s"] = round(time.monotonic() - t_start, 3)
        resume_doc["verification"] = ver
        conn.execute("""update ops.incidents set response = jsonb_set(response, '{resume}', %s::jsonb) where id = %s""",
                     (Jsonb(resume_doc), iid))
        audit(conn, action="incident.resume.verify", target=f"ops.incidents/{iid}", reason="verified" if ver["verified"] else "; ".join(ver["problems"])[:500], detail={"verified": ver["verified"], "time_to_effect_s": ver["time_to_effect_s"]}, **_by(iid))
    return {"id": iid, "status": "resolved", **resume_doc}


class _Conflict(Exception):
    def __init__(self, conflicts: list):
        super().__init__("conflict")
        self.conflicts = conflicts


def resume_or_report(ctx: Context, incident_id: str, *, force: bool = False) -> dict:
    """resume(), turning a conflict into an audited IncidentError (exit 1) with nothing restored."""
    try:
        return resume(ctx, incident_id, force=force)
    except _Conflict as exc:
        with _connect(ctx.dsn) as conn:
            audit(conn, action="incident.resume.conflict", target=f"ops.incidents/{incident_id}", reason="values changed by someone else since the incident; nothing restored", detail={"conflicts": exc.conflicts}, **_by(str(uuid.UUID(incident_id))))
        what = ", ".join(f"{c['key']} (now {json.dumps(c.get('now'))}, set by {c.get('changed_by')})"
                         for c in exc.conflicts)
        raise IncidentError(f"incident: not resumed, nothing restored: changed by someone else since: {what}; "
                            "decide, then `resume --force` to restore the incident's before-values anyway") from None


def list_incidents(dsn: str, *, limit: int = 20, days: int = 7) -> list[dict]:
    """Open and recent incidents (measure.incident.recent_incidents), an open monitor past its timeout overdue."""
    with _connect(dsn) as conn:
        rows = mi.recent_incidents(conn, limit=limit, days=days).result
    for r in rows:
        r["overdue"] = r["status"] == "open" and r["plan"] == "monitor" and r["age_s"] > TIMEOUT_S.get(r["level"], math.inf)
    return rows




# -- the rehearsal: `opsproof incident test` ---------------------------------------------------------

TEST_CASES = (
    ("emergency_stop", {"level": "critical", "type": "emergency_stop", "description": "opsproof incident test: big red button"}),
    ("soft_degrade", {"level": "high", "type": "soft_degrade", "description": "opsproof incident test: soft degrade"}),
    ("rollback", {"level": "high", "type": "rollback", "description": "opsproof incident test: rollback to known good"}),
    ("monitor", {"level": "medium", "type": "performance_degradation", "description": "opsproof incident test: monitor"}),
)


def _rec(name: str, ok: bool, **kw) -> Record:
    return Record(name=name, verdict="pass" if ok else "fail", **kw)


def rehearse_lever(ctx: Context, name: str, raw: dict) -> Entry:
    """One lever, handled then resumed at once, as a journal entry of kind "rehearsal" (not a catalog control):
    records for the time to effect vs the level's timeout, the resume verified, and ops.feature_flags /
    ops.budgets byte-for-byte restored, each with the query that measured it. pass / fail (a record failed) /
    error (the lever could not act, or its effect was not measured)."""
    t0 = time.monotonic()
    records: list[Record] = []
    problems: list[str] = []
    errored = False
    with _connect(ctx.dsn) as conn:
        before = mi.table_md5(conn)
    try:
        doc = handle(ctx, IncidentRequest.model_validate(raw))
        r = doc["response"]
        problems += r["problems"]
        queries = [c["query"] for c in r.get("checks", []) if c.get("query")]
        if queries:
            records.append(_rec("time to effect", r["verified"], measured=r["time_to_effect_s"],
                                threshold=r["timeout_s"], unit="s", query=";\n".join(queries),
                                detail={"incident_id": doc["id"], "plan": r["plan"], "verified": r["verified"],
                                        "timed_out": r["timed_out"],
                                        "changed": [c["key"] for c in doc["changes"] if "before" in c]}))
        else:
            errored = True
            problems.append("the response's effect was not measured (no verification ran)")
        res = resume_or_report(ctx, doc["id"])
        ver = res["verification"]
        with _connect(ctx.dsn) as conn:
            done = mi.incident_resolution(conn, doc["id"])
            alerts = [mi.alert_open(conn, a) for a in res["alerts_resolved"]]
        ok = bool(ver["verified"] and done.result and done.result["status"] == "resolved"
                  and not any(a.result for a in alerts))
        records.append(_rec("resume verified", ok, measured=ok, threshold=True,
                            query=";\n".join(q for q in (ver.get("query"), done.query, *(a.query for a in alerts)) if q),
                            detail={"resume_s": ver["time_to_effect_s"], "status": (done.result or {}).get("status"),
                                    "restored": [x["key"] for x in res["restored"]],
                                    "alerts_resolved": res["alerts_resolved"]}))
        if not ver["verified"]:
            problems += ver["problems"] or ["resume not verified"]
    except OpsproofError as exc:
        errored = True
        problems.append(str(exc))
    with _connect(ctx.dsn) as conn:
        after = mi.table_md5(conn)
    records.append(_rec("tables restored byte-for-byte", after.result == before.result, measured=after.result,
                        threshold=before.result, query=after.query,
                        detail="md5 of every column of every row of ops.feature_flags and ops.budgets, "
                               "before the lever vs after its resume"))
    verdict = "fail" if any(x.verdict == "fail" for x in records) else "error" if errored else "pass"
    return Entry(id=None, title=f"incident lever {name} rehearsal", kind="rehearsal", area="incident",
                 verdict=verdict, message="; ".join(problems), records=records,
                 duration_s=round(time.monotonic() - t0, 3))


def _summary_line(name: str, e: Entry) -> str:
    by = {x.name: x for x in e.records}
    effect, resume_, restored = by.get("time to effect"), by.get("resume verified"), by["tables restored byte-for-byte"]
    return (f"{name:15s} {'ok ' if e.verdict == 'pass' else 'FAIL'} "
            f"effect {effect.measured if effect else '-'}s (limit {effect.threshold if effect else '-'}s), "
            f"resume {resume_.detail['resume_s'] if resume_ else '-'}s, "
            f"restored exactly: {restored.verdict == 'pass'}"
            + ("" if e.verdict == "pass" else f" -- {e.message or 'resume not verified'}"))


def rehearse(ctx: Context, *, log=print) -> dict[str, Entry]:
    """`opsproof incident test`: every lever against the (embedded) target, each resumed at once; proves the
    response took effect on the live plane in time and that resume left ops.feature_flags / ops.budgets
    byte-for-byte as they were. {lever: Entry} in TEST_CASES order."""
    with _connect(ctx.dsn) as conn:
        _require_contract(conn)
        missing_snapshot = mi.last_known_good(conn).result is None
    if missing_snapshot:
        take_snapshot(ctx.dsn, "incident test: current state taken as known good", taken_by="opsproof-incident-test")
    out: dict[str, Entry] = {}
    for name, raw in TEST_CASES:
        out[name] = rehearse_lever(ctx, name, raw)
        log(_summary_line(name, out[name]))
    return out

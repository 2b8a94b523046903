"""Incident levers: real, persistent writes to ops.feature_flags / ops.budgets (NOT leases), undone only
by `resume`. See docs/operations.md ("Incident levers").

handle(request) -> validate (pydantic; bad input = UsageError, nothing written) -> pick the response plan
-> ONE transaction: the ops.incidents row, every flag/budget write with its before/after values recorded in
ops.incidents.changes, one audit row per step (p_incident_id) -> verify on the live system (heartbeats of
the plane's worker/relay/replayer, ops.agent_tasks.started_at, the webhook sink) within the level's
timeout -> ops.incidents.response.

resume(id) restores exactly what the incident changed and nothing else: a value someone else changed
since is a conflict (reported, nothing restored, exit 1) unless force=True; a value another OPEN incident
also needs is handed over to that incident instead of being restored (so resuming one of two stops does
not lift the other's).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsproof.alerting import slack_payload
from opsproof.errors import OpsproofError, UsageError
from opsproof.levers.common import AUDIT_SIGNATURE, audit, connect
from opsproof.measure.flags import read_budget, read_flags

LEVELS = ("critical", "high", "medium", "low")
TYPES = ("emergency_stop", "soft_degrade", "rollback", "system_failure", "performance_degradation",
         "security_incident", "data_integrity", "integration_failure")
# How long the response may take to be in effect on the live system (handle start -> verified).
TIMEOUT_S = {"critical": 30.0, "high": 60.0, "medium": 300.0, "low": 900.0}
LOCK_KEY = "opsproof.incident"
ACTOR = "opsproof-incident"
CANARY_FLAGS = ("canary.rollout_percentage", "canary.auto_rollback", "canary.health_threshold")
EMERGENCY_FLAGS = {"autonomy.emergencyStop": True, "agents.autonomousEnabled": False,
                   "outbox.relayEnabled": False, "dlq.replayEnabled": False}
DEGRADE_FLAGS = {"dlq.replayEnabled": False, "autonomy.mode": "SAFE", **{k: "SAFE" for k in CANARY_FLAGS}}
COMPONENTS = ("plane.worker", "plane.relay", "plane.replayer")
HEARTBEAT_MAX_AGE_S = 15.0


class IncidentError(OpsproofError):
    """The lever acted but the response is not proven (timeout, verification failed, conflict)."""


class IncidentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    level: Literal["critical", "high", "medium", "low"]
    type: Literal["emergency_stop", "soft_degrade", "rollback", "system_failure", "performance_degradation",
                  "security_incident", "data_integrity", "integration_failure"]
    description: str = Field(min_length=1, max_length=4000)
    source: str | None = Field(None, max_length=200)
    trace_id: str | None = Field(None, max_length=200)

    @field_validator("description")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


def parse_request(text: str) -> IncidentRequest:
    """JSON text -> IncidentRequest; anything wrong -> UsageError with one clear line (exit 2)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"incident: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError("incident: expected a JSON object like "
                         '{"level": "critical", "type": "emergency_stop", "description": "..."}')
    try:
        return IncidentRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "incident"
        if err["type"] == "missing":
            msg = "missing field"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif loc == "level":
            msg = f"unknown level {data.get('level')!r} (one of {', '.join(LEVELS)})"
        elif loc == "type":
            msg = f"unknown type {data.get('type')!r} (one of {', '.join(TYPES)})"
        else:
            msg = err["msg"]
        raise UsageError(f"incident: {loc}: {msg}") from None


def plan_for(req: IncidentRequest) -> str:
    """rollback (type rollback) | emergency_stop (type emergency_stop or level critical) |
    soft_degrade (type soft_degrade or level high) | monitor (medium/low: alert, escalation clock)."""
    if req.type == "rollback":
        return "rollback"
    if req.type == "emergency_stop" or req.level == "critical":
        return "emergency_stop"
    if req.type == "soft_degrade" or req.level == "high":
        return "soft_degrade"
    return "monitor"


@dataclass
class Context:
    """Where the levers act and where they report. Build one with `context_from_settings()`."""

    dsn: str
    degrade_concurrency: int = 37                 # policy agent_concurrency_max // 4
    self_heal_url: str | None = None              # the CI self-heal hook (rollback)
    alert_url: str | None = None                  # Slack webhook (monitor/escalation)
    sink_url: str | None = None                   # the plane's local sink (read back what was posted)
    trace_link_template: str = "http://127.0.0.1:16686/trace/{trace_id}"
    components: tuple[str, ...] = COMPONENTS
    verify: bool = True
    poll_s: float = 0.1
    timeouts: dict[str, float] = field(default_factory=lambda: dict(TIMEOUT_S))
    operator: str = field(default_factory=lambda: os.environ.get("USER") or os.environ.get("LOGNAME") or "operator")


def context_from_settings(settings, policy, **overrides) -> Context:
    """Context from opsproof settings + policy. The self-heal hook: OPSPROOF_SELF_HEAL_URL, else the plane's
    sink `<sink>/self-heal` on the embedded stack."""
    from opsproof import paths
    from opsproof.envfile import read_env

    if settings.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    plane_env = read_env(paths.plane_dir() / "env")
    sink = settings.sink_url or plane_env.get("OPSPROOF_SINK_URL")
    self_heal = os.environ.get("OPSPROOF_SELF_HEAL_URL") or plane_env.get("OPSPROOF_SELF_HEAL_URL") or (
        f"{sink}/self-heal" if sink else None)
    alert = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
    comps = os.environ.get("OPSPROOF_INCIDENT_COMPONENTS")
    ctx = Context(dsn=settings.db_url.get_secret_value(),
                  degrade_concurrency=max(1, policy.budgets.agent_concurrency_max // 4),
                  self_heal_url=self_heal, alert_url=alert, sink_url=sink,
                  trace_link_template=settings.trace_link_template,
                  components=tuple(c.strip() for c in comps.split(",") if c.strip()) if comps else COMPONENTS)
    for k, v in overrides.items():
        setattr(ctx, k, v)
    return ctx


# -- database helpers ------------------------------------------------------------------------------

def _connect(dsn: str) -> psycopg.Connection:
    return connect(dsn, application_name="opsproof-incident")


def _by(incident_id: str, actor: str = ACTOR) -> dict:
    """The audit fields every incident row carries (common.audit keywords): the incident's run id and id, the
    actor; the contract was checked once per connection (_require_contract)."""
    return {"run_id": f"incident-{incident_id}", "incident_id": incident_id, "actor": actor, "checked": True}


def _require_contract(conn) -> None:
    missing = [n for n, ok in conn.execute(
        """select n, to_regclass(n) is not null from unnest(array['ops.incidents', 'ops.feature_flags', 'ops.budgets',
           'ops.flag_snapshots']) n""").fetchall() if not ok]
    if conn.execute("select to_regprocedure(%s)", (AUDIT_SIGNATURE,)).fetchone()[0] is None:
        missing.append("ops.audit(...)")
    if missing:
        raise OpsproofError(f"incident: contract missing on the target: {', '.join(missing)} (apply supabase/migrations)")


def _num(v: Any) -> str:
    """A budget value as exact text (numeric keeps its scale through text)."""
    return str(v) if isinstance(v, Decimal) else str(Decimal(str(v)))


def _row_meta(updated_at: datetime, updated_by: str) -> dict:
    return {"updated_at": updated_at.isoformat(), "updated_by": updated_by}


def writer_tag(incident_id: str) -> str:
    return f"incident:{incident_id}"


def table_md5(conn) -> dict:
    """md5 of every column of every row of ops.feature_flags and ops.budgets (the 'exactly restored' proof)."""
    ff, bu = conn.execute(
        """select (select md5(coalesce(string_agg(f::text, '|' order by f.key), '')) from ops.feature_flags f),
                  (select md5(coalesce(string_agg(b::text, '|' order by b.key), '')) from ops.budgets b)""").fetchone()
    return {"feature_flags": ff, "budgets": bu}


# -- snapshots (last known good) ---------------------------------------------------------------------

def take_snapshot(dsn: str, reason: str, *, known_good: bool = True, taken_by: str = "opsproof") -> dict:
    """Snapshot every base flag and budget into ops.flag_snapshots (audited)."""
    with _connect(dsn) as conn:
        _require_contract(conn)
        with conn.transaction():
            flags = dict(conn.execute("select key, value from ops.feature_flags order by key").fetchall())
            budgets = {k: _num(v) for k, v in conn.execute("select key, value from ops.budgets order by key").fetchall()}
            sid, at = conn.execute(
                """insert into ops.flag_snapshots (taken_by, reason, known_good, flags, budgets)
                   values (%s, %s, %s, %s, %s) returning id, taken_at""",
                (taken_by, reason, known_good, Jsonb(flags), Jsonb(budgets))).fetchone()
            audit(conn, action="flags.snapshot", target="ops.flag_snapshots", reason=reason, run_id=f"snapshot-{sid}",
                  detail={"snapshot_id": sid, "known_good": known_good, "flags": len(flags), "budgets": len(budgets)},
                  actor=taken_by, checked=True)
    return {"id": sid, "taken_at": at.isoformat(), "known_good": known_good, "flags": flags, "budgets": budgets}


def last_known_good(conn) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""select id, taken_at, taken_by, reason, flags, budgets from ops.flag_snapshots
                               where known_good order by taken_at desc, id desc limit 1""").fetchone()


# -- applying a plan ---------------------------------------------------------------------------------

def _set_flag(conn, iid: str, key: str, target: Any, changes: list, reason: str) -> None:
    row = conn.execute("select value, updated_at, updated_by from ops.feature_flags where key = %s for update",
                       (key,)).fetchone()
    if row is None:
        changes.append({"kind": "flag", "key": key, "after": target, "missing": True})
        audit(conn, action="incident.flag.missing", target=f"ops.feature_flags/{key}", reason="flag absent on the target", **_by(iid))
        return
    value, updated_at, updated_by = row
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
    for oid, ovalue, owner in conn.execute(
            """select id, value, owner from ops.flag_overrides
                where key = %s and released_at is null and expires_at > now() and value <> %s for update""",
            (key, Jsonb(target))).fetchall():
        conn.execute("update ops.flag_overrides set released_at = now() where id = %s", (oid,))
        changes.append({"kind": "override_released", "key": key, "id": oid, "value": ovalue, "owner": owner})
        audit(conn, action="incident.override.release", target=f"ops.flag_overrides/{oid}", reason="a leased override masked the incident's value", detail={"key": key, "value": ovalue, "owner": owner}, **_by(iid))


def _set_budget(conn, iid: str, key: str, target: str, changes: list, reason: str, only_lower: bool = False) -> None:
    row = conn.execute("select value, updated_at, updated_by from ops.budgets where key = %s for update",
                       (key,)).fetchone()
    if row is None:
        changes.append({"kind": "budget", "key": key, "after": target, "missing": True})
        audit(conn, action="incident.budget.missing", target=f"ops.budgets/{key}", reason="budget absent on the target", **_by(iid))
        return
    value, updated_at, updated_by = row
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
        snap = last_known_good(conn)
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


# -- verification ------------------------------------------------------------------------------------

def expectations(conn, components: tuple[str, ...]) -> dict[str, dict]:
    """What each plane component's heartbeat must say, given the effective flags and budgets now."""
    f = read_flags(conn)
    exp = {"plane.worker": {"halted": not f.agents_may_claim, "mode": f.mode,
                            "budget": int(read_budget(conn, "agent.concurrency", 0))},
           "plane.relay": {"halted": f.emergency_stop or not f.relay_enabled},
           "plane.replayer": {"halted": f.emergency_stop or not f.replay_enabled}}
    return {c: exp.get(c, {}) for c in components}


def wait_for_components(conn, expect: dict[str, dict], since: datetime, deadline: float, poll_s: float) -> dict:
    """Poll ops.heartbeats until every component has beaten after `since` with the expected detail.
    Returns {"ok", "waited_s", "components": {name: {beat_at, detail, ok}}, "problems"}."""
    t0 = time.monotonic()
    last: dict = {}
    while True:
        rows = {r[0]: (r[1], r[2] or {}, r[3]) for r in conn.execute(
            """select component, beat_at, detail, extract(epoch from clock_timestamp() - beat_at)::float8
                 from ops.heartbeats where component = any(%s)""", (list(expect),)).fetchall()}
        problems, comps = [], {}
        for name, want in expect.items():
            if name not in rows:
                problems.append(f"{name}: no heartbeat at all (is the plane up?)")
                continue
            beat_at, detail, age = rows[name]
            fresh = beat_at > since
            match = all(detail.get(k) == v for k, v in want.items())
            comps[name] = {"beat_at": beat_at.isoformat(), "detail": detail, "ok": fresh and match}
            if age > HEARTBEAT_MAX_AGE_S:
                problems.append(f"{name}: last heartbeat {age:.0f}s ago (component down?)")
            elif not fresh:
                problems.append(f"{name}: no heartbeat since the change")
            elif not match:
                problems.append(f"{name}: heartbeat says {({k: detail.get(k) for k in want})}, expected {want}")
        last = {"ok": not problems, "waited_s": round(time.monotonic() - t0, 3), "components": comps,
                "problems": problems}
        if not problems or time.monotonic() >= deadline:
            return last
        time.sleep(poll_s)


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


def _recent_traces(conn, limit: int = 5) -> list[str]:
    return [r[0] for r in conn.execute(
        """select trace_id from ops.agent_tasks
            where trace_id is not null and status in ('failed', 'quarantined') and enqueued_at > now() - interval '1 day'
            order by id desc limit %s::int""", (limit,)).fetchall()]


def _verify(conn, iid: str, plan: str, req: IncidentRequest, ctx: Context, changes: list, t_start: float,
            since: datetime) -> dict:
    deadline = t_start + ctx.timeouts[req.level]
    out: dict = {"checks": [], "problems": []}
    if plan in ("emergency_stop", "soft_degrade", "rollback") and ctx.verify:
        exp = expectations(conn, ctx.components)
        res = wait_for_components(conn, exp, since, deadline, ctx.poll_s)
        out["checks"].append({"what": "plane heartbeats reflect the flags", "expected": exp, **res})
        out["problems"] += res["problems"]
        if plan == "emergency_stop" and res["ok"]:
            # the worker really stopped: nothing claimed after the halted heartbeat (one cycle observed)
            t_conf = conn.execute("select clock_timestamp()").fetchone()[0]
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            started, published, queued = conn.execute(
                """select (select count(*) from ops.agent_tasks where started_at > %(t)s),
                          (select count(*) from ops.outbox where published_at > %(t)s),
                          (select count(*) from ops.agent_tasks where status = 'queued')""", {"t": t_conf}).fetchone()
            ok = started == 0 and published == 0
            out["checks"].append({"what": "no task claimed and no outbox event published after the stop",
                                  "tasks_started": started, "events_published": published, "queued_waiting": queued,
                                  "ok": ok})
            if not ok:
                out["problems"].append(f"after the stop: {started} task(s) started, {published} event(s) published")
    if plan == "rollback":
        eff = dict(conn.execute("select key, value from ops.effective_flags").fetchall())
        masked = [c["key"] for c in changes if c["kind"] == "flag" and "after" in c and not c.get("missing")
                  and eff.get(c["key"]) != c["after"]]
        out["checks"].append({"what": "effective flags equal the snapshot", "masked": masked, "ok": not masked})
        if masked:
            out["problems"].append(f"effective flags differ from the snapshot: {masked}")
        audit_ids = [r[0] for r in conn.execute("select id from ops.audit_log where incident_id = %s order by id",
                                                (iid,)).fetchall()]
        traces = _recent_traces(conn)
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
        row = conn.execute("select resolved_at is null from ops.alerts where id = %s", (alert,)).fetchone()
        check = {"what": "alert raised", "alert_id": alert, "ok": bool(row and row[0])}
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
            out["problems"].append(f"monitoring/escalation not in place: {check}")
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
        since = conn.execute("select clock_timestamp()").fetchone()[0]
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


def _current(conn, kind: str, key: str):
    table = "ops.feature_flags" if kind == "flag" else "ops.budgets"
    return conn.execute(f"select value, updated_by from {table} where key = %s for update", (key,)).fetchone()


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
            with conn.cursor(row_factory=dict_row) as cur:
                inc = cur.execute("select * from ops.incidents where id = %s for update", (iid,)).fetchone()
                if inc is None:
                    raise UsageError(f"incident: no incident {iid}")
                if inc["status"] != "open":
                    raise UsageError(f"incident: {iid} is already {inc['status']} "
                                     f"(at {inc['resolved_at'].isoformat() if inc['resolved_at'] else '?'})")
                others = cur.execute("select id, changes from ops.incidents where status = 'open' and id <> %s "
                                     "order by opened_at", (iid,)).fetchall()
            for ch in inc["changes"]:
                kind = ch["kind"]
                if kind == "alert":
                    conn.execute("update ops.alerts set resolved_at = now() where id = %s and resolved_at is null",
                                 (ch["id"],))
                    alerts.append(ch["id"])
                    continue
                if kind not in ("flag", "budget") or "before" not in ch:
                    continue  # held / missing / released overrides: nothing of ours to undo
                cur_row = _current(conn, kind, ch["key"])
                if cur_row is None:
                    conflicts.append({"key": ch["key"], "kind": kind, "why": "row deleted since"})
                    continue
                value, by = cur_row
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
        since = conn.execute("select clock_timestamp()").fetchone()[0]
        ver: dict = {"verified": True, "problems": []}
        if restored and ctx.verify and inc["response"].get("plan") in ("emergency_stop", "soft_degrade", "rollback"):
            exp = expectations(conn, ctx.components)
            res = wait_for_components(conn, exp, since, t_start + ctx.timeouts[inc["level"]], ctx.poll_s)
            ver = {"verified": res["ok"], "problems": res["problems"], "expected": exp, **res}
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
    with _connect(dsn) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                """select id::text, level, type, description, status, opened_at, resolved_at, opened_by,
                          jsonb_array_length(changes) as n_changes, response->>'plan' as plan,
                          (response->>'verified')::boolean as verified,
                          (response->>'time_to_effect_s')::float8 as time_to_effect_s,
                          extract(epoch from now() - opened_at)::float8 as age_s
                     from ops.incidents
                    where status = 'open' or opened_at > now() - make_interval(days => %s::int)
                    order by (status = 'open') desc, opened_at desc limit %s::int""", (days, limit)).fetchall()
    for r in rows:
        r["overdue"] = r["status"] == "open" and r["plan"] == "monitor" and r["age_s"] > TIMEOUT_S.get(r["level"], math.inf)
    return rows


TEST_CASES = (
    ("emergency_stop", {"level": "critical", "type": "emergency_stop", "description": "opsproof incident test: big red button"}),
    ("soft_degrade", {"level": "high", "type": "soft_degrade", "description": "opsproof incident test: soft degrade"}),
    ("rollback", {"level": "high", "type": "rollback", "description": "opsproof incident test: rollback to known good"}),
    ("monitor", {"level": "medium", "type": "performance_degradation", "description": "opsproof incident test: monitor"}),
)


def rehearse(ctx: Context, *, log=print) -> list[dict]:
    """`opsproof incident test`: every lever against the (embedded) target, each resumed at once; proves the
    response took effect on the live plane in time and that resume left ops.feature_flags / ops.budgets
    byte-for-byte as they were (md5 of every column)."""
    out = []
    with _connect(ctx.dsn) as conn:
        _require_contract(conn)
        if last_known_good(conn) is None:
            take_snapshot(ctx.dsn, "incident test: current state taken as known good", taken_by="opsproof-incident-test")
    for name, raw in TEST_CASES:
        with _connect(ctx.dsn) as conn:
            before = table_md5(conn)
        rec: dict = {"lever": name, "ok": False}
        try:
            doc = handle(ctx, IncidentRequest.model_validate(raw))
            rec.update(incident_id=doc["id"], verified=doc["response"]["verified"],
                       time_to_effect_s=doc["response"]["time_to_effect_s"], timeout_s=doc["response"]["timeout_s"],
                       changed=[c["key"] for c in doc["changes"] if "before" in c],
                       problems=doc["response"]["problems"])
            res = resume_or_report(ctx, doc["id"])
            rec.update(resume_verified=res["verification"]["verified"],
                       resume_s=res["verification"]["time_to_effect_s"])
        except OpsproofError as exc:
            rec["problems"] = [*rec.get("problems", []), str(exc)]
        with _connect(ctx.dsn) as conn:
            after = table_md5(conn)
        rec["restored_exactly"] = before == after
        rec["ok"] = bool(rec.get("verified") and rec.get("resume_verified", False) and rec["restored_exactly"])
        log(f"{name:15s} {'ok ' if rec['ok'] else 'FAIL'} effect {rec.get('time_to_effect_s', '-')}s "
            f"(limit {rec.get('timeout_s', '-')}s), resume {rec.get('resume_s', '-')}s, "
            f"restored exactly: {rec['restored_exactly']}"
            + ("" if rec["ok"] else f" -- {'; '.join(rec.get('problems') or ['resume not verified'])}"))
        out.append(rec)
    return out

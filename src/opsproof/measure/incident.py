"""What the incident levers read (levers/incident.py writes): the contract they need, the rows they are about to
change, the last known-good snapshot, what the live plane says after a change (heartbeats, claims, effective
flags, the alert), the incident's own rows and audit ids, and the md5 of ops.feature_flags / ops.budgets that
proves a resume restored them byte-for-byte.

Every function takes an opsproof Target or a psycopg Connection (the levers read inside their own transaction)
and returns a `Measurement`: its result and the statement that ran (`m.query`, parameters rendered).
`lock=True` adds `for update`: the row stays locked in the caller's transaction until it writes it (a read, but
only meaningful inside a lever's write transaction).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from opsproof.measure import _db
from opsproof.measure.flags import flags_from
from opsproof.measure.models import Measurement

CONTRACT_TABLES = ("ops.incidents", "ops.feature_flags", "ops.budgets", "ops.flag_snapshots")
CONTRACT_SQL = ("select n as missing from unnest(%s::text[]) n where to_regclass(n) is null "
                "union all select 'ops.audit(...)'::text where to_regprocedure(%s) is null")
TABLE_MD5_SQL = ("select (select md5(coalesce(string_agg(f::text, '|' order by f.key), '')) from ops.feature_flags f) "
                 "as feature_flags, "
                 "(select md5(coalesce(string_agg(b::text, '|' order by b.key), '')) from ops.budgets b) as budgets")
BASE_FLAGS_SQL = "select key, value from ops.feature_flags order by key"
BASE_BUDGETS_SQL = "select key, value from ops.budgets order by key"
ROW_SQL = {"flag": "select value, updated_at, updated_by from ops.feature_flags where key = %s",
           "budget": "select value, updated_at, updated_by from ops.budgets where key = %s"}
MASKING_OVERRIDES_SQL = ("select id, value, owner from ops.flag_overrides where key = %s and released_at is null "
                         "and expires_at > now() and value <> %s::jsonb")
KNOWN_GOOD_SQL = ("select id, taken_at, taken_by, reason, flags, budgets from ops.flag_snapshots "
                  "where known_good order by taken_at desc, id desc limit 1")
EXPECT_SQL = ("select (select coalesce(jsonb_object_agg(key, value), '{}'::jsonb) from ops.effective_flags) as flags, "
              "(select value from ops.budgets where key = 'agent.concurrency') as concurrency")
HEARTBEATS_SQL = ("select component, beat_at, detail, extract(epoch from clock_timestamp() - beat_at)::float8 as age_s "
                  "from ops.heartbeats where component = any(%s::text[]) order by component")
CLAIMS_AFTER_SQL = ("select (select count(*) from ops.agent_tasks where started_at > %s) as tasks_started, "
                    "(select count(*) from ops.outbox where published_at > %s) as events_published, "
                    "(select count(*) from ops.agent_tasks where status = 'queued') as queued_waiting")
EFFECTIVE_FLAG_VALUES_SQL = "select key, value from ops.effective_flags order by key"
AUDIT_IDS_SQL = "select id from ops.audit_log where incident_id = %s order by id"
FAILED_TRACES_SQL = ("select trace_id from ops.agent_tasks where trace_id is not null "
                     "and status in ('failed', 'quarantined') and enqueued_at > now() - interval '1 day' "
                     "order by id desc limit %s::int")
ALERT_OPEN_SQL = "select resolved_at is null from ops.alerts where id = %s"
INCIDENT_SQL = "select * from ops.incidents where id = %s"
OTHER_OPEN_SQL = "select id, changes from ops.incidents where status = 'open' and id <> %s order by opened_at"
RESOLUTION_SQL = ("select status, resolved_at, response->'resume'->'verification'->'verified' as verified "
                  "from ops.incidents where id = %s")
RECENT_SQL = """select id::text, level, type, description, status, opened_at, resolved_at, opened_by,
       jsonb_array_length(changes) as n_changes, response->>'plan' as plan,
       (response->>'verified')::boolean as verified,
       (response->>'time_to_effect_s')::float8 as time_to_effect_s,
       extract(epoch from now() - opened_at)::float8 as age_s
  from ops.incidents
 where status = 'open' or opened_at > now() - make_interval(days => %s::int)
 order by (status = 'open') desc, opened_at desc limit %s::int"""
HEARTBEAT_MAX_AGE_S = 15.0


def _locked(statement: str, lock: bool) -> str:
    return statement + " for update" if lock else statement


def _one(db, statement: str, params: tuple) -> Measurement[dict | None]:
    got = _db.rows(db, statement, params)
    return Measurement(got[0] if got else None, statement, params)


# -- the contract and the rows the levers change ----------------------------------------------------------

def contract_missing(db, audit_signature: str) -> Measurement[list[str]]:
    """What the incident levers need and the target lacks: tables (to_regclass) and the audit function."""
    params = (list(CONTRACT_TABLES), audit_signature)
    return Measurement([r["missing"] for r in _db.rows(db, CONTRACT_SQL, params)], CONTRACT_SQL, params)


def table_md5(db) -> Measurement[dict]:
    """{"feature_flags", "budgets"}: md5 of every column of every row (the 'exactly restored' proof)."""
    return Measurement(_db.rows(db, TABLE_MD5_SQL)[0], TABLE_MD5_SQL)


def base_flags(db) -> Measurement[dict[str, Any]]:
    """ops.feature_flags as {key: value} (the base rows, not the leased overrides)."""
    return Measurement({r["key"]: r["value"] for r in _db.rows(db, BASE_FLAGS_SQL)}, BASE_FLAGS_SQL)


def base_budgets(db) -> Measurement[dict[str, Any]]:
    """ops.budgets as {key: value} (numeric values keep their scale: Decimal)."""
    return Measurement({r["key"]: r["value"] for r in _db.rows(db, BASE_BUDGETS_SQL)}, BASE_BUDGETS_SQL)


def current_row(db, kind: str, key: str, *, lock: bool = False) -> Measurement[dict | None]:
    """{"value", "updated_at", "updated_by"} of one flag (kind "flag") or budget ("budget"); None if absent."""
    return _one(db, _locked(ROW_SQL[kind], lock), (key,))


def masking_overrides(db, key: str, value: Any, *, lock: bool = False) -> Measurement[list[dict]]:
    """Active (unreleased, unexpired) leased overrides of `key` with another value than `value`."""
    statement, params = _locked(MASKING_OVERRIDES_SQL, lock), (key, json.dumps(value))
    return Measurement(_db.rows(db, statement, params), statement, params)


def last_known_good(db) -> Measurement[dict | None]:
    """The newest known-good ops.flag_snapshots row (the rollback target); None if there is none."""
    return _one(db, KNOWN_GOOD_SQL, ())


# -- what the live plane says ---------------------------------------------------------------------------------

def expectations(db, components: tuple[str, ...]) -> Measurement[dict[str, dict]]:
    """What each plane component's heartbeat must say, given the effective flags and budgets now (the plane's
    own interpretation of the flags: measure.flags)."""
    row = _db.rows(db, EXPECT_SQL)[0]
    f = flags_from(row["flags"] or {})
    budget = row["concurrency"]
    exp = {"plane.worker": {"halted": not f.agents_may_claim, "mode": f.mode,
                            "budget": int(float(budget)) if budget is not None else 0},
           "plane.relay": {"halted": f.emergency_stop or not f.relay_enabled},
           "plane.replayer": {"halted": f.emergency_stop or not f.replay_enabled}}
    return Measurement({c: exp.get(c, {}) for c in components}, EXPECT_SQL)


def heartbeats(db, components: list[str]) -> Measurement[dict[str, dict]]:
    """{component: {"beat_at", "detail", "age_s"}} of the given components (absent ones missing)."""
    params = (list(components),)
    got = _db.rows(db, HEARTBEATS_SQL, params)
    return Measurement({r["component"]: {"beat_at": r["beat_at"], "detail": r["detail"] or {}, "age_s": r["age_s"]}
                        for r in got}, HEARTBEATS_SQL, params)


def wait_for_components(db, expect: dict[str, dict], since: datetime, deadline: float,
                        poll_s: float) -> Measurement[dict]:
    """Poll ops.heartbeats (`heartbeats`) until every component has beaten after `since` with the expected detail,
    or time.monotonic() reaches `deadline`. The result: {"ok", "waited_s", "components": {name: {beat_at, detail,
    ok}}, "problems"} of the last poll; the statement is the one polled."""
    t0 = time.monotonic()
    while True:
        m = heartbeats(db, list(expect))
        problems, comps = [], {}
        for name, want in expect.items():
            if name not in m.result:
                problems.append(f"{name}: no heartbeat at all (is the plane up?)")
                continue
            beat = m.result[name]
            beat_at, detail, age = beat["beat_at"], beat["detail"], beat["age_s"]
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
            return Measurement(last, m.statement, m.params)
        time.sleep(poll_s)


def claims_after(db, t: datetime) -> Measurement[dict]:
    """{"tasks_started", "events_published", "queued_waiting"}: tasks claimed and outbox events published after
    `t` (a stopped plane claims and publishes nothing), and the tasks waiting."""
    params = (t, t)
    return Measurement(_db.rows(db, CLAIMS_AFTER_SQL, params)[0], CLAIMS_AFTER_SQL, params)


def effective_flag_values(db) -> Measurement[dict[str, Any]]:
    """ops.effective_flags as {key: value} (leased overrides included)."""
    return Measurement({r["key"]: r["value"] for r in _db.rows(db, EFFECTIVE_FLAG_VALUES_SQL)},
                       EFFECTIVE_FLAG_VALUES_SQL)


def alert_open(db, alert_id: int) -> Measurement[bool]:
    """Whether the ops.alerts row exists and is unresolved."""
    params = (alert_id,)
    return Measurement(bool(_db.value(db, ALERT_OPEN_SQL, params)), ALERT_OPEN_SQL, params)


def recent_failed_traces(db, limit: int = 5) -> Measurement[list[str]]:
    """Trace ids of the newest failed/quarantined agent tasks of the last day (the rollback's trace links)."""
    params = (limit,)
    return Measurement([r["trace_id"] for r in _db.rows(db, FAILED_TRACES_SQL, params)], FAILED_TRACES_SQL, params)


# -- the incidents themselves ---------------------------------------------------------------------------------

def incident_audit_ids(db, incident_id: str) -> Measurement[list[int]]:
    """The ops.audit_log ids tied to one incident, in order."""
    params = (incident_id,)
    return Measurement([r["id"] for r in _db.rows(db, AUDIT_IDS_SQL, params)], AUDIT_IDS_SQL, params)


def incident_row(db, incident_id: str, *, lock: bool = False) -> Measurement[dict | None]:
    """The whole ops.incidents row (None for an unknown id)."""
    return _one(db, _locked(INCIDENT_SQL, lock), (incident_id,))


def other_open_incidents(db, incident_id: str) -> Measurement[list[dict]]:
    """{"id", "changes"} of every other open incident, oldest first (who may inherit a change on resume)."""
    params = (incident_id,)
    return Measurement(_db.rows(db, OTHER_OPEN_SQL, params), OTHER_OPEN_SQL, params)


def incident_resolution(db, incident_id: str) -> Measurement[dict | None]:
    """{"status", "resolved_at", "verified"} of one incident (verified: its resume's recorded verification)."""
    return _one(db, RESOLUTION_SQL, (incident_id,))


def recent_incidents(db, *, limit: int = 20, days: int = 7) -> Measurement[list[dict]]:
    """Open incidents and those opened in the last `days`, open first, newest first."""
    params = (days, limit)
    return Measurement(_db.rows(db, RECENT_SQL, params), RECENT_SQL, params)


OPEN_SQL = ("select id::text, level, type, response->>'plan' as plan, opened_at from ops.incidents "
            "where status = 'open' order by opened_at desc limit 100")


def open_incidents(db) -> Measurement[list[dict]]:
    """The open incidents (the health score's incidents component; the watch's and the dashboard's count)."""
    return Measurement(_db.rows(db, OPEN_SQL, ()), OPEN_SQL, ())

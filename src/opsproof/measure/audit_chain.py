"""The audit log (ops.audit_log) and its hash chain: the recent rows, the head, the chain's own verification,
an anchored row as it reads today (CAD-004), and single rows the drills look up by id."""

from __future__ import annotations

from opsproof.measure import _db
from opsproof.measure.models import Measurement

RECENT_SQL = ("select id, at, actor, action, target, reason, run_id, hash from ops.audit_log "
              "where at > now() - make_interval(hours => %s) order by id")
HEAD_SQL = ("select (select count(*) from ops.audit_log) as rows, a.id, a.hash "
            "from ops.audit_log a order by a.id desc limit 1")
VERIFY_SQL = "select * from ops.verify_audit_chain()"
ANCHORED_SQL = ("select (select hash from ops.audit_log where id = %s) as hash, "
                "(select count(*) from ops.audit_log where id <= %s) as up_to, "
                "(select count(*) from ops.audit_log) as total")
ENTRY_SQL = "select action, reason from ops.audit_log where id = %s"


def recent(target, hours: int = 24) -> Measurement[list[dict]]:
    """The rows written in the last `hours` (the day's digest), oldest first."""
    params = (hours,)
    return Measurement(_db.rows(target, RECENT_SQL, params), RECENT_SQL, params)


def head(target) -> Measurement[dict | None]:
    """{"rows", "id", "hash"} of the newest row (rows = the table's row count); None when the log is empty."""
    got = _db.rows(target, HEAD_SQL)
    return Measurement(got[0] if got else None, HEAD_SQL)


def verify(target) -> Measurement[dict]:
    """ops.verify_audit_chain(): {"ok", "rows_checked", "first_bad_id", "reason"}."""
    return Measurement(_db.rows(target, VERIFY_SQL)[0], VERIFY_SQL)


def anchored_row(target, last_id: int) -> Measurement[dict]:
    """How an anchored head reads today: {"hash" of row last_id (None if gone), "up_to": rows with id <= last_id,
    "total": rows}."""
    params = (last_id, last_id)
    return Measurement(_db.rows(target, ANCHORED_SQL, params)[0], ANCHORED_SQL, params)


def entry(db, audit_id: int) -> Measurement[dict | None]:
    """{"action", "reason"} of one audit row (None if there is no such row)."""
    params = (audit_id,)
    got = _db.rows(db, ENTRY_SQL, params)
    return Measurement(got[0] if got else None, ENTRY_SQL, params)

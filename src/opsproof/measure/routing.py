"""Where reads go and why (ops.read_routing, the health gate's probes, its cutover audit rows), and the database's
clock: the region wobble drill's observations. Every function takes a Target or a psycopg Connection."""

from __future__ import annotations

from datetime import datetime

from opsproof.measure import _db
from opsproof.measure.models import Measurement

CLOCK_SQL = "select clock_timestamp()"
READS_ON_SQL = "select target from ops.read_routing where region = 'replica'"
ROUTED_SQL = ("select target, changed_at from ops.read_routing where region = 'replica' and target = %s "
              "and (%s::timestamptz is null or changed_at > %s::timestamptz)")
LAST_PROBE_SQL = "select coalesce(max(id), 0) from ops.health_probes"
PROBES_SQL = ("select id, ts, ok, lag_bytes, detail from ops.health_probes "
              "where region = 'replica' and id > %s and ts <= %s order by id")
CUTOVER_AUDIT_SQL = ("select id, detail from ops.audit_log where action = 'read_routing.cutover' and at >= %s "
                     "order by id limit 1")


def db_clock(db) -> Measurement[datetime]:
    """The database's wall clock (clock_timestamp(): not the transaction's start)."""
    return Measurement(_db.value(db, CLOCK_SQL), CLOCK_SQL)


def replica_reads_on(db) -> Measurement[str | None]:
    """Where the replica region's reads are routed now ('replica' or 'primary'; None without a routing row)."""
    return Measurement(_db.value(db, READS_ON_SQL), READS_ON_SQL)


def replica_routed_to(db, to: str, changed_after: datetime | None = None) -> Measurement[list[dict]]:
    """The replica region's routing row ({"target", "changed_at"}) if it points at `to` (and changed after
    `changed_after` when given); [] otherwise."""
    params = (to, changed_after, changed_after)
    return Measurement(_db.rows(db, ROUTED_SQL, params), ROUTED_SQL, params)


def last_probe_id(db) -> Measurement[int]:
    """The newest health probe's id (0 when there is none): later probes have larger ids."""
    return Measurement(int(_db.value(db, LAST_PROBE_SQL)), LAST_PROBE_SQL)


def replica_probes(db, after_id: int, until: datetime) -> Measurement[list[dict]]:
    """The replica's health probes after probe `after_id` up to `until`, oldest first
    ({"id", "ts", "ok", "lag_bytes", "detail"})."""
    params = (after_id, until)
    return Measurement(_db.rows(db, PROBES_SQL, params), PROBES_SQL, params)


def cutover_audit(db, since: datetime) -> Measurement[list[dict]]:
    """The first read_routing.cutover audit row at/after `since` ({"id", "detail"}), as a list of at most one."""
    params = (since,)
    return Measurement(_db.rows(db, CUTOVER_AUDIT_SQL, params), CUTOVER_AUDIT_SQL, params)

"""What the cadence's maintenance leaves behind: agent_logs past their TTL (CAD-002), daily partitions missing
ahead (CAD-003)."""

from __future__ import annotations

from opsproof.measure.models import Measurement

AGENT_LOGS_TTL_SQL = (
    "select (select count(*) from ops.agent_logs where ts < now() - make_interval(days => %s)) as stale, "
    "exists (select 1 from ops.agent_logs) as present")

PARTITIONS_MISSING_SQL = (
    "select count(*) from generate_series(current_date, current_date + %s, interval '1 day') d "
    "where to_regclass(format('ops.%%s_%%s', %s::text, to_char(d, 'YYYYMMDD'))) is null")


def agent_logs_ttl(target, ttl_days: int) -> Measurement[dict]:
    """{"stale": rows of ops.agent_logs older than ttl_days, "present": whether the table holds any row at all}
    (a zero over an empty table proves nothing)."""
    params = (ttl_days,)
    row = target.rows(AGENT_LOGS_TTL_SQL, params)[0]
    return Measurement({"stale": int(row["stale"]), "present": bool(row["present"])}, AGENT_LOGS_TTL_SQL, params)


def partitions_missing(target, table: str, days_ahead: int) -> Measurement[int]:
    """Daily partitions ops.<table>_YYYYMMDD missing for today .. today + days_ahead."""
    params = (days_ahead, table)
    return Measurement(int(target.value(PARTITIONS_MISSING_SQL, params)), PARTITIONS_MISSING_SQL, params)

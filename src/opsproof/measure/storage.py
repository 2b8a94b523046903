"""What the target's data costs to keep: database size and the largest ops/public tables (partitions summed into
their parent). An artifact of the monthly review; no threshold is compared here."""

from __future__ import annotations

from opsproof.measure.models import Measurement

DATABASE_SIZE_SQL = "select pg_database_size(current_database()) as bytes"
LARGEST_TABLES_SQL = (
    "select n.nspname || '.' || c.relname as table_name, "
    "coalesce((select sum(pg_total_relation_size(i.inhrelid)) from pg_inherits i where i.inhparent = c.oid), 0) "
    "+ pg_total_relation_size(c.oid) as bytes "
    "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where n.nspname in ('ops', 'public') and c.relkind in ('r', 'p') and not c.relispartition "
    "order by 2 desc limit %s")


def storage(target, top: int = 8) -> Measurement[dict]:
    """{"database_bytes", "largest_tables": {table: bytes}} in one measurement (both statements recorded)."""
    size = int(target.value(DATABASE_SIZE_SQL))
    rows = target.rows(LARGEST_TABLES_SQL, (top,))
    result = {"database_bytes": size, "largest_tables": {r["table_name"]: int(r["bytes"]) for r in rows}}
    return Measurement(result=result, statement=f"{DATABASE_SIZE_SQL};\n{LARGEST_TABLES_SQL}", params=(top,))

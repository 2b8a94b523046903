"""Security reads: row-level security per table, service-account keys and permissions (one statement each)."""

from __future__ import annotations

from opsproof.measure.models import Measurement
from opsproof.measure.ops import rows
from opsproof.target.db import Target

RLS_SQL = ("select n.nspname || '.' || c.relname as table_name, c.relrowsecurity as rls "
           "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
           "where n.nspname = any(%s) and c.relkind in ('r', 'p') order by 1")

ROTATION_SQL = ("select name, key_fingerprint is not null as has_key, "
                "extract(epoch from now() - rotated_at) / 86400 as age_days from ops.service_accounts order by name")

PERMISSIONS_SQL = "select name, permissions from ops.service_accounts order by name"


def rls_tables(target: Target, schemas: list[str]) -> Measurement[list[dict]]:
    """Every table (plain or partitioned) of the given schemas: {table_name, rls}."""
    return rows(target, RLS_SQL, (list(schemas),))


def service_account_keys(target: Target) -> Measurement[dict[str, dict]]:
    """name -> {name, has_key, age_days} (age of the key's last rotation, in days; negative = in the future)."""
    m = rows(target, ROTATION_SQL)
    return Measurement({r["name"]: r for r in m.result}, m.statement, m.params)


def service_account_permissions(target: Target) -> Measurement[dict[str, list[str]]]:
    m = rows(target, PERMISSIONS_SQL)
    return Measurement({r["name"]: list(r["permissions"]) for r in m.result}, m.statement, m.params)

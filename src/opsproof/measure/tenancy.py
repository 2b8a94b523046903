"""Tenant isolation and portal access, measured through the same claims PostgREST would set.

The cross-tenant matrix is generated from the database: every table in the exposed schemas with a
`tenant_id` column x every tenant x every human role, read by `select` (and by any exposed function
returning that table's rows). Used by the daily security control and by the acceptance step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql as psql

from opsproof.target.db import Target

EXPOSED = ["public", "ops"]
PROBE_CAP = 100  # a leak is a leak: count at most this many foreign rows per cell

HUMAN_ROLES = ("super_admin", "tenant_admin", "ops_manager", "dispatcher", "finance_manager", "analyst",
               "developer", "viewer")

TENANT_TABLES_SQL = (
    "select c.table_schema || '.' || c.table_name as rel from information_schema.columns c "
    "join information_schema.tables t using (table_schema, table_name) "
    "where c.column_name = 'tenant_id' and c.table_schema = any(%s) and t.table_type = 'BASE TABLE' "
    "and not exists (select 1 from pg_inherits i join pg_class k on k.oid = i.inhrelid "
    "  join pg_namespace n on n.oid = k.relnamespace where n.nspname = c.table_schema and k.relname = c.table_name) "
    "order by 1")

RPC_SQL = (
    "select n.nspname || '.' || p.proname as fn, tn.nspname || '.' || t.typname as rel "
    "from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_type t on t.oid = p.prorettype "
    "join pg_namespace tn on tn.oid = t.typnamespace "
    "where n.nspname = any(%s) and p.proretset and p.pronargs = 0 and t.typrelid <> 0")


@dataclass
class IsolationMatrix:
    tables: list[str]
    tenants: list[str]
    roles: list[str]
    paths: list[str]
    cells: int = 0
    leaks: list[dict] = field(default_factory=list)            # a read of another tenant's rows (must be empty)
    own_reads: dict[str, int] = field(default_factory=dict)    # "table|tenant|path" -> rows the owner read (max over roles)

    def unproven(self) -> list[str]:
        """(table, tenant, path) whose zero cross-read is not backed by the owner reading > 0 rows."""
        return sorted(k for k, v in self.own_reads.items() if v == 0)

    def summary(self) -> dict:
        return {"tables": len(self.tables), "tenants": len(self.tenants), "roles": len(self.roles),
                "paths": self.paths, "cells": self.cells, "leaks": len(self.leaks),
                "unproven": len(self.unproven())}


def claims(tenant: str, app_role: str) -> dict:
    """What a logged-in human's access token carries (the app role and tenant as custom claims)."""
    return {"sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsproof:{tenant}:{app_role}")), "role": "authenticated",
            "aud": "authenticated", "tenant_id": tenant, "app_role": app_role}


def cross_tenant_matrix(target: Target, roles: tuple[str, ...] = HUMAN_ROLES) -> IsolationMatrix:
    tables = [r["rel"] for r in target.rows(TENANT_TABLES_SQL, (EXPOSED,))]
    tenants = [str(r["id"]) for r in target.rows("select id from public.tenants order by id")]
    rpcs = [(r["fn"], r["rel"]) for r in target.rows(RPC_SQL, (EXPOSED,)) if r["rel"] in tables]
    paths = ["select"] + [f"rpc:{fn}" for fn, _ in rpcs]
    m = IsolationMatrix(tables=tables, tenants=tenants, roles=list(roles), paths=paths)
    # one capped probe per (table, path, tenant): "how many of tenant X's rows can I see?" (index on tenant_id)
    reads = [(rel, "select", psql.SQL("select count(*) from (select 1 from {} where tenant_id = %s limit {}) x").format(
        psql.Identifier(*rel.split(".")), psql.Literal(PROBE_CAP))) for rel in tables]
    reads += [(rel, f"rpc:{fn}", psql.SQL("select count(*) from (select 1 from {}() t where t.tenant_id = %s limit {}) x")
               .format(psql.Identifier(*fn.split(".")), psql.Literal(PROBE_CAP))) for fn, rel in rpcs]
    for tenant in tenants:
        for role in roles:
            with target.as_user(claims(tenant, role), role="authenticated") as conn:
                for rel, path, query in reads:
                    key = f"{rel}|{tenant}|{path}"
                    own = conn.execute(query, (tenant,)).fetchone()[0]
                    m.own_reads[key] = max(m.own_reads.get(key, 0), own)
                    for other in tenants:
                        if other == tenant:
                            continue
                        m.cells += 1
                        seen = conn.execute(query, (other,)).fetchone()[0]
                        if seen:
                            m.leaks.append({"table": rel, "path": path, "as_tenant": tenant, "as_role": role,
                                            "read_tenant": other, "rows_at_least": seen})
    return m


# -- portals x roles ------------------------------------------------------------------

def parse_role_matrix(path: Path) -> dict[tuple[str, str], bool]:
    """role-matrix.md's first markdown table -> {(portal, role): allowed}. Cells must be exactly Y or -."""
    rows: list[str] = []
    for ln in (x.strip() for x in path.read_text().splitlines()):
        if ln.startswith("|"):
            rows.append(ln)
        elif rows:
            break  # the first table only
    if len(rows) < 3:
        raise ValueError(f"{path}: no markdown table found")
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    roles = header[2:]
    out: dict[tuple[str, str], bool] = {}
    for ln in rows[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"{path}: row {cells[0]!r} has {len(cells)} cells, expected {len(header)}")
        for role, cell in zip(roles, cells[2:]):
            if cell not in ("Y", "-"):
                raise ValueError(f"{path}: cell ({cells[0]}, {role}) is {cell!r}, expected Y or -")
            out[(cells[0], role)] = cell == "Y"
    return out


def portal_access_as_roles(target: Target, roles: list[str]) -> dict[tuple[str, str], bool]:
    """Every (portal, role) cell as the database answers it for that role's JWT (can_access_portal)."""
    out: dict[tuple[str, str], bool] = {}
    tenant = target.value("select id::text from public.tenants order by id limit 1")
    for role in roles:
        with target.as_user(claims(tenant, role), role="authenticated") as conn:
            for portal, allowed in conn.execute("select key, public.can_access_portal(key) from public.portals"):
                out[(portal, role)] = bool(allowed)
    return out


def portal_table_reach(target: Target, roles: list[str]) -> dict[tuple[str, str], bool]:
    """(portal, role) -> does the role's JWT read > 0 rows of the portal's own tenant tables (the data path)."""
    mapping = target.rows("select relation, portal_key from public.portal_tables where scope = 'tenant'")
    tenant = target.value("select id::text from public.tenants order by id limit 1")
    out: dict[tuple[str, str], bool] = {}
    for role in roles:
        with target.as_user(claims(tenant, role), role="authenticated") as conn:
            for m in mapping:
                n = conn.execute(psql.SQL("select count(*) from {}").format(
                    psql.Identifier(*m["relation"].split(".")))).fetchone()[0]
                out[(m["portal_key"], role)] = out.get((m["portal_key"], role), False) or n > 0
    return out


def matrix_diff(expected: dict, actual: dict) -> list[str]:
    keys = sorted(set(expected) | set(actual))
    return [f"{p} x {r}: role-matrix.md says {'Y' if expected.get((p, r)) else '-'}, "
            f"database says {'Y' if actual.get((p, r)) else '-' if (p, r) in actual else 'missing'}"
            for p, r in keys if expected.get((p, r)) != actual.get((p, r))]



"""SEC-001 through the real API: the isolation matrix read through PostgREST with supabase-py, as signed-in users.

The users (one per tenant x app role, created, signed in and deleted by levers/api_users.py) present the access
tokens Supabase Auth issued them; the anon key alone is a principal too. For every tenant-scoped relation the
SQL matrix probed (measure/tenancy.py) and every tenant, each principal counts the rows it sees with
`HEAD /rest/v1/<relation>?<tenant column>=eq.<tenant>` (Prefer: count=exact; no row crosses the wire).

- a principal reading ANY row of a tenant that is not its own is a leak;
- positive control: a (relation, tenant) counts only where that tenant's own users read > 0 rows through the
  same API path; otherwise it is `unproven` (an error, never a pass);
- a relation the API does not expose (schema not in PostgREST's db_schemas, or not in its schema cache) cannot
  be read through the API by anyone: listed as `not exposed by the API`, neither leak nor proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opsproof.errors import OpsproofError
from opsproof.measure.models import Measurement
from opsproof.target import rest

SOURCE = "postgrest-api"
REQUEST = "HEAD {url}/rest/v1/{rel}?{col}=eq.<tenant>&limit=1 (Prefer: count=exact; Accept-Profile: {schema})"
RELATION_KINDS = ("table", "partitioned table", "view", "matview", "foreign table")


@dataclass
class ApiIsolation:
    principals: list[str]
    relations: list[str]
    tenants: list[str]
    cells: int = 0
    leaks: list[dict] = field(default_factory=list)
    own_reads: dict[str, int] = field(default_factory=dict)     # "relation|tenant" -> most rows its owners read
    not_exposed: dict[str, str] = field(default_factory=dict)   # relation -> the API's answer

    def unproven(self) -> list[str]:
        return sorted(k for k, v in self.own_reads.items() if v == 0)

    def failures(self) -> list[str]:
        return [f"{x['principal']} read {x['read_tenant']}'s rows of {x['relation']} through the API "
                f"({x['rows']} rows)" for x in self.leaks]

    def summary(self) -> dict:
        return {"source": SOURCE, "principals": len(self.principals), "relations": len(self.relations),
                "tenants": len(self.tenants), "cells": self.cells, "leaks": len(self.leaks),
                "unproven": len(self.unproven()), "not_exposed": len(self.not_exposed)}

    def evidence(self) -> dict:
        return {**self.summary(), "principal_names": self.principals, "relation_names": self.relations,
                "leaks_first": self.leaks[:50], "unproven_cells": self.unproven(), "not_exposed_by_api": self.not_exposed}


def relations_of(matrix: Any) -> list[tuple[str, str, str]]:
    """(schema, relation, tenant column) of every relation the SQL matrix probed."""
    out = []
    for p in getattr(matrix, "api_paths", []):
        if p.status == "probed" and p.kind in RELATION_KINDS and p.tenant_column:
            schema, _, name = p.name.partition(".")
            out.append((schema, name, p.tenant_column))
    return out


def matrix(settings, users: list, relations: list[tuple[str, str, str]], tenants: list[str]) -> Measurement[ApiIsolation]:
    """Count every (principal, relation, tenant) cell through PostgREST (see the module docstring)."""
    tenants = [str(t) for t in tenants]
    principals: list[tuple[str, str | None, Any]] = [("anon", None, rest.anon_client(settings))]
    try:
        principals += [(f"{u.tenant}:{u.app_role}", u.tenant, rest.session_client(settings, u.access_token))
                       for u in users]
        m = ApiIsolation(principals=[p[0] for p in principals], tenants=tenants,
                         relations=[f"{s}.{r}" for s, r, _ in relations])
        for schema, rel, col in relations:
            name = f"{schema}.{rel}"
            for t in tenants:
                m.own_reads.setdefault(f"{name}|{t}", 0)
            for pname, own, client in principals:
                if name in m.not_exposed:
                    break
                for t in tenants:
                    try:
                        n = rest.count_rows(client, rel, schema, tenant_id=t, tenant_column=col)
                    except OpsproofError as exc:
                        if "not exposed" in str(exc) or "not found" in str(exc):
                            m.not_exposed[name] = str(exc)
                            for tt in tenants:
                                m.own_reads.pop(f"{name}|{tt}", None)
                            break
                        raise
                    m.cells += 1
                    if own == t:
                        m.own_reads[f"{name}|{t}"] = max(m.own_reads[f"{name}|{t}"], n)
                    elif n > 0:
                        m.leaks.append({"principal": pname, "relation": name, "read_tenant": t, "rows": n})
    finally:
        for _, _, client in principals:
            rest.close(client)
    url = str(getattr(settings, "supabase_url", "") or "").rstrip("/")
    statement = "; ".join(REQUEST.format(url=url, rel=r, col=c, schema=s) for s, r, c in relations[:3])
    if len(relations) > 3:
        statement += f"; ... ({len(relations)} relations x {len(tenants)} tenants x {len(principals)} principals)"
    return Measurement(m, statement, source=SOURCE)

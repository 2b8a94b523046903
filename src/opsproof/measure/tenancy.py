"""Tenant isolation and portal access, measured through the same claims PostgREST would set.

The isolation matrix (SEC-001, ACC-003) is generated from the database, never from a list kept here:

principals  every API identity that could present itself: `anon` (the public anon key, with and without forged
            tenant claims); `authenticated` with each of the 8 app roles for each tenant (the owners); the same 8
            roles for a well-formed tenant that owns no data (the strangers); and tokens with missing or malformed
            claims (no/empty/non-uuid/non-string tenant_id, no/unknown app_role, no `sub`, claims only in the
            user-editable user_metadata, no claims at all). Only an owner owns a tenant: for every other principal
            ANY tenant row it reads is a leak.
paths       everything the API exposes in the exposed schemas: tables (partitioned parents; a partition only when
            it has a policy or no RLS: with RLS on and no policy Postgres denies by construction), views (security
            definer views included: a view without security_invoker reads as its owner), materialized views and
            foreign tables, each with a tenant column (`tenant_id`, or `id` of the tenants table); relations without
            one are listed as not tenant-scoped. And every function EXECUTABLE by anon/authenticated, called with
            typed sample arguments (`uuid` -> each tenant's id and a random uuid, text -> the tenant id / '', numbers
            1, now-ish timestamps, '{}' json ...), each call in a savepoint that is always rolled back.
judging     relation / row-returning function with a tenant column: capped count of each tenant's rows (index on
            tenant_id; PROBE_CAP). Other functions: their output is searched for other tenants' ids and row ids
            (markers; values the caller passed in do not count), and, for functions taking a tenant-like argument,
            compared differentially (a foreign user getting exactly the owner's answer for the owner's id, where a
            stranger gets something else and the answer follows the argument, is a leak). What is NOT detected: a
            bare number or text derived from another tenant's rows without ids, from a function whose answer does
            not follow its argument. A SECURITY DEFINER function that the matrix cannot call or cannot judge is a
            failure unless the policy allow-lists it with a reason ([security] isolation_allowlist).
positive    a zero counts only where the same path reads the owner's rows: a (path, tenant) that no owner reads
control     through is `unproven` (an error, not a pass).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as psql

from opsproof.target.db import Target

EXPOSED = ["public", "ops"]
API_ROLES = ("anon", "authenticated")
TENANTS_TABLE = "public.tenants"   # tenant-scoped by its own `id`
PROBE_CAP = 100          # a leak is a leak: count at most this many rows of one tenant per cell
FN_ROW_CAP = 20000       # rows of one function call that are attributed to tenants
FN_TEXT_ROWS = 500       # rows of a set-returning function without a tenant column searched for markers
MARKERS_PER_TABLE = 20   # row ids per tenant and table used as markers of that tenant's data
MATRIX_WORKERS = 3       # principals probed at once (each on its own pooled connection; the pool holds 4)
CALL_TIMEOUT_MS = 5000   # one probe or call; a timeout is an error cell (for a SECURITY DEFINER function: unjudged)

HUMAN_ROLES = ("super_admin", "tenant_admin", "ops_manager", "dispatcher", "finance_manager", "analyst",
               "developer", "viewer")

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

RELATIONS_SQL = """
select n.nspname as schema, c.relname as name, c.oid::bigint as oid, c.relkind::text as relkind,
       c.relispartition as is_partition, c.relrowsecurity as rls,
       exists (select 1 from pg_catalog.pg_policy po where po.polrelid = c.oid) as has_policy,
       coalesce((select lower(o.option_value) in ('true', 'on', '1', 'yes')
                   from pg_catalog.pg_options_to_table(c.reloptions) o
                  where o.option_name = 'security_invoker'), false) as security_invoker,
       a.attname::text as tenant_column, pg_catalog.format_type(a.atttypid, a.atttypmod) as tenant_type,
       array(select r from unnest(%(roles)s::text[]) r
              where has_schema_privilege(r, n.oid, 'USAGE')
                and case when a.attname is null then has_table_privilege(r, c.oid, 'SELECT')
                         else has_column_privilege(r, c.oid, a.attname, 'SELECT') end) as readers
  from pg_catalog.pg_class c
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  left join pg_catalog.pg_attribute a
         on a.attrelid = c.oid and not a.attisdropped and a.attnum > 0
        and a.attname = case when n.nspname || '.' || c.relname = %(tenants_table)s then 'id' else 'tenant_id' end
 where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm', 'f')
 order by 1, 2
"""

FUNCTIONS_SQL = """
select p.oid::bigint as oid, n.nspname as schema, p.proname as name,
       pg_catalog.pg_get_function_identity_arguments(p.oid) as identity,
       p.prosecdef as security_definer, p.proretset as returns_set, p.provariadic::bigint as variadic,
       p.prorettype::bigint as rettype, rt.typtype::text as ret_typtype, rt.typname::text as ret_typname,
       rt.typrelid::bigint as ret_typrelid, pg_catalog.format_type(p.prorettype, null) as ret_format,
       p.proargtypes::oid[]::bigint[] as argtypes, p.proallargtypes::bigint[] as allargtypes,
       p.proargmodes::text[] as argmodes, p.proargnames::text[] as argnames,
       exists (select 1 from pg_catalog.pg_depend d where d.classid = 'pg_catalog.pg_proc'::regclass
                  and d.objid = p.oid and d.deptype = 'e') as from_extension,
       array(select r from unnest(%(roles)s::text[]) r
              where has_schema_privilege(r, n.oid, 'USAGE') and has_function_privilege(r, p.oid, 'EXECUTE'))
         as callers
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  join pg_catalog.pg_type rt on rt.oid = p.prorettype
 where n.nspname = any(%(schemas)s) and p.prokind = 'f'
 order by 2, 3, 4
"""

TYPES_SQL = """
select t.oid::bigint as oid, t.typname::text as typname, t.typtype::text as typtype, t.typcategory::text as category,
       t.typelem::bigint as elem, t.typbasetype::bigint as base, pg_catalog.format_type(t.oid, null) as format,
       array(select e.enumlabel::text from pg_catalog.pg_enum e where e.enumtypid = t.oid
              order by e.enumsortorder limit 1) as enum_first
  from pg_catalog.pg_type t where t.oid = any(%s::bigint[]::oid[])
"""

UNCALLABLE_RETURNS = {"trigger", "event_trigger", "internal", "language_handler", "fdw_handler",
                      "index_am_handler", "tsm_handler", "table_am_handler"}
TEXTISH = {"text", "varchar", "bpchar", "name", "citext"}
NUMERIC = {"int2", "int4", "int8", "numeric", "float4", "float8", "oid", "money"}
FIXED = {"bool": "true", "json": "{}", "jsonb": "{}", "time": "00:00", "timetz": "00:00+00",
         "interval": "1 hour", "inet": "127.0.0.1", "cidr": "127.0.0.1/32", "bytea": "\\x", "xml": "<x/>"}


# -- the matrix's vocabulary -----------------------------------------------------------------------

@dataclass
class Principal:
    name: str
    kind: str                 # owner | stranger | anon | malformed
    db_role: str              # the Postgres role PostgREST switches to
    claims: dict
    tenant: str | None = None
    app_role: str | None = None


@dataclass
class ApiPath:
    name: str                 # schema.relation, or schema.function(identity args)
    kind: str                 # table | partitioned table | partition | view | matview | foreign table | function
    security_definer: bool
    readers: list[str]        # the API roles that may read/call it
    tenant_column: str | None = None
    status: str = "probed"    # probed | allow-listed | not tenant-scoped | closed | not exposed | uncallable | ...
    note: str = ""


@dataclass
class IsolationMatrix:
    tables: list[str]                      # tenant-scoped relations probed (kept for callers)
    tenants: list[str]
    roles: list[str]
    paths: list[str] = field(default_factory=list)   # every probed path name
    principals: list[Principal] = field(default_factory=list)
    api_paths: list[ApiPath] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    cells: int = 0
    leaks: list[dict] = field(default_factory=list)            # a read of another tenant's data (must be empty)
    own_reads: dict[str, int] = field(default_factory=dict)    # "path|tenant" -> most rows an owner read
    unjudged: list[dict] = field(default_factory=list)         # SECURITY DEFINER functions not called/judged
    allowlisted: list[dict] = field(default_factory=list)
    judged_by: dict[str, str] = field(default_factory=dict)    # function path -> how its output was judged

    def unproven(self) -> list[str]:
        """(path, tenant) whose zero cross-read is not backed by an owner reading > 0 rows through it."""
        return sorted(k for k, v in self.own_reads.items() if v == 0)

    def failures(self) -> list[str]:
        """What makes the control red (leaks and SECURITY DEFINER functions it cannot judge)."""
        out = [f"{x['principal']} read {x['read_tenant']}'s data via {x['path']} ({x['how']}, "
               f"at least {x['rows_at_least']})" for x in self.leaks]
        out += [f"SECURITY DEFINER {x['path']} {x['why']} and is not in [security] isolation_allowlist"
                for x in self.unjudged]
        return out

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for p in self.api_paths:
            if p.status == "probed":
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
        return {"schemas": self.schemas, "tenants": len(self.tenants), "principals": len(self.principals),
                "roles": len(self.roles), "paths_probed": kinds, "tables": len(self.tables), "cells": self.cells,
                "leaks": len(self.leaks), "unproven": len(self.unproven()), "unjudged": len(self.unjudged),
                "allowlisted": len(self.allowlisted)}

    def evidence(self, limit: int = 200) -> dict:
        """The rls_matrix.json artifact: who, through what, what was read, what could not be judged."""
        return {**self.summary(),
                "principals": [{"name": p.name, "kind": p.kind, "db_role": p.db_role, "claims": p.claims}
                               for p in self.principals],
                "paths": [asdict(p) for p in self.api_paths],
                "leaks": self.leaks[:limit], "leaks_total": len(self.leaks),
                "unproven": self.unproven(), "unjudged": self.unjudged, "allowlisted": self.allowlisted,
                "functions_judged_by": self.judged_by,
                "not_detected": "a number or text derived from another tenant's rows that carries no id of that "
                                "tenant, from a function whose answer does not follow its tenant argument"}


def claims(tenant: str, app_role: str) -> dict:
    """What a logged-in human's access token carries (the app role and tenant as custom claims)."""
    return {"sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsproof:{tenant}:{app_role}")), "role": "authenticated",
            "aud": "authenticated", "tenant_id": tenant, "app_role": app_role}


STRANGER_TENANT = str(uuid.uuid5(uuid.NAMESPACE_URL, "opsproof:stranger-tenant"))


def principals(tenants: list[str], roles: tuple[str, ...] = HUMAN_ROLES) -> list[Principal]:
    """Every identity the API could be presented with (see the module docstring)."""
    t = tenants[0] if tenants else STRANGER_TENANT
    sub = str(uuid.uuid5(uuid.NAMESPACE_URL, "opsproof:malformed"))
    out = [Principal(f"{ten}:{r}", "owner", "authenticated", claims(ten, r), ten, r)
           for ten in tenants for r in roles]
    out += [Principal(f"stranger:{r}", "stranger", "authenticated", claims(STRANGER_TENANT, r), None, r)
            for r in roles]
    out += [Principal("anon", "anon", "anon", {}),
            Principal("anon+forged-claims", "anon", "anon", {"sub": sub, "tenant_id": t, "app_role": "super_admin"})]
    bad = {
        "no-claims": {},
        "no-tenant_id": {"sub": sub, "app_role": "super_admin"},
        "tenant_id-not-uuid": {"sub": sub, "tenant_id": "not-a-uuid", "app_role": "super_admin"},
        "tenant_id-empty": {"sub": sub, "tenant_id": "", "app_role": "super_admin"},
        "tenant_id-null": {"sub": sub, "tenant_id": None, "app_role": "super_admin"},
        "tenant_id-number": {"sub": sub, "tenant_id": 1, "app_role": "super_admin"},
        "tenant_id-object": {"sub": sub, "tenant_id": {"id": t}, "app_role": "super_admin"},
        "tenant_id-array": {"sub": sub, "tenant_id": [t], "app_role": "super_admin"},
        "no-app_role": {"sub": sub, "tenant_id": t},
        "unknown-app_role": {"sub": sub, "tenant_id": t, "app_role": "root"},
        "app_role-array": {"sub": sub, "tenant_id": t, "app_role": ["super_admin"]},
        "no-sub": {"tenant_id": t, "app_role": "super_admin"},
        "user_metadata-only": {"sub": sub, "user_metadata": {"tenant_id": t, "app_role": "super_admin"}},
    }
    out += [Principal(f"malformed:{k}", "malformed", "authenticated", dict(v, role="authenticated", aud="authenticated"))
            for k, v in bad.items()]
    return out


def _allowed(name: str, identity: str | None, allowlist: dict[str, str]) -> str | None:
    if identity is not None:
        exact = allowlist.get(f"{name}({identity})")
        if exact is not None:
            return exact
        compact = {k.replace(" ", ""): v for k, v in allowlist.items()}
        exact = compact.get(f"{name}({identity})".replace(" ", ""))
        if exact is not None:
            return exact
    return allowlist.get(name)


def _target_schemas(target: Target) -> list[str]:
    """The schemas PostgREST is told to expose on this target (pgrst.db_schemas on authenticator), if readable."""
    try:
        rows = target.rows("select unnest(s.setconfig) as cfg from pg_catalog.pg_db_role_setting s "
                           "join pg_catalog.pg_roles r on r.oid = s.setrole where r.rolname = 'authenticator'")
    except Exception:  # noqa: BLE001 - not readable: the policy's list stands alone
        return []
    out: list[str] = []
    for r in rows:
        k, _, v = str(r["cfg"]).partition("=")
        if k.strip() == "pgrst.db_schemas":
            out += [x.strip().strip('"') for x in v.split(",") if x.strip()]
    return out


# -- relations -------------------------------------------------------------------------------------

_KIND = {"r": "table", "p": "partitioned table", "v": "view", "m": "matview", "f": "foreign table"}


def _relations(target: Target, schemas: list[str], allowlist: dict[str, str], m: IsolationMatrix) -> list[dict]:
    probes = []
    for r in target.rows(RELATIONS_SQL, {"roles": list(API_ROLES), "schemas": schemas,
                                         "tenants_table": TENANTS_TABLE}):
        name = f"{r['schema']}.{r['name']}"
        kind = "partition" if r["is_partition"] else _KIND[r["relkind"]]
        definer = r["relkind"] == "v" and not r["security_invoker"]
        path = ApiPath(name, kind, definer, list(r["readers"]), r["tenant_column"])
        m.api_paths.append(path)
        if r["tenant_column"] is None:
            path.status = "not tenant-scoped"
            continue
        if not r["readers"]:
            path.status, path.note = "not exposed", "no API role may select its tenant column"
            continue
        if r["is_partition"] and r["rls"] and not r["has_policy"]:
            path.status, path.note = "closed", "partition with RLS on and no policy: reads go through the parent"
            continue
        reason = _allowed(name, None, allowlist)
        if reason is not None:
            path.status, path.note = "allow-listed", reason
            m.allowlisted.append({"path": name, "kind": kind, "reason": reason})
            continue
        probes.append({"path": name, "schema": r["schema"], "rel": r["name"], "col": r["tenant_column"],
                       "type": r["tenant_type"], "readers": set(r["readers"])})
    return probes


def _relation_query(p: dict, tenants: list[str]) -> psql.Composed:
    return psql.SQL(
        "select t.id::text as tenant, (select count(*) from (select 1 from {rel} r where r.{col} = t.id::{typ} "
        "limit {cap}) x) as n from unnest({tenants}::uuid[]) as t(id)").format(tenants=psql.Literal(tenants),
        rel=psql.Identifier(p["schema"], p["rel"]), col=psql.Identifier(p["col"]), typ=psql.SQL(p["type"]),
        cap=psql.Literal(PROBE_CAP))


# -- functions -------------------------------------------------------------------------------------

@dataclass
class _Fn:
    path: str
    schema: str
    name: str
    definer: bool
    callers: set
    argexprs: dict            # argset label -> list of SQL fragments (None: uncallable)
    argvalues: dict           # argset label -> uuids passed (lower-case strings)
    variadic: bool
    mode: str                 # rows | text | void
    tenant_column: str | None
    tenantish: bool


def _type_info(target: Target, oids: set[int]) -> dict[int, dict]:
    info: dict[int, dict] = {}
    todo = set(oids)
    while todo:
        rows = target.rows(TYPES_SQL, (sorted(todo),))
        todo = set()
        for r in rows:
            info[r["oid"]] = r
            for nxt in (r["elem"], r["base"]):
                if nxt and nxt not in info:
                    todo.add(nxt)
    return info


def _arg_sql(oid: int, types: dict, label: str, tenant: str | None, ts_index: list[int], window: tuple) \
        -> tuple[psql.Composable | None, bool]:
    """A typed SQL expression for one argument (None: cannot generate), and whether the type is tenant-like."""
    t = types.get(oid)
    if t is None:
        return None, False
    cast = psql.SQL(t["format"])
    if t["typtype"] == "d":
        inner, tl = _arg_sql(t["base"], types, label, tenant, ts_index, window)
        return (None if inner is None else psql.SQL("({})::{}").format(inner, cast)), tl
    if t["category"] == "A" and t["elem"]:
        inner, tl = _arg_sql(t["elem"], types, label, tenant, ts_index, window)
        return (None if inner is None else psql.SQL("array[{}]::{}").format(inner, cast)), tl
    if t["typtype"] == "e":
        return (psql.SQL("{}::{}").format(psql.Literal(t["enum_first"][0]), cast) if t["enum_first"] else None), False
    if t["typtype"] != "b":
        return None, False  # composite, pseudo (polymorphic), range ...: not generated
    name = t["typname"]
    if name == "uuid":
        value = tenant if tenant else str(uuid.uuid5(uuid.NAMESPACE_URL, "opsproof:random-arg"))
        return psql.SQL("{}::uuid").format(psql.Literal(value)), True
    if name in TEXTISH:
        return psql.SQL("{}::{}").format(psql.Literal(tenant or ""), cast), True
    if name in NUMERIC:
        return psql.SQL("{}::{}").format(psql.Literal("1"), cast), False
    if name in ("timestamptz", "timestamp", "date"):
        i = ts_index[0]
        ts_index[0] += 1
        value = window[0] if i == 0 else window[1]
        text = value.date().isoformat() if name == "date" else value.isoformat()
        return psql.SQL("{}::{}").format(psql.Literal(text), cast), False
    if name in FIXED:
        return psql.SQL("{}::{}").format(psql.Literal(FIXED[name]), cast), False
    return None, False


def _functions(target: Target, schemas: list[str], tenants: list[str], allowlist: dict[str, str],
               m: IsolationMatrix, window: tuple) -> list[_Fn]:
    rows = target.rows(FUNCTIONS_SQL, {"roles": list(API_ROLES), "schemas": schemas})
    types = _type_info(target, {o for r in rows for o in (r["argtypes"] or [])})
    rel_cols: dict[int, list[str]] = {}
    relids = sorted({r["ret_typrelid"] for r in rows if r["ret_typrelid"]})
    if relids:
        for c in target.rows("select attrelid::bigint as rel, attname::text as col from pg_catalog.pg_attribute "
                             "where attrelid = any(%s::bigint[]::oid[]) and attnum > 0 and not attisdropped",
                             (relids,)):
            rel_cols.setdefault(c["rel"], []).append(c["col"])
    out: list[_Fn] = []
    for r in rows:
        path = f"{r['schema']}.{r['name']}({r['identity']})"
        api = ApiPath(path, "function", r["security_definer"], list(r["callers"]))
        if not r["callers"]:
            continue  # not executable by anon/authenticated: not an API path
        m.api_paths.append(api)
        if r["from_extension"]:
            api.status, api.note = "not walked", "belongs to an extension"
            continue
        reason = _allowed(f"{r['schema']}.{r['name']}", r["identity"], allowlist)
        if reason is not None:
            api.status, api.note = "allow-listed", reason
            m.allowlisted.append({"path": path, "kind": "function", "security_definer": r["security_definer"],
                                  "reason": reason})
            continue
        # what comes back
        modes = r["argmodes"] or []
        names = r["argnames"] or []
        out_cols = [names[i] for i, mo in enumerate(modes) if mo in ("o", "b", "t") and i < len(names)]
        if r["ret_typname"] in UNCALLABLE_RETURNS:
            api.status, api.note = "not callable", f"returns {r['ret_typname']} (not callable through the API)"
            continue
        cols = out_cols or rel_cols.get(r["ret_typrelid"], [])
        uncallable = ""
        if r["ret_typtype"] == "p" and r["ret_typname"] not in ("void", "record"):
            uncallable = f"returns polymorphic {r['ret_typname']}"
        elif r["ret_typname"] == "record" and not out_cols:
            uncallable = "returns record without a column list"
        tcol = "tenant_id" if "tenant_id" in cols else None
        mode = "rows" if tcol else ("void" if r["ret_typname"] == "void" else "text")
        # the arguments
        argexprs: dict[str, list | None] = {}
        argvalues: dict[str, set] = {}
        tenantish = False
        for label, tenant in [*[(t, t) for t in tenants], ("random", None)]:
            ts_index = [0]
            exprs = []
            for oid in r["argtypes"] or []:
                e, tl = _arg_sql(oid, types, label, tenant, ts_index, window)
                tenantish = tenantish or tl
                if e is None:
                    uncallable = uncallable or f"cannot generate an argument of type {types.get(oid, {}).get('format', oid)}"
                    break
                exprs.append(e)
            argexprs[label] = exprs
            argvalues[label] = {tenant} if tenant else {str(uuid.uuid5(uuid.NAMESPACE_URL, "opsproof:random-arg"))}
        if uncallable:
            api.status, api.note = "uncallable", uncallable
            if r["security_definer"]:
                m.unjudged.append({"path": path, "why": f"cannot be called ({uncallable})"})
            continue
        if not tenantish:  # one call is enough: no argument can name a tenant
            argexprs = {"fixed": argexprs["random"]}
            argvalues = {"fixed": set()}
        api.tenant_column = tcol
        out.append(_Fn(path, r["schema"], r["name"], r["security_definer"], set(r["callers"]), argexprs, argvalues,
                       bool(r["variadic"]), mode, tcol, tenantish))
    return out


def _call_query(f: _Fn, label: str) -> psql.Composed:
    args = list(f.argexprs[label])
    if f.variadic and args:
        args[-1] = psql.SQL("variadic {}").format(args[-1])
    call = psql.SQL("{}({})").format(psql.Identifier(f.schema, f.name), psql.SQL(", ").join(args))
    if f.mode == "rows":
        return psql.SQL("select r.tid, count(*) from (select x.{col}::text as tid from {call} x limit {cap}) r "
                        "where r.tid is not null group by 1").format(
            col=psql.Identifier(f.tenant_column), call=call, cap=psql.Literal(FN_ROW_CAP))
    if f.mode == "void":
        return psql.SQL("select {call}::text").format(call=call)
    return psql.SQL("select left(coalesce(string_agg(x::text, E'\\n'), ''), 1000000) from "
                    "(select * from {call} x limit {cap}) x").format(call=call, cap=psql.Literal(FN_TEXT_ROWS))


# -- the walk --------------------------------------------------------------------------------------

def _markers(target: Target, tenants: list[str], probes: list[dict]) -> dict[str, str]:
    """uuid -> tenant: each tenant's id and some of its row ids (what identifies its data in any output)."""
    out = {t.lower(): t for t in tenants}
    for p in probes:
        cols = target.rows("select a.attname::text as col from pg_catalog.pg_attribute a "
                           "where a.attrelid = %s::regclass and a.attname = 'id' and a.atttypid = 'uuid'::regtype",
                           (f'"{p["schema"]}"."{p["rel"]}"',))
        if not cols or p["col"] != "tenant_id":
            continue
        q = psql.SQL("select t.id::text as tenant, r.id::text as rid from unnest(%s::uuid[]) as t(id) "
                     "cross join lateral (select x.id from {rel} x where x.tenant_id = t.id::{typ} limit {n}) r").format(
            rel=psql.Identifier(p["schema"], p["rel"]), typ=psql.SQL(p["type"]), n=psql.Literal(MARKERS_PER_TABLE))
        for row in target.rows(q, (tenants,)):
            out.setdefault(row["rid"].lower(), row["tenant"])
    return out


INVOKER_MALFORMED = ("malformed:no-claims", "malformed:no-tenant_id", "malformed:tenant_id-not-uuid",
                     "malformed:no-sub", "malformed:unknown-app_role")


def _invoker_caller(pr: Principal, roles: tuple[str, ...]) -> bool:
    """A SECURITY INVOKER function reads with the caller's own rights: it is called by every tenant's owner and a
    stranger in the widest role, anon and a representative set of malformed tokens (what it could reach through
    something nested). Relations and SECURITY DEFINER functions get every principal."""
    if pr.kind in ("owner", "stranger"):
        return pr.app_role == roles[0]
    return pr.kind == "anon" or pr.name in INVOKER_MALFORMED


class _QuietPipelineExit(logging.Filter):
    """A probe that raises inside a pipeline is expected and recorded; psycopg's 'error ignored terminating
    <Pipeline>' warning about the aborted rest of that pipeline is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored terminating")


_quiet = _QuietPipelineExit()


def _session(conn: psycopg.Connection) -> None:
    """Bound every probe; no JIT (unanalysed small tables make it compile for half a second per call)."""
    conn.execute(psql.SQL("set local statement_timeout = {}; set local jit = off").format(
        psql.Literal(CALL_TIMEOUT_MS)))


def _run(conn: psycopg.Connection, query: psql.Composable, params: Any = None) -> tuple[list | None, str | None]:
    """One probe in a savepoint that is always rolled back: (rows, None) or (None, 'SQLSTATE: message')."""
    try:
        with conn.transaction(force_rollback=True):
            return conn.execute(query, params).fetchall(), None
    except psycopg.Error as exc:
        return None, _err(exc)


def _err(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or type(exc).__name__
    text = str(exc).strip()
    return f"{state}: {text.splitlines()[0][:160] if text else ''}"


def _batch(conn: psycopg.Connection, queries: list[psql.Composable]) -> list[tuple[list | None, str | None]]:
    """Many probes in one pipeline, each in its own always-rolled-back savepoint: a volatile function changes
    nothing, and a probe that raises costs one more round trip instead of one per probe."""
    out: list[tuple[list | None, str | None]] = []
    log = logging.getLogger("psycopg")
    if _quiet not in log.filters:
        log.addFilter(_quiet)
    while len(out) < len(queries):
        curs = []
        failure: BaseException | None = None
        try:
            with conn.pipeline():
                for q in queries[len(out):]:   # never prepared: an aborted pipeline would lose the PREPARE
                    conn.execute("savepoint opsproof_probe", prepare=False)
                    curs.append(conn.execute(q, prepare=False))
                    conn.execute("rollback to savepoint opsproof_probe", prepare=False)
                    conn.execute("release savepoint opsproof_probe", prepare=False)
        except psycopg.Error as exc:
            failure = exc
        for cur in curs:
            try:
                out.append((cur.fetchall(), None))
            except psycopg.Error:
                break
        if failure is not None:
            conn.execute("rollback to savepoint opsproof_probe", prepare=False)
            conn.execute("release savepoint opsproof_probe", prepare=False)
            if len(out) < len(queries):
                out.append((None, _err(failure)))
    return out


def cross_tenant_matrix(target: Target, roles: tuple[str, ...] = HUMAN_ROLES, *,
                        schemas: list[str] | None = None, allowlist: dict[str, str] | None = None) -> IsolationMatrix:
    allowlist = dict(allowlist or {})
    schemas = list(dict.fromkeys([*(schemas or EXPOSED), *_target_schemas(target)]))
    tenants = [str(r["id"]) for r in target.rows(f"select id from {TENANTS_TABLE} order by id")]
    m = IsolationMatrix(tables=[], tenants=tenants, roles=list(roles), schemas=schemas)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    window = (now - timedelta(hours=1), now)
    rels = _relations(target, schemas, allowlist, m)
    fns = _functions(target, schemas, tenants, allowlist, m, window)
    m.tables = [p["path"] for p in rels]
    m.paths = m.tables + [f.path for f in fns]
    m.principals = principals(tenants, roles)
    markers = _markers(target, tenants, rels)
    for p in rels:
        if "authenticated" in p["readers"]:
            for t in tenants:
                m.own_reads[f"{p['path']}|{t}"] = 0
    for f in fns:
        if f.mode == "rows" and "authenticated" in f.callers:
            for t in tenants:
                m.own_reads[f"{f.path}|{t}"] = 0
    results: dict[tuple[str, str, str], str] = {}   # (fn path, argset, principal) -> output text / error
    attributed: set[str] = set()                    # text functions whose owner output carried own markers
    rel_queries = [(p, _relation_query(p, tenants)) for p in rels]
    fn_queries = [(f, label, _call_query(f, label)) for f in fns for label in f.argexprs]

    def leak(pr: Principal, path: str, read_tenant: str, n: int, how: str) -> None:
        m.leaks.append({"principal": pr.name, "kind": pr.kind, "as_tenant": pr.tenant, "as_role": pr.app_role,
                        "path": path, "table": path, "read_tenant": read_tenant, "rows_at_least": max(int(n), 1),
                        "how": how})

    plans = []
    for pr in m.principals:
        rq = [(p, query) for p, query in rel_queries if pr.db_role in p["readers"]]
        fq = [(f, label, query) for f, label, query in fn_queries
              if pr.db_role in f.callers and (f.definer or _invoker_caller(pr, roles))]
        plans.append((pr, rq, fq))

    def probe(plan) -> list[tuple[list | None, str | None]]:
        pr, rq, fq = plan
        with target.as_user(pr.claims, role=pr.db_role) as conn:
            _session(conn)
            return _batch(conn, [q for _, q in rq] + [q for _, _, q in fq])

    # each principal's probes run in its own transaction on its own pooled connection: a few at a time (the
    # database does the work), judged afterwards in principal order, so the verdict does not depend on timing
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=MATRIX_WORKERS) as pool:
        gots = list(pool.map(probe, plans))
    for (pr, rq, fq), got in zip(plans, gots):
        passed_claims = set(UUID_RE.findall(json.dumps(pr.claims).lower()))
        for (p, _q), (rows, _err_) in zip(rq, got[:len(rq)]):
            for tenant, n in rows or []:
                m.cells += 1
                if pr.kind == "owner" and tenant == pr.tenant:
                    key = f"{p['path']}|{tenant}"
                    m.own_reads[key] = max(m.own_reads.get(key, 0), n)
                elif n:
                    leak(pr, p["path"], tenant, n, "select")
        for (f, label, _q), (rows, err) in zip(fq, got[len(rq):]):
            m.cells += 1
            if f.mode == "rows":
                results[(f.path, label, pr.name)] = f"ERROR {err}" if err else json.dumps(sorted(rows or []))
                for tid, n in rows or []:
                    if pr.kind == "owner" and tid == pr.tenant:
                        key = f"{f.path}|{tid}"
                        m.own_reads[key] = max(m.own_reads.get(key, 0), n)
                    else:
                        leak(pr, f.path, tid, n, f"rows of {label} call")
                continue
            text = f"ERROR {err}" if err else str((rows or [[None]])[0][0])
            results[(f.path, label, pr.name)] = text
            if err:
                continue
            passed = f.argvalues[label] | passed_claims   # what the caller itself supplied is no leak
            seen = {u for u in UUID_RE.findall(text.lower()) if u in markers and u not in passed}
            for u in sorted(seen):
                if pr.kind == "owner" and markers[u] == pr.tenant:
                    attributed.add(f.path)
                else:
                    leak(pr, f.path, markers[u], 1, f"output of {label} call names {u}")
    _judge_functions(target, m, fns, results, attributed)
    return m


def _judge_functions(target: Target, m: IsolationMatrix, fns: list[_Fn], results: dict, attributed: set) -> None:
    owners = {(p.tenant, p.app_role): p.name for p in m.principals if p.kind == "owner"}
    strangers = {p.app_role: p.name for p in m.principals if p.kind == "stranger"}
    for f in fns:
        calls = [v for (path, _l, _p), v in results.items() if path == f.path]
        if calls and all(v.startswith("ERROR ") for v in calls):
            m.judged_by[f.path] = "every call raised"
            if f.definer:
                m.unjudged.append({"path": f.path, "why": "raised an error on every generated call "
                                                          f"(e.g. {calls[0][6:120]})"})
            continue
        if f.mode == "rows":
            m.judged_by[f.path] = "tenant column of its rows"
            continue
        how = []
        if f.path in attributed:
            how.append("ids in its output")
        if f.tenantish and "authenticated" in f.callers:
            if _differential(target, m, f, results, owners, strangers):
                how.append("differential (answer follows the tenant argument)")
        m.judged_by[f.path] = " + ".join(how) or ("void: returns no data" if f.mode == "void" else "not judged")
        if not how and f.definer:
            m.unjudged.append({"path": f.path, "why": "returns nothing the matrix can attribute to a tenant "
                                                      f"({f.mode} output without tenant ids; its answer does not "
                                                      "follow a tenant argument)"})


def _differential(target: Target, m: IsolationMatrix, f: _Fn, results: dict, owners: dict,
                  strangers: dict) -> bool:
    """True when the function's answer provably depends on who asks about which tenant.

    For tenant U and role r: own = U's owner asking about U, own_rand = U's owner asking about a random id,
    nob = a stranger (a well-formed tenant without data, same role) asking about U. The answer "follows the
    argument" when own != own_rand, and is the owner's own when also own != nob. Leaks:
    - a foreign user asking about U gets exactly `own` (!= nob) and its answer changes with the argument;
    - SECURITY DEFINER only: the stranger gets `own` too while its answer follows the argument (everyone is told
      U's answer; a function that is public by design belongs on the allow-list).
    The owner's answer must be reproducible in a new transaction, or equality with it proves nothing.
    """
    judged = False

    def add(pr_name: str, u: str, how: str) -> None:
        pr = next(p for p in m.principals if p.name == pr_name)
        m.leaks.append({"principal": pr.name, "kind": pr.kind, "as_tenant": pr.tenant, "as_role": pr.app_role,
                        "path": f.path, "table": f.path, "read_tenant": u, "rows_at_least": 1, "how": how})

    for role in m.roles:
        nob_key = strangers.get(role)
        for u in m.tenants:
            own_key = owners.get((u, role))
            own = results.get((f.path, u, own_key))
            own_rand = results.get((f.path, "random", own_key))
            nob = results.get((f.path, u, nob_key))
            if own is None or nob is None or own.startswith("ERROR ") or own == own_rand:
                continue
            if own == nob and not (f.definer and nob != results.get((f.path, "random", nob_key))):
                continue
            try:  # reproducible?
                with target.as_user(claims(u, role), role="authenticated") as conn:
                    _session(conn)
                    rows, err = _run(conn, _call_query(f, u))
                again = f"ERROR {err}" if err else str((rows or [[None]])[0][0])
            except psycopg.Error:
                continue
            if again != own:
                continue
            judged = True
            if own == nob:
                add(nob_key, u, "differential: a stranger got the owner's answer for the owner's tenant id")
            for t in m.tenants:
                if t == u:
                    continue
                theirs = results.get((f.path, u, owners.get((t, role))))
                if theirs == own and theirs != results.get((f.path, "random", owners.get((t, role)))):
                    add(owners[(t, role)], u, "differential: got the owner's answer for the owner's tenant id")
    return judged


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


FIRST_TENANT_SQL = "select id::text from public.tenants order by id limit 1"
PORTAL_ACCESS_SQL = "select key, public.can_access_portal(key) from public.portals"  # as each role's JWT
PORTAL_TABLES_SQL = "select relation, portal_key from public.portal_tables where scope = 'tenant'"


def portal_access_as_roles(target: Target, roles: list[str]) -> dict[tuple[str, str], bool]:
    """Every (portal, role) cell as the database answers it for that role's JWT (can_access_portal)."""
    out: dict[tuple[str, str], bool] = {}
    tenant = target.value(FIRST_TENANT_SQL)
    for role in roles:
        with target.as_user(claims(tenant, role), role="authenticated") as conn:
            for portal, allowed in conn.execute(PORTAL_ACCESS_SQL):
                out[(portal, role)] = bool(allowed)
    return out


def portal_table_reach(target: Target, roles: list[str]) -> dict[tuple[str, str], bool]:
    """(portal, role) -> does the role's JWT read > 0 rows of the portal's own tenant tables (the data path)."""
    mapping = target.rows(PORTAL_TABLES_SQL)
    tenant = target.value(FIRST_TENANT_SQL)
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



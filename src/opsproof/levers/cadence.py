"""The operational cadence: `opsproof cadence daily | weekly | monthly`. See docs/operations.md.

Each task is a function `task(c: CadenceContext) -> dict` returning its record ({"ok", "summary", ...}).
`run(c, tasks)` runs every task even when one fails, writes one audit row per task (action
`cadence.<task>`) and returns the records; `amend_today_pack()` puts them in today's evidence pack as
cadence/<task>.json. Maintenance tasks (TTL cleanup, partition rotation) are forward-only by design: what
they delete is beyond the policy's retention (backups are the undo); every other task leaves the target
as it found it (scratch databases dropped, rehearsal rows deleted, keys never stored).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from opsproof import clock, paths
from opsproof.errors import OpsproofError, UsageError

ACTOR = "opsproof-cadence"
PARTITIONED = ("requests", "health_probes", "spans", "agent_logs")


class TaskFailed(OpsproofError):
    """A cadence task ran and found something wrong (its record says what)."""


@dataclass
class CadenceContext:
    dsn: str                                   # the target (admin / service DSN)
    policy: Any                                # opsproof.policy.Policy
    target: str = "embedded"                   # settings.target
    project_dir: Path = field(default_factory=paths.project_dir)
    scratch_dsn: str | None = None             # the embedded stack's admin DSN (restore test)
    backups_dir: Path = field(default_factory=paths.backups_dir)
    ingest_url: str | None = None              # the live ingest (key rotation: must refuse the rehearsal key)
    keys: dict[str, str] = field(default_factory=dict)   # OPSPROOF_KEY_<ACCOUNT> / N8N_SIGNING_KEY, in memory only
    secrets: list[str] = field(default_factory=list)     # for the secrets scan
    scan_paths: list[Path] = field(default_factory=list)
    drill_args: list[str] = field(default_factory=lambda: ["-m", "drill"])
    drill_timeout_s: float = 1800.0
    run_id: str = field(default_factory=lambda: "cadence-" + uuid.uuid4().hex[:10])


def context_from_settings(settings, policy, **overrides) -> CadenceContext:
    from opsproof.envfile import read_env
    from opsproof.stack import secrets as stack_secrets

    if settings.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    stack_env = read_env(paths.stack_env_file())
    plane_env = read_env(paths.plane_dir() / "env")
    keys = {}
    for account in stack_secrets.SERVICE_ACCOUNTS:
        env_key = stack_secrets.env_key_for(account)
        v = os.environ.get(env_key) or stack_env.get(env_key)
        if v:
            keys[account] = v
    if os.environ.get("N8N_SIGNING_KEY"):
        keys["n8n@"] = os.environ["N8N_SIGNING_KEY"]
    proj = paths.project_dir()
    c = CadenceContext(
        dsn=settings.db_url.get_secret_value(), policy=policy, target=settings.target, project_dir=proj,
        scratch_dsn=stack_env.get("SUPABASE_DB_URL"), ingest_url=settings.ingest_url or plane_env.get("OPSPROOF_INGEST_URL"),
        keys=keys, secrets=settings.secret_values(),
        scan_paths=[proj / "reports", paths.plane_dir(), paths.stack_dir() / "logs"])
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def _connect(dsn: str, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, application_name="opsproof-cadence")


def _measure(conn, fn: str, *args) -> dict:
    ph = ", ".join(["%s"] * len(args))
    v = conn.execute(f"select {fn}({ph})", args).fetchone()[0]
    return v if isinstance(v, dict) else json.loads(v)


# == daily =========================================================================================

def ttl_cleanup(c: CadenceContext) -> dict:
    """agent_logs older than the policy TTL: whole day partitions dropped, the rest deleted row by row."""
    ttl = c.policy.cadence.agent_logs_ttl_days
    with _connect(c.dsn) as conn:
        with conn.transaction():
            cutoff, cutoff_day = conn.execute(
                "select now() - make_interval(days => %s), (now() - make_interval(days => %s))::date",
                (ttl, ttl)).fetchone()
            expired = conn.execute("select count(*) from ops.agent_logs where ts < %s", (cutoff,)).fetchone()[0]
            kept_before = conn.execute("select count(*) from ops.agent_logs where ts >= %s", (cutoff,)).fetchone()[0]
            dropped = conn.execute("select ops.drop_partitions_before('agent_logs', %s)", (cutoff_day,)).fetchone()[0]
            deleted = conn.execute("delete from ops.agent_logs where ts < %s", (cutoff,)).rowcount
            left = conn.execute("select count(*) from ops.agent_logs where ts < %s", (cutoff,)).fetchone()[0]
            kept = conn.execute("select count(*) from ops.agent_logs where ts >= %s", (cutoff,)).fetchone()[0]
    ok = left == 0 and kept >= kept_before
    return {"ok": ok, "summary": f"agent_logs older than {ttl} d: {expired} removed ({dropped} partition(s) dropped, "
                                 f"{deleted} row(s) deleted), {left} left",
            "ttl_days": ttl, "cutoff": cutoff.isoformat(), "expired_rows": expired, "partitions_dropped": dropped,
            "rows_deleted": deleted, "expired_left": left, "rows_within_ttl": kept}


def partition_rotation(c: CadenceContext) -> dict:
    """Daily partitions: today .. today+partitions_ahead_days created; requests/health_probes/spans partitions
    older than evidence.retention_days dropped (agent_logs: by its TTL, in ttl_cleanup)."""
    ahead = c.policy.cadence.partitions_ahead_days
    keep = c.policy.evidence.retention_days
    out: dict = {"ahead_days": ahead, "retention_days": keep, "created": {}, "dropped": {}, "missing_after": {}}
    with _connect(c.dsn) as conn:
        with conn.transaction():
            for t in PARTITIONED:
                out["created"][t] = conn.execute("select ops.ensure_partitions(%s, current_date, current_date + %s)",
                                                 (t, ahead)).fetchone()[0]
                if t != "agent_logs":
                    out["dropped"][t] = conn.execute("select ops.drop_partitions_before(%s, current_date - %s)",
                                                     (t, keep)).fetchone()[0]
            for t in PARTITIONED:
                out["missing_after"][t] = conn.execute(
                    """select count(*) from generate_series(current_date, current_date + %s, interval '1 day') d
                        where to_regclass(format('ops.%%s_%%s', %s::text, to_char(d, 'YYYYMMDD'))) is null""",
                    (ahead, t)).fetchone()[0]
    out["ok"] = not any(out["missing_after"].values())
    out["summary"] = (f"created {sum(out['created'].values())} partition(s) ahead, dropped "
                      f"{sum(out['dropped'].values())} older than {keep} d; missing after: {sum(out['missing_after'].values())}")
    return out


def backup_freshness(c: CadenceContext) -> dict:
    """Newest verified backup younger than cadence.backup_max_age_hours, its file intact. On the embedded
    target a stale backup is replaced by a fresh real pg_dump (stack/backup.py) and checked again."""
    limit_h = c.policy.cadence.backup_max_age_hours

    def newest():
        with _connect(c.dsn) as conn:
            return conn.execute(
                """select taken_at, kind, location, bytes, sha256, extract(epoch from now() - taken_at)::float8 / 3600
                     from ops.backups where verified order by taken_at desc limit 1""").fetchone()

    row = newest()
    taken = None
    if (row is None or row[5] > limit_h) and c.target == "embedded":
        from opsproof.stack import backup
        from opsproof.stack.binaries import find_bindir

        taken = backup.take(c.dsn, c.backups_dir, find_bindir())
        row = newest()
    if row is None:
        return {"ok": False, "summary": "no verified backup recorded in ops.backups", "max_age_h": limit_h}
    taken_at, kind, location, size, sha, age_h = row
    rec = {"max_age_h": limit_h, "age_h": round(age_h, 3), "kind": kind, "bytes": size,
           "location": Path(location).name, "taken_now": bool(taken)}
    problems = []
    if age_h > limit_h:
        problems.append(f"latest verified backup is {age_h:.1f} h old (> {limit_h} h)")
    loc = Path(location)
    if loc.is_absolute() and sha:
        if not loc.exists():
            problems.append(f"backup file {loc.name} is missing")
        elif hashlib.sha256(loc.read_bytes()).hexdigest() != sha:
            problems.append(f"backup file {loc.name} does not match its sha256")
        else:
            rec["sha256_ok"] = True
    rec["ok"] = not problems
    rec["summary"] = "; ".join(problems) if problems else (
        f"latest verified backup {age_h:.2f} h old (limit {limit_h} h){', taken now' if taken else ''}")
    return rec


BUDGET_MAP = (  # ops.budgets key, policy field, observed (function, key)
    ("agent.concurrency", "agent_concurrency_max", ("ops.agent_health", "peak_concurrency")),
    ("replay.batch_items", "replay_batch_items_max", ("ops.dlq_health", "max_batch_items")),
    ("replay.max_bytes", "replay_max_bytes", ("ops.dlq_health", "max_batch_bytes")),
    ("replay.fail_rate_pct", "replay_fail_rate_pct_max", ("ops.dlq_health", "fail_pct")),
)


def budget_drift(c: CadenceContext) -> dict:
    """Configured (ops.budgets) vs policy (opsproof.toml) vs observed over 24 h (measurement functions).
    Drift: configured above the policy's maximum, or observed above what is configured."""
    with _connect(c.dsn) as conn:
        configured = {k: float(v) for k, v in conn.execute("select key, value from ops.budgets").fetchall()}
        docs = {fn: _measure(conn, fn, *conn.execute("select now() - interval '24 hours', now()").fetchone())
                for fn in ("ops.agent_health", "ops.dlq_health")}
    rows, drift = [], []
    for key, pfield, (fn, okey) in BUDGET_MAP:
        pol = float(getattr(c.policy.budgets, pfield))
        conf = configured.get(key)
        obs = docs[fn].get(okey)
        r = {"budget": key, "configured": conf, "policy_max": pol, "observed_24h": obs}
        if conf is None:
            drift.append(f"{key}: not configured in ops.budgets")
        else:
            if conf > pol:
                drift.append(f"{key}: configured {conf:g} above policy {pol:g}")
            if obs is not None and float(obs) > conf:
                drift.append(f"{key}: observed {float(obs):g} above configured {conf:g}")
        rows.append(r)
    return {"ok": not drift, "budgets": rows, "drift": drift,
            "summary": "; ".join(drift) if drift else f"{len(rows)} budgets: configured <= policy, observed <= configured"}


def known_good_snapshot(c: CadenceContext) -> dict:
    """When the effective flags equal the policy, nothing is overridden and no incident is open: record the
    flags and budgets as the last known-good snapshot (the rollback target of `incident handle` rollback)."""
    from opsproof.levers.incident import take_snapshot

    with _connect(c.dsn) as conn:
        eff = {k: (v, o) for k, v, o in conn.execute("select key, value, overridden from ops.effective_flags").fetchall()}
        open_incidents = conn.execute("select count(*) from ops.incidents where status = 'open'").fetchone()[0]
    off = [k for k, want in c.policy.flags.items() if k not in eff or eff[k][0] != want or eff[k][1]]
    if off or open_incidents:
        why = (f"flags off policy: {off}" if off else "") + (f"{'; ' if off else ''}{open_incidents} open incident(s)"
                                                             if open_incidents else "")
        return {"ok": True, "taken": False, "summary": f"no known-good snapshot taken ({why})", "reason": why}
    snap = take_snapshot(c.dsn, "cadence daily: flags match the policy, no open incident", taken_by=ACTOR)
    return {"ok": True, "taken": True, "snapshot_id": snap["id"],
            "summary": f"known-good snapshot #{snap['id']} ({len(snap['flags'])} flags, {len(snap['budgets'])} budgets)"}


# == weekly ========================================================================================

def dr_drill(c: CadenceContext) -> dict:
    """Runs the drills (`pytest -m drill`) and records their outcome from the junit report."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory(prefix="opsproof-drill-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *c.drill_args, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        t0 = time.monotonic()
        try:
            res = subprocess.run(argv, cwd=str(c.project_dir), capture_output=True, text=True, timeout=c.drill_timeout_s)
        except subprocess.TimeoutExpired:
            return {"ok": False, "summary": f"drills did not finish within {c.drill_timeout_s:.0f}s"}
        took = round(time.monotonic() - t0, 1)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        failed: list[str] = []
        if junit.exists():
            root = ET.parse(junit).getroot()
            for suite in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
                for k in counts:
                    counts[k] += int(suite.get(k, 0))
                for case in suite.iter("testcase"):
                    if case.find("failure") is not None or case.find("error") is not None:
                        failed.append(f"{case.get('classname')}::{case.get('name')}")
    ran = counts["tests"] - counts["skipped"]
    ok = res.returncode == 0 and ran > 0 and not failed
    tail = (res.stdout.strip().splitlines() or [""])[-1][:300]
    why = ("no drill ran" if ran <= 0 else f"{len(failed)} drill(s) failed: {failed[:5]}" if failed
           else f"pytest exit {res.returncode}: {tail}")
    return {"ok": ok, "exit_code": res.returncode, "took_s": took, **counts, "failed": failed, "args": c.drill_args,
            "summary": f"{ran} drill(s) passed in {took}s" if ok else why}


def portal_audit(c: CadenceContext) -> dict:
    """The portal x role matrix in the database equals role-matrix.md, cell for cell (same code as SEC-003)."""
    from opsproof.measure import tenancy
    from opsproof.target.db import Target

    expected = tenancy.parse_role_matrix(c.project_dir / "role-matrix.md")
    roles = sorted({r for _, r in expected})
    target = Target(c.dsn)
    try:
        actual = tenancy.portal_access_as_roles(target, roles)
        diff = tenancy.matrix_diff(expected, actual)
        reach = tenancy.portal_table_reach(target, roles)
        diff += [f"{p} x {r}: data path disagrees (reads rows: {v})" for (p, r), v in sorted(reach.items())
                 if expected.get((p, r)) != v]
    finally:
        target.close()
    portals = len({p for p, _ in expected})
    ok = not diff and portals == 20 and len(roles) == 8
    return {"ok": ok, "portals": portals, "roles": len(roles), "cells": len(expected), "data_path_cells": len(reach),
            "diff": diff[:50],
            "summary": f"{len(expected)} cells equal role-matrix.md" if ok else f"{len(diff)} cell(s) differ: {diff[:3]}"}


def canary_sanity(c: CadenceContext) -> dict:
    """Canary ramp: every canary.* flag at its policy value and not overridden; canary tasks of the last 7 days
    succeed at the watchlist rate and carry their trace (coverage at the policy minimum)."""
    with _connect(c.dsn) as conn:
        flags = {k: (v, o) for k, v, o in conn.execute(
            "select key, value, overridden from ops.effective_flags where key like 'canary.%'").fetchall()}
        fin, ok_n = conn.execute(
            """select count(*) filter (where status in ('succeeded', 'failed', 'quarantined')),
                      count(*) filter (where status = 'succeeded' and not quarantined)
                 from ops.agent_tasks where canary and enqueued_at > now() - interval '7 days'""").fetchone()
        cov = _measure(conn, "ops.trace_coverage", *conn.execute("select now() - interval '7 days', now()").fetchone())
    problems = []
    want = {k: v for k, v in c.policy.flags.items() if k.startswith("canary.")}
    for k, v in want.items():
        if k not in flags:
            problems.append(f"{k} missing")
        elif flags[k][0] != v or flags[k][1]:
            problems.append(f"{k} = {json.dumps(flags[k][0])}{' (overridden)' if flags[k][1] else ''}, policy {json.dumps(v)}")
    success = round(100.0 * ok_n / fin, 3) if fin else None
    if success is not None and success < c.policy.watchlist.agent_success_pct_min:
        problems.append(f"canary success {success}% < {c.policy.watchlist.agent_success_pct_min}%")
    if cov.get("coverage_pct") is not None and float(cov["coverage_pct"]) < c.policy.watchlist.trace_coverage_pct_min:
        problems.append(f"canary trace coverage {cov['coverage_pct']}% < {c.policy.watchlist.trace_coverage_pct_min}%")
    return {"ok": not problems, "flags": {k: v[0] for k, v in flags.items()}, "canary_finished_7d": fin,
            "canary_success_pct": success, "trace_coverage": cov, "problems": problems,
            "summary": "; ".join(problems) if problems else
            f"canary flags at policy; {fin} canary task(s) in 7 d, success {success}%, coverage {cov.get('coverage_pct')}%"}


def secrets_scan(c: CadenceContext) -> dict:
    """No key, JWT secret or password in the evidence, the reports or the logs (file names only in the record)."""
    from opsproof.evidence.secrets import find_secrets

    hits: list[str] = []
    scanned = []
    for p in c.scan_paths:
        if p.exists():
            scanned.append(str(p))
            hits += [f"{p.name}/{rel}" for rel, _ in find_secrets(p, c.secrets)]
    ok = bool(c.secrets) and not hits
    why = "no secrets known to scan for" if not c.secrets else f"secrets found in {len(hits)} file(s): {sorted(set(hits))[:5]}"
    return {"ok": ok, "secrets_known": len(c.secrets), "paths": [Path(s).name for s in scanned],
            "files_with_secrets": sorted(set(hits))[:50],
            "summary": f"{len(c.secrets)} secrets, none found in {len(scanned)} location(s)" if ok else why}


# == monthly =======================================================================================

def key_rotation_rehearsal(c: CadenceContext) -> dict:
    """For each service account: a new key is generated (in memory, never stored; only its fingerprint is
    recorded), and a verifier configured with it accepts it and refuses the old key. For n8n@ that verifier is
    the real ingest app (opsproof.plane.ingest.make_app, in-process, against the target database): new key ->
    201, old key -> 401; the live ingest (if running) refuses the rehearsal key (it was not leaked into it).
    The rehearsal's rows (idempotency key, ingest event, request rows) are deleted afterwards."""
    from opsproof.plane.ingest import sign, signed_headers, verify
    from opsproof.stack.secrets import SERVICE_ACCOUNTS, fingerprint

    with _connect(c.dsn) as conn:
        registered = dict(conn.execute("select name, key_fingerprint from ops.service_accounts").fetchall())
    accounts, problems = {}, []
    body = json.dumps({"opsproof": "key-rotation-rehearsal", "run_id": c.run_id}).encode()
    for account in c.policy.security.service_accounts or SERVICE_ACCOUNTS:
        new = _random.token_hex(32)
        old = c.keys.get(account)
        rec = {"old_fingerprint": fingerprint(old) if old else None, "registered_fingerprint": registered.get(account),
               "new_fingerprint": fingerprint(new), "old_key_available": old is not None}
        if old is None:
            old = _random.token_hex(32)  # stand-in: still proves the verifier pins the new key
        if rec["old_fingerprint"] is not None:
            rec["registered_matches_deployed"] = rec["old_fingerprint"] == registered.get(account)
        ts = int(time.time())
        rec["verifier_accepts_new"] = verify(new.encode(), str(ts), sign(new, ts, body), body, 300) is None
        rec["verifier_rejects_old"] = verify(new.encode(), str(ts), sign(old, ts, body), body, 300) == "bad signature"
        if account == "n8n@":
            rec.update(_ingest_rehearsal(c, new, old, body, signed_headers))
        checks = [k for k in ("verifier_accepts_new", "verifier_rejects_old", "ingest_accepts_new", "ingest_rejects_old",
                              "live_ingest_rejects_new") if rec.get(k) is False]
        if rec.get("registered_matches_deployed") is False:
            checks.append("registered fingerprint differs from the deployed key")
        if checks:
            problems.append(f"{account}: {', '.join(checks)}")
        accounts[account] = rec
    if "n8n@" in accounts and "ingest_accepts_new" not in accounts["n8n@"]:
        problems.append("n8n@: the ingest was not exercised")
    return {"ok": not problems, "accounts": accounts, "problems": problems,
            "summary": "; ".join(problems) if problems else
            f"{len(accounts)} accounts: new key accepted, old refused (n8n@ through the ingest app); fingerprints only recorded"}


def _ingest_rehearsal(c: CadenceContext, new: str, old: str, body: bytes, signed_headers) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2 in its TestClient
        from starlette.testclient import TestClient

    from opsproof.plane.ingest import make_app
    from opsproof.plane.settings import PlaneSettings

    trace = uuid.uuid4().hex
    tp = {"traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"}
    keys = [f"rehearsal-{c.run_id}-{i}" for i in range(3)]
    out: dict = {}
    try:
        settings = PlaneSettings(SUPABASE_DB_URL=c.dsn, N8N_SIGNING_KEY=new)
        with TestClient(make_app(settings)) as client:
            r_new = client.post("/webhooks/n8n", content=body, headers={**signed_headers(new, body, keys[0]), **tp})
            r_old = client.post("/webhooks/n8n", content=body, headers={**signed_headers(old, body, keys[1]), **tp})
        out["ingest_accepts_new"] = r_new.status_code == 201
        out["ingest_rejects_old"] = r_old.status_code == 401
        out["ingest_status"] = {"new": r_new.status_code, "old": r_old.status_code}
        if c.ingest_url:
            import httpx

            try:
                r_live = httpx.post(f"{c.ingest_url}/webhooks/n8n", content=body,
                                    headers={**signed_headers(new, body, keys[2]), **tp}, timeout=5)
                out["live_ingest_rejects_new"] = r_live.status_code == 401
                out["live_ingest_status"] = r_live.status_code
            except httpx.HTTPError as exc:
                out["live_ingest"] = f"not reachable ({type(exc).__name__})"
    finally:
        with _connect(c.dsn) as conn:
            with conn.transaction():
                conn.execute("delete from ops.ingest_events where idempotency_key = any(%s)", (keys,))
                conn.execute("delete from ops.idempotency_keys where key = any(%s)", (keys,))
                conn.execute("delete from ops.requests where trace_id = %s", (trace,))
    return out


CHECKSUM_TABLES = """
select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname in ('ops', 'public') and c.relkind in ('r', 'p') and not c.relispartition
 order by 1, 2"""


def _checksums(conn) -> dict[str, list]:
    out = {}
    for schema, table in conn.execute(CHECKSUM_TABLES).fetchall():
        n, h = conn.execute(f'select count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text '
                            f'from "{schema}"."{table}" t').fetchone()
        out[f"{schema}.{table}"] = [n, h]
    return out


def restore_test(c: CadenceContext) -> dict:
    """A real pg_dump of the target (taken from an exported snapshot) restored into a scratch database of the
    embedded stack; every ops/public table's row count and content checksum compared with the source AT THAT
    SNAPSHOT. RTO = scratch database created -> restored -> verified, in seconds. RPO = how far behind the
    source the restored copy is when it is ready (now - newest write in the copy), in seconds."""
    from opsproof.stack.binaries import find_bindir

    if not c.scratch_dsn:
        raise TaskFailed("restore test needs the embedded stack for its scratch database (`opsproof stack up`)")
    bindir = find_bindir()
    scratch = f"opsproof_restore_{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
    rec: dict = {"scratch_database": scratch}
    admin = _connect(c.scratch_dsn)
    tmp = Path(tempfile.mkdtemp(prefix="opsproof-restore-"))
    try:
        dump = tmp / "target.dump"
        src = _connect(c.dsn)
        try:
            src.execute("set timezone to 'UTC'")
            with src.transaction():
                src.execute("set transaction isolation level repeatable read")
                snap_id, snap_at = src.execute("select pg_export_snapshot(), clock_timestamp()").fetchone()
                t0 = time.monotonic()
                res = subprocess.run([str(bindir / "pg_dump"), "-Fc", f"--snapshot={snap_id}", "-f", str(dump),
                                      "--dbname", c.dsn], capture_output=True, text=True, timeout=1800)
                if res.returncode != 0:
                    raise TaskFailed(f"pg_dump failed: {res.stderr.strip()[-300:]}")
                rec["dump_s"] = round(time.monotonic() - t0, 3)
                rec["dump_bytes"] = dump.stat().st_size
                source = _checksums(src)
        finally:
            src.close()
        t_rto = time.monotonic()
        admin.execute(f'create database "{scratch}"')
        res = subprocess.run([str(bindir / "pg_restore"), "--no-owner", "--no-acl", "-d",
                              make_conninfo(c.scratch_dsn, dbname=scratch), str(dump)],
                             capture_output=True, text=True, timeout=3600)
        rec["pg_restore_exit"] = res.returncode
        rec["pg_restore_errors"] = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()][:10]
        with _connect(make_conninfo(c.scratch_dsn, dbname=scratch)) as dst:
            dst.execute("set timezone to 'UTC'")
            restored = _checksums(dst)
            newest = dst.execute(
                """select greatest((select max(at) from ops.audit_log), (select max(ts) from ops.requests),
                                   (select max(created_at) from ops.outbox), (select max(beat_at) from ops.heartbeats),
                                   (select max(enqueued_at) from ops.agent_tasks))""").fetchone()[0]
        rec["rto_s"] = round(time.monotonic() - t_rto, 3)
        with _connect(c.dsn) as conn:
            rec["rpo_s"] = round(conn.execute("select extract(epoch from clock_timestamp() - %s)::float8",
                                              (newest,)).fetchone()[0], 3) if newest else None
        rec["snapshot_at"] = snap_at.isoformat()
        rec["newest_restored_write"] = newest.isoformat() if newest else None
        rec["rpo_policy_worst_case_s"] = c.policy.cadence.backup_max_age_hours * 3600
        mism = sorted(t for t in source if restored.get(t) != source[t]) + sorted(set(restored) - set(source))
        rec["tables"] = len(source)
        rec["rows"] = sum(v[0] for v in source.values())
        rec["mismatched"] = mism[:20]
        rec["checksums"] = {t: {"rows": v[0], "sum_hash": v[1], "restored_rows": (restored.get(t) or [None])[0]}
                            for t, v in source.items()}
        rec["ok"] = not mism and bool(source) and rec["rto_s"] > 0 and (rec["rpo_s"] or 0) > 0
        rec["summary"] = (f"{rec['tables']} tables / {rec['rows']} rows restored identical; RTO {rec['rto_s']}s, "
                          f"RPO {rec['rpo_s']}s" if rec["ok"] else f"restore differs: {mism[:5]}")
    finally:
        try:
            admin.execute(f'drop database if exists "{scratch}" with (force)')
            rec["scratch_dropped"] = True
        finally:
            admin.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return rec


def cost_slo_review(c: CadenceContext) -> dict:
    """30-day summary from the measurement functions (one server-side call each) and the storage it costs."""
    p = c.policy
    with _connect(c.dsn) as conn:
        frm, to = conn.execute("select now() - interval '30 days', now()").fetchone()
        docs = {
            "slo": _measure(conn, "ops.slo_snapshot", frm, to, p.slo.success_pct_min, p.slo.uptime_pct_min),
            "agents": _measure(conn, "ops.agent_health", frm, to),
            "dlq": _measure(conn, "ops.dlq_health", frm, to),
            "outbox": _measure(conn, "ops.outbox_lag", frm, to),
            "traces": _measure(conn, "ops.trace_coverage", frm, to),
            "ci": _measure(conn, "ops.ci_health", frm, to, p.watchlist.ci_branch),
        }
        size, = conn.execute("select pg_database_size(current_database())").fetchone()
        top = conn.execute(
            """select n.nspname || '.' || c.relname,
                      coalesce((select sum(pg_total_relation_size(i.inhrelid)) from pg_inherits i where i.inhparent = c.oid), 0)
                      + pg_total_relation_size(c.oid)
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname in ('ops', 'public') and c.relkind in ('r', 'p') and not c.relispartition
                order by 2 desc limit 8""").fetchall()
    slo = docs["slo"]
    findings = []
    if slo.get("requests", 0) == 0:
        findings.append("no requests in 30 days: nothing to review")
    if slo.get("success_pct") is not None and float(slo["success_pct"]) < p.slo.success_pct_min:
        findings.append(f"success {slo['success_pct']}% < {p.slo.success_pct_min}%")
    if slo.get("uptime_pct") is not None and float(slo["uptime_pct"]) < p.slo.uptime_pct_min:
        findings.append(f"uptime {slo['uptime_pct']}% < {p.slo.uptime_pct_min}%")
    if slo.get("p95_ms") is not None and float(slo["p95_ms"]) > p.slo.p95_ms_max:
        findings.append(f"p95 {float(slo['p95_ms']):.0f} ms > {p.slo.p95_ms_max:.0f} ms")
    cost = {"database_bytes": size, "largest_tables": {t: b for t, b in top},
            "volume_30d": {"requests": slo.get("requests"), "agent_tasks": docs["agents"].get("tasks"),
                           "dlq_replays": docs["dlq"].get("replays"), "outbox_events": docs["outbox"].get("events")}}
    return {"ok": not findings, "window_days": 30, "measurements": docs, "cost": cost, "findings": findings,
            "summary": "; ".join(findings) if findings else
            (f"30 d: success {slo.get('success_pct')}%, uptime {slo.get('uptime_pct')}%, p95 "
             f"{float(slo.get('p95_ms') or 0):.0f} ms; {size / 1e6:.1f} MB")}


SCHEDULES: dict[str, tuple[tuple[str, Callable[[CadenceContext], dict]], ...]] = {
    "daily": (("ttl_cleanup", ttl_cleanup), ("partition_rotation", partition_rotation),
              ("backup_freshness", backup_freshness), ("budget_drift", budget_drift),
              ("known_good_snapshot", known_good_snapshot)),
    "weekly": (("dr_drill", dr_drill), ("portal_audit", portal_audit), ("canary_sanity", canary_sanity),
               ("secrets_scan", secrets_scan)),
    "monthly": (("key_rotation", key_rotation_rehearsal), ("restore_test", restore_test),
                ("cost_slo_review", cost_slo_review)),
}


def run(c: CadenceContext, schedule: str, only: list[str] | None = None, log=print) -> list[dict]:
    """Every task of the schedule (or `only` those), each recorded and audited; a failing task never stops
    the others."""
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown cadence {schedule!r} (daily, weekly, monthly)")
    tasks = SCHEDULES[schedule]
    names = [n for n, _ in tasks]
    unknown = [o for o in (only or []) if o not in names]
    if unknown:
        raise UsageError(f"unknown {schedule} task(s) {unknown} (one of {', '.join(names)})")
    out = []
    for name, fn in tasks:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        started = clock.now()
        try:
            rec = fn(c)
        except OpsproofError as exc:
            rec = {"ok": False, "summary": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a task's crash is its failure, the run goes on
            rec = {"ok": False, "summary": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        rec = {"task": name, "schedule": schedule, "run_id": c.run_id, "started": started.isoformat(),
               "took_s": round(time.monotonic() - t0, 3), **rec}
        rec["verdict"] = "pass" if rec["ok"] else "fail"
        try:
            with _connect(c.dsn) as conn:
                conn.execute("select ops.audit(%s, %s, %s, %s, %s, %s)",
                             (ACTOR, f"cadence.{name}", f"cadence/{schedule}", rec["summary"][:500], c.run_id,
                              Jsonb({"ok": rec["ok"], "took_s": rec["took_s"], "schedule": schedule})))
            rec["audited"] = True
        except psycopg.Error as exc:
            rec["audited"] = False
            rec["ok"] = False
            rec["summary"] += f" (audit row not written: {type(exc).__name__})"
        log(f"{'ok  ' if rec['ok'] else 'FAIL'} {schedule}/{name} ({rec['took_s']}s): {rec['summary']}")
        out.append(rec)
    return out


# == evidence ======================================================================================

def amend_today_pack(root: Path, records: list[dict], metadata: dict, secrets: list[str], day: date | None = None) -> Path:
    """Write cadence/<task>.json into the day's pack: a new PackWriter, the current pack's files copied in
    (not its manifest), the records added, committed (refuses secrets; links to the previous day's pack).
    A current pack that does not verify is NOT amended (that would re-seal tampered files)."""
    import fcntl

    from opsproof.evidence.common import is_tar_pack
    from opsproof.evidence.pack import PackWriter
    from opsproof.evidence.verify import verify_pack

    day = day or clock.today()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".amend.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = root / day.isoformat()
        prior_meta: dict = {}
        if current.exists():
            if is_tar_pack(current) or not current.is_dir():
                raise OpsproofError(f"evidence pack {current.name} is not a directory; not amending it")
            result = verify_pack(current)
            if not result:
                why = result.first_problem() if callable(result.first_problem) else result.first_problem
                raise OpsproofError(f"today's evidence pack does not verify ({why}); "
                                    "not amending it")
            try:
                prior_meta = json.loads((current / "manifest.json").read_text()).get("metadata", {})
            except (OSError, ValueError):
                prior_meta = {}
        with PackWriter(root, day) as pack:
            if current.is_dir():
                for src in sorted(current.rglob("*")):
                    rel = src.relative_to(current).as_posix()
                    if src.is_file() and rel != "manifest.json":
                        pack.add_file(rel, src)
            for rec in records:
                pack.add_json(f"cadence/{rec['task']}.json", rec)
            meta = {**prior_meta}
            amendments = list(meta.get("amendments", []))
            amendments.append({**metadata, "at": clock.now().isoformat(), "files": [f"cadence/{r['task']}.json"
                                                                                    for r in records]})
            meta["amendments"] = amendments
            for k in ("target", "host"):
                if k not in meta and k in metadata:
                    meta[k] = metadata[k]
            return pack.commit(meta, secrets=secrets)

"""The operational cadence: scheduling, maintenance and rehearsals -- never a verdict on the target's posture.

`opsproof cadence daily | weekly | monthly` (levers/cadence_cli.py) runs this schedule's tasks here and the suite runs
the schedule asks for (`pytest -m weekly`, the drills, `pytest -m monthly` over 30 days) through opsproof.runner. The
reviews are checks: backup freshness is CAD-001, budget drift BUD-001..003, the portal audit SEC-003, canary sanity
CAD-005, the secrets scan CAD-006, the 30-day SLO review SLO-001..003 at `--opsproof-window 30d`.

A task is maintenance (TTL cleanup, partition rotation, a fresh backup on the embedded target, the known-good
snapshot, the weekly static analysis whose SARIF SEC-007 reads) or a rehearsal (key rotation, restore test). `run(c, schedule)` runs every task even when one fails and
returns one journal entry per task (opsproof.journal.Entry: kind maintenance|rehearsal, verdict pass|fail|error,
records [...]): a rehearsal that finds something wrong is a fail, a task that could not run is an error. Every
connection comes from levers/common.py `connection()`, every write is audited with `audit()` in its transaction,
and every task's outcome gets one audit row (action `cadence.<task>`). `write_pack()` puts the entries into the
day's pack as cadence/<schedule>/ through the one pack writer (evidence/daypack.py).

Maintenance is forward-only by design: what it deletes is beyond the policy's retention (backups are the undo);
rehearsals leave the target as they found it (scratch databases dropped, rehearsal rows deleted, keys never stored).
"""

from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

from psycopg.conninfo import make_conninfo

from opsproof import clock, paths
from opsproof.errors import OpsproofError, UsageError
from opsproof.levers.common import audit, connection

ACTOR = "opsproof-cadence"
PARTITIONED = ("requests", "health_probes", "spans", "agent_logs")


class TaskFailed(OpsproofError):
    """A rehearsal ran and found something wrong: the task's verdict is fail."""


class TaskError(OpsproofError):
    """A task could not run (no scratch database, the ingest unreachable, pg_dump failed): its verdict is error."""


@dataclass
class CadenceContext:
    dsn: str                                   # the target (admin / service DSN)
    policy: Any                                # opsproof.policy.Policy
    target: str = "embedded"                   # settings.target
    project_dir: Path = field(default_factory=paths.project_dir)
    scratch_dsn: str | None = None             # the embedded stack's admin DSN (restore test)
    backups_dir: Path = field(default_factory=paths.backups_dir)
    ingest_url: str | None = None              # the running ingest (key rotation rehearsal, over HTTP)
    keys: dict[str, str] = field(default_factory=dict)   # OPSPROOF_KEY_<ACCOUNT> / N8N_SIGNING_KEY, in memory only
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
    c = CadenceContext(
        dsn=settings.db_url.get_secret_value(), policy=policy, target=settings.target, project_dir=paths.project_dir(),
        scratch_dsn=stack_env.get("SUPABASE_DB_URL"),
        ingest_url=settings.ingest_url or plane_env.get("OPSPROOF_INGEST_URL"), keys=keys)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def record(name: str, measured: Any, threshold: Any, ok: bool, query: str = "", detail: Any = None) -> dict:
    """One journal record (opsproof.journal.Record) of what a task did or found."""
    return {"name": name, "measured": measured, "threshold": threshold, "verdict": "pass" if ok else "fail",
            "query": query, "detail": detail}


# == maintenance ===================================================================================

TTL_EXPIRED_SQL = "select count(*) from ops.agent_logs where ts < %s"


def ttl_cleanup(c: CadenceContext) -> dict:
    """agent_logs older than the policy TTL: whole day partitions dropped, the rest deleted row by row (audited in
    the same transaction)."""
    ttl = c.policy.cadence.agent_logs_ttl_days
    with connection(c.dsn) as conn:
        with conn.transaction():
            cutoff, cutoff_day = conn.execute(
                "select now() - make_interval(days => %s), (now() - make_interval(days => %s))::date",
                (ttl, ttl)).fetchone()
            expired = conn.execute(TTL_EXPIRED_SQL, (cutoff,)).fetchone()[0]
            kept_before = conn.execute("select count(*) from ops.agent_logs where ts >= %s", (cutoff,)).fetchone()[0]
            dropped = conn.execute("select ops.drop_partitions_before('agent_logs', %s)", (cutoff_day,)).fetchone()[0]
            deleted = conn.execute("delete from ops.agent_logs where ts < %s", (cutoff,)).rowcount
            left = conn.execute(TTL_EXPIRED_SQL, (cutoff,)).fetchone()[0]
            kept = conn.execute("select count(*) from ops.agent_logs where ts >= %s", (cutoff,)).fetchone()[0]
            audit(conn, action="cadence.ttl_cleanup.delete", target="ops.agent_logs",
                  reason=f"agent_logs older than {ttl} d: {dropped} partition(s) dropped, {deleted} row(s) deleted",
                  run_id=c.run_id, actor=ACTOR,
                  detail={"cutoff": cutoff.isoformat(), "expired_rows": expired, "partitions_dropped": dropped,
                          "rows_deleted": deleted})
    ok = left == 0 and kept >= kept_before
    return {"ok": ok, "summary": f"agent_logs older than {ttl} d: {expired} removed ({dropped} partition(s) dropped, "
                                 f"{deleted} row(s) deleted), {left} left",
            "records": [record("expired agent_logs left after the cleanup", left, "== 0", left == 0,
                               TTL_EXPIRED_SQL.replace("%s", f"now() - interval '{ttl} days'")),
                        record("agent_logs within the TTL kept", kept, f">= {kept_before}", kept >= kept_before)],
            "ttl_days": ttl, "cutoff": cutoff.isoformat(), "expired_rows": expired, "partitions_dropped": dropped,
            "rows_deleted": deleted, "expired_left": left, "rows_within_ttl": kept}


MISSING_PARTITIONS_SQL = """select count(*) from generate_series(current_date, current_date + %s, interval '1 day') d
                        where to_regclass(format('ops.%%s_%%s', %s::text, to_char(d, 'YYYYMMDD'))) is null"""


def partition_rotation(c: CadenceContext) -> dict:
    """Daily partitions: today .. today+partitions_ahead_days created; requests/health_probes/spans partitions
    older than evidence.retention_days dropped (agent_logs: by its TTL, in ttl_cleanup)."""
    ahead = c.policy.cadence.partitions_ahead_days
    keep = c.policy.evidence.retention_days
    out: dict = {"ahead_days": ahead, "retention_days": keep, "created": {}, "dropped": {}, "missing_after": {}}
    with connection(c.dsn) as conn:
        with conn.transaction():
            for t in PARTITIONED:
                out["created"][t] = conn.execute("select ops.ensure_partitions(%s, current_date, current_date + %s)",
                                                 (t, ahead)).fetchone()[0]
                if t != "agent_logs":
                    out["dropped"][t] = conn.execute("select ops.drop_partitions_before(%s, current_date - %s)",
                                                     (t, keep)).fetchone()[0]
            for t in PARTITIONED:
                out["missing_after"][t] = conn.execute(MISSING_PARTITIONS_SQL, (ahead, t)).fetchone()[0]
            audit(conn, action="cadence.partition_rotation.rotate", target="ops partitions",
                  reason=f"created {sum(out['created'].values())} ahead, dropped {sum(out['dropped'].values())} older than "
                  f"{keep} d", run_id=c.run_id, actor=ACTOR, detail={"created": out["created"], "dropped": out["dropped"]})
    missing = sum(out["missing_after"].values())
    out["ok"] = not missing
    out["records"] = [record(f"missing ops.{t} partitions after the rotation (today..+{ahead})", n, "== 0", n == 0,
                             MISSING_PARTITIONS_SQL) for t, n in out["missing_after"].items()]
    out["summary"] = (f"created {sum(out['created'].values())} partition(s) ahead, dropped "
                      f"{sum(out['dropped'].values())} older than {keep} d; missing after: {missing}")
    return out


NEWEST_BACKUP_SQL = ("select extract(epoch from now() - max(taken_at))::float8 / 3600 from ops.backups "
                     "where verified")


def backup_refresh(c: CadenceContext) -> dict:
    """Embedded target: when the newest verified backup is older than cadence.backup_max_age_hours (or there is none),
    take a fresh real pg_dump (stack/backup.py). This keeps backups fresh; whether they ARE is CAD-001's verdict."""
    from opsproof.stack import backup
    from opsproof.stack.binaries import find_bindir

    limit_h = c.policy.cadence.backup_max_age_hours
    with connection(c.dsn) as conn:
        age_h = conn.execute(NEWEST_BACKUP_SQL).fetchone()[0]
    if age_h is not None and age_h <= limit_h:
        return {"ok": True, "taken_now": False, "age_h": round(age_h, 3), "max_age_h": limit_h,
                "summary": f"newest verified backup {age_h:.2f} h old: nothing to do",
                "records": [record("backup taken", False, f"when older than {limit_h} h", True, NEWEST_BACKUP_SQL)]}
    try:
        info = backup.take(c.dsn, c.backups_dir, find_bindir())
    except OpsproofError as exc:
        raise TaskError(f"could not take a backup: {exc}") from None
    with connection(c.dsn) as conn:
        audit(conn, action="cadence.backup_refresh", target="ops.backups",
              reason=f"backup taken ({Path(info['location']).name})", run_id=c.run_id, actor=ACTOR,
              detail={"bytes": info["bytes"], "sha256": info["sha256"], "verified": info["verified"],
                      "previous_age_h": age_h})
    why = "no verified backup" if age_h is None else f"newest verified backup {age_h:.1f} h old"
    return {"ok": bool(info["verified"]), "taken_now": True, "max_age_h": limit_h, "previous_age_h": age_h,
            "location": Path(info["location"]).name, "bytes": info["bytes"],
            "summary": f"{why}: took {Path(info['location']).name} ({info['bytes']} B)"
                       + ("" if info["verified"] else "; pg_restore --list could NOT read it"),
            "records": [record("backup taken and readable (pg_restore --list)", info["verified"], True,
                               bool(info["verified"]), "pg_dump -Fc; pg_restore --list")]}


def known_good_snapshot(c: CadenceContext) -> dict:
    """When the effective flags equal the policy, nothing is overridden and no incident is open: record the
    flags and budgets as the last known-good snapshot (the rollback target of `incident handle` rollback)."""
    from opsproof.levers.incident import take_snapshot

    with connection(c.dsn) as conn:
        eff = {k: (v, o) for k, v, o in conn.execute("select key, value, overridden from ops.effective_flags").fetchall()}
        open_incidents = conn.execute("select count(*) from ops.incidents where status = 'open'").fetchone()[0]
    off = [k for k, want in c.policy.flags.items() if k not in eff or eff[k][0] != want or eff[k][1]]
    if off or open_incidents:
        why = (f"flags off policy: {off}" if off else "") + (f"{'; ' if off else ''}{open_incidents} open incident(s)"
                                                             if open_incidents else "")
        return {"ok": True, "taken": False, "summary": f"no known-good snapshot taken ({why})", "reason": why,
                "records": [record("known-good snapshot taken", False, "only when on policy, no open incident", True,
                                   detail=why)]}
    snap = take_snapshot(c.dsn, "cadence daily: flags match the policy, no open incident", taken_by=ACTOR)
    return {"ok": True, "taken": True, "snapshot_id": snap["id"],
            "summary": f"known-good snapshot #{snap['id']} ({len(snap['flags'])} flags, {len(snap['budgets'])} budgets)",
            "records": [record("known-good snapshot taken", snap["id"], "ops.flag_snapshots row", True)]}


# == rehearsals ====================================================================================

def key_rotation_rehearsal(c: CadenceContext) -> dict:
    """For each service account a new key is generated (in memory, never stored; only its fingerprint is recorded)
    and the signature check the ingest runs (opsproof.webhook_sig.verify) accepts it and refuses the old key. The
    running ingest is reached over HTTP: it still accepts the deployed n8n@ key (it verifies signatures) and refuses
    the rehearsal key (the key did not leak into it). The rehearsal's rows are deleted afterwards (audited)."""
    from opsproof.stack.secrets import SERVICE_ACCOUNTS, fingerprint
    from opsproof.webhook_sig import sign, verify

    with connection(c.dsn) as conn:
        registered = dict(conn.execute("select name, key_fingerprint from ops.service_accounts").fetchall())
    accounts, problems, records = {}, [], []
    body = json.dumps({"opsproof": "key-rotation-rehearsal", "run_id": c.run_id}).encode()
    new_n8n = old_n8n = None
    for account in c.policy.security.service_accounts or SERVICE_ACCOUNTS:
        new = _random.token_hex(32)
        old = c.keys.get(account)
        rec = {"old_fingerprint": fingerprint(old) if old else None, "registered_fingerprint": registered.get(account),
               "new_fingerprint": fingerprint(new), "old_key_available": old is not None}
        if rec["old_fingerprint"] is not None:
            rec["registered_matches_deployed"] = rec["old_fingerprint"] == registered.get(account)
        stand_in = old if old is not None else _random.token_hex(32)  # still proves the verifier pins the new key
        ts = int(time.time())
        rec["verifier_accepts_new"] = verify(new.encode(), str(ts), sign(new, ts, body), body, 300) is None
        rec["verifier_rejects_old"] = verify(new.encode(), str(ts), sign(stand_in, ts, body), body, 300) == "bad signature"
        if account == "n8n@":
            new_n8n, old_n8n = new, old
        bad = [k for k in ("verifier_accepts_new", "verifier_rejects_old") if not rec[k]]
        if rec.get("registered_matches_deployed") is False:
            bad.append("registered fingerprint differs from the deployed key")
        if bad:
            problems.append(f"{account}: {', '.join(bad)}")
        records.append(record(f"{account}: new key accepted, old refused", not bad, True, not bad,
                              "opsproof.webhook_sig.verify", {k: rec[k] for k in rec if k.endswith("fingerprint")}))
        accounts[account] = rec
    if "n8n@" in accounts:
        live = _ingest_rehearsal(c, new_n8n, old_n8n, body)
        accounts["n8n@"].update(live)
        if live.get("ingest_rejects_rehearsal_key") is False:
            problems.append("n8n@: the running ingest ACCEPTED the rehearsal key")
        if live.get("ingest_accepts_deployed_key") is False:
            problems.append("n8n@: the running ingest refused the deployed key")
        records.append(record("n8n@: the running ingest refuses the rehearsal key",
                              live["ingest_status"].get("rehearsal"), 401,
                              live.get("ingest_rejects_rehearsal_key") is True, f"POST {c.ingest_url}/webhooks/n8n"))
        if "deployed" in live["ingest_status"]:
            records.append(record("n8n@: the running ingest accepts the deployed key",
                                  live["ingest_status"]["deployed"], 201, live["ingest_accepts_deployed_key"],
                                  f"POST {c.ingest_url}/webhooks/n8n"))
    return {"ok": not problems, "accounts": accounts, "problems": problems, "records": records,
            "summary": "; ".join(problems) if problems else
            f"{len(accounts)} accounts: new key accepted, old refused; the running ingest refuses the rehearsal key"
            " and accepts the deployed one; fingerprints only recorded"}


def _ingest_rehearsal(c: CadenceContext, new: str, old: str | None, body: bytes) -> dict:
    import httpx

    from opsproof.webhook_sig import signed_headers

    if not c.ingest_url:
        raise TaskError("no ingest URL (OPSPROOF_INGEST_URL; `opsproof plane up`): the rehearsal cannot reach the ingest")
    trace = uuid.uuid4().hex
    tp = {"traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"}
    keys = [f"rehearsal-{c.run_id}-{i}" for i in range(2)]
    url = f"{c.ingest_url.rstrip('/')}/webhooks/n8n"
    out: dict = {"ingest_status": {}}
    try:
        try:
            r_new = httpx.post(url, content=body, headers={**signed_headers(new, body, keys[0]), **tp}, timeout=10)
            out["ingest_status"]["rehearsal"] = r_new.status_code
            out["ingest_rejects_rehearsal_key"] = r_new.status_code == 401
            if old is not None:
                r_old = httpx.post(url, content=body, headers={**signed_headers(old, body, keys[1]), **tp}, timeout=10)
                out["ingest_status"]["deployed"] = r_old.status_code
                out["ingest_accepts_deployed_key"] = r_old.status_code == 201
        except httpx.HTTPError as exc:
            raise TaskError(f"the ingest at {c.ingest_url} is not reachable ({type(exc).__name__}): "
                            "the rehearsal could not exercise it") from None
    finally:
        with connection(c.dsn) as conn:
            with conn.transaction():
                n = conn.execute("delete from ops.ingest_events where idempotency_key = any(%s)", (keys,)).rowcount
                n += conn.execute("delete from ops.idempotency_keys where key = any(%s)", (keys,)).rowcount
                n += conn.execute("delete from ops.requests where trace_id = %s", (trace,)).rowcount
                if n:
                    audit(conn, action="cadence.key_rotation.cleanup", target="ops.ingest_events",
                          reason=f"rehearsal rows deleted ({n})", run_id=c.run_id,
                          detail={"idempotency_keys": keys, "trace_id": trace},
                          actor=ACTOR)
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
        raise TaskError("restore test needs the embedded stack for its scratch database (`opsproof stack up`)")
    bindir = find_bindir()
    scratch = f"opsproof_restore_{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
    rec: dict = {"scratch_database": scratch}
    tmp = Path(tempfile.mkdtemp(prefix="opsproof-restore-"))
    created = False
    try:
        dump = tmp / "target.dump"
        with connection(c.dsn) as src:
            src.execute("set timezone to 'UTC'")
            with src.transaction():
                src.execute("set transaction isolation level repeatable read")
                snap_id, snap_at = src.execute("select pg_export_snapshot(), clock_timestamp()").fetchone()
                t0 = time.monotonic()
                res = subprocess.run([str(bindir / "pg_dump"), "-Fc", f"--snapshot={snap_id}", "-f", str(dump),
                                      "--dbname", c.dsn], capture_output=True, text=True, timeout=1800)
                if res.returncode != 0:
                    raise TaskError(f"pg_dump failed: {res.stderr.strip()[-300:]}")
                rec["dump_s"] = round(time.monotonic() - t0, 3)
                rec["dump_bytes"] = dump.stat().st_size
                source = _checksums(src)
        t_rto = time.monotonic()
        with connection(c.scratch_dsn) as admin:
            admin.execute(f'create database "{scratch}"')
        created = True
        res = subprocess.run([str(bindir / "pg_restore"), "--no-owner", "--no-acl", "-d",
                              make_conninfo(c.scratch_dsn, dbname=scratch), str(dump)],
                             capture_output=True, text=True, timeout=3600)
        rec["pg_restore_exit"] = res.returncode
        rec["pg_restore_errors"] = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()][:10]
        with connection(make_conninfo(c.scratch_dsn, dbname=scratch)) as dst:
            dst.execute("set timezone to 'UTC'")
            restored = _checksums(dst)
            newest = dst.execute(
                """select greatest((select max(at) from ops.audit_log), (select max(ts) from ops.requests),
                                   (select max(created_at) from ops.outbox), (select max(beat_at) from ops.heartbeats),
                                   (select max(enqueued_at) from ops.agent_tasks))""").fetchone()[0]
        rec["rto_s"] = round(time.monotonic() - t_rto, 3)
        with connection(c.dsn) as conn:
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
        rec["records"] = [
            record("tables whose rows or content checksum differ after the restore", len(mism), "== 0", not mism,
                   "count(*), sum(hashtextextended(t::text, 0)) per ops/public table", mism[:20]),
            record("RTO (scratch database created -> restored -> verified)", rec["rto_s"], "> 0 s (recorded)",
                   rec["rto_s"] > 0),
            record("RPO (now - newest write in the restored copy)", rec["rpo_s"], "> 0 s (recorded)",
                   (rec["rpo_s"] or 0) > 0)]
    finally:
        try:
            if created:
                with connection(c.scratch_dsn) as admin:
                    admin.execute(f'drop database if exists "{scratch}" with (force)')
            rec["scratch_dropped"] = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rec


# == the weekly static analysis (a scan, not a verdict: SEC-007 judges its SARIF) =========================

STATIC_SCAN_SARIF = "reports/scans/bandit.sarif"   # relative to the policy file's directory, like [code_scans]


def _policy_dir(c: CadenceContext) -> Path:
    src = getattr(c.policy, "source", None)
    return Path(src).resolve().parent if src and src != "<defaults>" else Path(c.project_dir)


def static_scan(c: CadenceContext, timeout: float = 600.0) -> dict:
    """bandit (a real SAST) over [code_scans] static_scan_paths; its SARIF 2.1.0, with the run's start and end time
    in `invocations`, goes to reports/scans/bandit.sarif where the default policy's `sarif` glob reads it. The task
    passes when the scan ran (whatever it found: SEC-007 judges the findings); a scan that could not run writes no
    SARIF (the previous one ages until SEC-007 calls it stale) and is an error."""
    import sys

    from opsproof.measure.code_scans import read_sarif

    base = _policy_dir(c)
    paths = [(base / p).resolve() for p in c.policy.code_scans.static_scan_paths]
    if not paths:
        raise TaskError("[code_scans] static_scan_paths is empty: nothing to scan")
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise TaskError(f"static scan path(s) not a directory: {missing}")
    out = base / STATIC_SCAN_SARIF
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [sys.executable, "-m", "bandit", "-r", *map(str, paths), "-f", "sarif", "-o", str(tmp), "-q"]
    shown = "bandit -r " + " ".join(map(str, paths)) + f" -f sarif -o {out}"
    started = clock.now()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise TaskError(f"{shown}: still running after {timeout:.0f} s") from None
    ended = clock.now()
    # bandit exits 0 (no issue) or 1 (issues found); anything else, or no SARIF, is a scan that did not happen
    if proc.returncode not in (0, 1) or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        if "No module named bandit" in proc.stderr:
            last = "bandit is not installed (pip install 'bandit[sarif]')"
        raise TaskError(f"{shown}: exit {proc.returncode}: {last}")
    try:
        doc = json.loads(tmp.read_text())
        run0 = doc["runs"][0]
        inv = (run0.get("invocations") or [{}])[0]
        # the times opsproof measured around the process (bandit writes only its end time)
        inv.setdefault("startTimeUtc", started.strftime("%Y-%m-%dT%H:%M:%SZ"))
        inv.setdefault("endTimeUtc", ended.strftime("%Y-%m-%dT%H:%M:%SZ"))
        inv.setdefault("executionSuccessful", True)
        run0["invocations"] = [inv, *(run0.get("invocations") or [])[1:]]
        tmp.write_text(json.dumps(doc, indent=2))
        readings = read_sarif(tmp)
    except (ValueError, KeyError, IndexError, TypeError, OpsproofError) as exc:
        tmp.unlink(missing_ok=True)
        raise TaskError(f"{shown}: unreadable SARIF ({type(exc).__name__}: {str(exc)[:200]})") from None
    os.replace(tmp, out)
    counts = readings[0].by_severity()
    return {"ok": True, "summary": f"bandit scanned {len(paths)} path(s): open findings {counts} -> {out}",
            "records": [record("static analysis ran (bandit, SARIF for SEC-007)", counts,
                               "the scan ran and wrote its SARIF", True, query=shown,
                               detail={"sarif": str(out), "started": started.isoformat(),
                                       "ended": ended.isoformat(), "exit_code": proc.returncode})],
            "sarif": str(out), "paths": [str(p) for p in paths]}


# == the artifact of the monthly review =============================================================

def cost_review(c: CadenceContext) -> dict:
    """What the target's data costs to keep (database size, largest tables): an artifact of the monthly run, no
    verdict (the 30-day SLO review is SLO-001..003 at --opsproof-window 30d)."""
    from opsproof.measure.storage import storage
    from opsproof.target.db import Target

    target = Target(c.dsn)
    try:
        m = storage(target)
    finally:
        target.close()
    return {"measured_at": clock.now().isoformat(), **m.result, "query": m.query}


# == scheduling ====================================================================================

Task = Callable[[CadenceContext], dict]
# name -> (function, journal kind, title, runs on hosted targets too)
TASKS: dict[str, tuple[Task, str, str, bool]] = {
    "ttl_cleanup": (ttl_cleanup, "maintenance", "agent_logs beyond the TTL removed", True),
    "partition_rotation": (partition_rotation, "maintenance", "Partitions created ahead, beyond retention dropped", True),
    "backup_refresh": (backup_refresh, "maintenance", "A fresh backup taken when the newest is stale (embedded)", False),
    "known_good_snapshot": (known_good_snapshot, "maintenance", "Known-good flag/budget snapshot recorded", True),
    "key_rotation": (key_rotation_rehearsal, "rehearsal", "Key rotation rehearsal: new key accepted, old refused", True),
    "restore_test": (restore_test, "rehearsal", "Restore test: a real dump restored identical (RPO/RTO)", True),
    "static_scan": (static_scan, "maintenance", "Static analysis (bandit) of the TMS's code, SARIF for SEC-007", True),
}
SCHEDULES: dict[str, tuple[str, ...]] = {
    "daily": ("ttl_cleanup", "partition_rotation", "backup_refresh", "known_good_snapshot"),
    "weekly": ("static_scan",),  # the scan SEC-007 reads; the weekly reviews are checks: see SUITE_RUNS
    "monthly": ("key_rotation", "restore_test"),
}
# the suite runs a schedule starts (through opsproof.runner, like `opsproof daily`): (run kind / marker, extra args)
SUITE_RUNS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "daily": (),  # `opsproof daily` runs the daily controls after this cadence
    "weekly": (("weekly", ("--opsproof-window=7d",)), ("drill", ())),
    "monthly": (("monthly", ("--opsproof-window=30d",)),),
}


def tasks_of(schedule: str, target: str = "embedded") -> list[str]:
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown cadence {schedule!r} (daily, weekly, monthly)")
    return [n for n in SCHEDULES[schedule] if target == "embedded" or TASKS[n][3]]


def run(c: CadenceContext, schedule: str, only: list[str] | None = None, log=print) -> list[dict]:
    """Every task of the schedule (or `only` those): one journal entry each, one audit row each; a failing task
    never stops the others. A rehearsal that finds something wrong is `fail`; a task that could not run is `error`."""
    names = tasks_of(schedule, c.target)
    unknown = [o for o in (only or []) if o not in SCHEDULES.get(schedule, ())]
    if unknown:
        listed = ", ".join(SCHEDULES[schedule]) or "none: the weekly reviews are checks"
        raise UsageError(f"unknown {schedule} task(s) {unknown} (one of: {listed})")
    out = []
    for name in names:
        if only and name not in only:
            continue
        fn, kind, title, _ = TASKS[name]
        t0 = time.monotonic()
        started = clock.now()
        try:
            rec = fn(c)
            verdict = rec.pop("verdict", None) or ("pass" if rec.get("ok") else "fail")
        except TaskFailed as exc:
            rec, verdict = {"summary": str(exc)}, "fail"
        except OpsproofError as exc:
            rec, verdict = {"summary": str(exc)}, "error"
        except Exception as exc:  # noqa: BLE001 - a task's crash: it could not run; the run goes on
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            rec, verdict = {"summary": f"{type(exc).__name__}: {first}"}, "error"
        rec.pop("ok", None)
        entry = {"id": f"cadence/{schedule}/{name}", "title": title, "kind": kind, "area": "cadence",
                 "severity": "medium", "frameworks": {}, "nodeid": None, "verdict": verdict,
                 "message": rec.pop("summary", ""), "records": rec.pop("records", []),
                 "duration_s": round(time.monotonic() - t0, 3), "waiver": None,
                 "task": name, "schedule": schedule, "run_id": c.run_id, "started": started.isoformat(), "detail": rec}
        try:
            with connection(c.dsn) as conn:
                audit(conn, action=f"cadence.{name}", target=f"cadence/{schedule}",
                      reason=f"{verdict}: {entry['message']}"[:500], run_id=c.run_id, actor=ACTOR,
                      detail={"verdict": verdict, "duration_s": entry["duration_s"], "schedule": schedule})
            entry["audited"] = True
        except Exception as exc:  # noqa: BLE001 - an unaudited task is not a clean one
            entry["audited"] = False
            if entry["verdict"] == "pass":
                entry["verdict"] = "error"
            entry["message"] += f" (audit row not written: {type(exc).__name__})"
        log(f"{entry['verdict'].upper():5} {schedule}/{name} ({entry['duration_s']}s): {entry['message']}")
        out.append(entry)
    return out


# == evidence ======================================================================================

def journal(schedule: str, run_id: str, entries: list[dict], day: date, target: dict | None = None) -> dict:
    """cadence/<schedule>/results.json: the entries in the shared journal shape (opsproof.journal.RunJournal)."""
    from opsproof import journal as journal_mod

    verdict, green = journal_mod.run_verdict(entries, interrupted=False, not_run=[])
    return journal_mod.validate({
        "suite": f"cadence-{schedule}", "run_id": run_id, "date": day.isoformat(), "verdict": verdict, "green": green,
        "summary": journal_mod.summarize(entries), "controls": entries, "target": target})


def write_pack(root: Path, schedule: str, run_id: str, entries: list[dict], metadata: dict, secrets: list[str],
               *, artifacts: dict[str, Any] | None = None, signer=None, day: date | None = None) -> Path:
    """cadence/<schedule>/results.json (the journal), cadence/<schedule>/<task>.json and any artifacts into the
    day's pack through the one pack writer (evidence/daypack.py: lock, current pack re-read and verified, other
    kinds' files kept, secrets refused, signed)."""
    from opsproof.evidence import daypack

    day = day or clock.today()
    with daypack.open_day(root, day, f"cadence-{schedule}", run_id) as part:
        if entries:
            part.add_json(part.name("results", "json"), journal(schedule, run_id, entries, day,
                                                                metadata.get("target_detail")))
        for e in entries:
            part.add_json(part.name(e["task"], "json"), e)
        for name, content in sorted((artifacts or {}).items()):
            stem, _, ext = name.partition(".")
            if isinstance(content, (dict, list)):
                part.add_json(part.name(stem, ext or "json"), content)
            else:
                part.add_text(part.name(stem, ext or "txt"), str(content))
        return part.commit({**metadata, "schedule": schedule, "run_id": run_id}, secrets=secrets, signer=signer)

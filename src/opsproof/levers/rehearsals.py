"""Cadence rehearsals: key rotation (a new key accepted and the old one refused by the running ingest, over HTTP) and
the restore test (a real dump restored into a scratch database, identical, with RPO/RTO). They leave the target as
they found it: scratch databases dropped, rehearsal rows deleted, keys never stored."""

from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from psycopg.conninfo import make_conninfo

from opsproof.levers.common import audit, connection
from opsproof.levers.cadence_context import ACTOR, CadenceContext, TaskError, record


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

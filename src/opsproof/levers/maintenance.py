"""Cadence maintenance: agent_logs TTL cleanup, partition rotation, a fresh backup on the embedded target when the
newest is stale, the known-good flag/budget snapshot. Forward-only by design: what it deletes is beyond the policy's
retention (backups are the undo). Every connection from levers/common.py, every write audited in its transaction."""

from __future__ import annotations

from pathlib import Path

from opsproof.errors import OpsproofError
from opsproof.levers.common import audit, connection
from opsproof.levers.cadence_context import ACTOR, PARTITIONED, CadenceContext, TaskError, record


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

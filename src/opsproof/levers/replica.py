"""Replica levers: pause and resume WAL replay on the standby (the region-wobble drill's fault).

A pause has no lease inside PostgreSQL, so it is recorded in the audit chain with an expiry
(detail.expires_at): a runner killed mid-drill leaves the standby paused, and `release_stale_pause()`
(`opsproof levers release --stale`) resumes it once that expiry has passed. Finalizers and the signal
handlers resume it at once.
"""

from __future__ import annotations

import psycopg

from opsproof.levers.common import audit, connection, require_audit


def _replica(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5, application_name="opsproof-levers")


def is_paused(replica_dsn: str) -> bool:
    with _replica(replica_dsn) as r:
        return bool(r.execute("select pg_is_in_recovery() and pg_is_wal_replay_paused()").fetchone()[0])


def pause_replay(primary, replica_dsn: str, run_id: str, owner: str, reason: str, lease_s: float) -> int:
    """Audit first (on the primary), then pause replay on the standby; returns the audit id."""
    with connection(primary) as conn:
        require_audit(conn)
        with _replica(replica_dsn) as r:
            if not r.execute("select pg_is_in_recovery()").fetchone()[0]:
                from opsproof.levers.common import LeverError

                raise LeverError("the replica DSN does not point at a standby (not in recovery)")
        aid = conn.execute(
            "select ops.audit('opsproof', 'replica.replay.pause', 'replica', %s, %s, "
            "jsonb_build_object('owner', %s::text, 'lease_s', %s::float8, "
            "'expires_at', now() + make_interval(secs => %s::float8)))",
            (reason, run_id, owner, float(lease_s), float(lease_s))).fetchone()[0]
        with _replica(replica_dsn) as r:
            r.execute("select pg_wal_replay_pause()")
    return int(aid)


def resume_replay(primary, replica_dsn: str, run_id: str, reason: str = "drill finished") -> bool:
    """Resume replay if paused (idempotent); audited when it changed something. Returns True if it resumed."""
    with _replica(replica_dsn) as r:
        paused = r.execute("select pg_is_in_recovery() and pg_is_wal_replay_paused()").fetchone()[0]
        if paused:
            r.execute("select pg_wal_replay_resume()")
    if paused:
        with connection(primary) as conn:
            audit(conn, "replica.replay.resume", "replica", reason, run_id, {})
    return bool(paused)


def release_stale_pause(primary, replica_dsn: str | None, run_id: str = "levers-cli") -> dict | None:
    """Resume a standby left paused by a lever whose pause lease has expired (its runner died).

    A pause not made by a lever (no unmatched 'replica.replay.pause' audit row) is left alone: an operator
    may have paused it on purpose."""
    if not replica_dsn:
        return None
    with connection(primary) as conn:
        row = conn.execute(
            """select p.id, p.run_id, p.detail->>'owner', (p.detail->>'expires_at')::timestamptz <= now()
                 from ops.audit_log p
                where p.action = 'replica.replay.pause'
                  and not exists (select 1 from ops.audit_log r where r.action = 'replica.replay.resume'
                                     and r.id > p.id)
                order by p.id desc limit 1""").fetchone()
    if row is None:
        return None
    aid, pause_run, owner, expired = row
    if not expired or not is_paused(replica_dsn):
        return {"pause_audit_id": aid, "run_id": pause_run, "owner": owner, "resumed": False,
                "why": "lease not expired yet" if not expired else "replica not paused"}
    resume_replay(primary, replica_dsn, run_id, f"stale pause by {owner} (run {pause_run}): lease expired")
    return {"pause_audit_id": aid, "run_id": pause_run, "owner": owner, "resumed": True}

"""Replica levers: pause and resume WAL replay on the standby (the region-wobble drill's fault).

A pause has no lease inside PostgreSQL, so its lease lives in the audit chain: the pause row
(`replica.replay.pause`, detail.expires_at) and the holder's heartbeats (`replica.replay.renew`,
detail.pause_audit_id + a later expires_at, written by the lease renewer every lease/3 s). The pause's
lease has expired when the latest of those expiries has passed and no `replica.replay.resume` row
follows the pause.

Who resumes it:
- the drill itself, the fixture finalizers and the signal handlers, at once (`resume_replay`);
- when the holder died (SIGKILL): whatever the plane runs -- the reference plane's health gate
  (`opsproof.plane.gate`) resumes replay itself once the lease has expired (audited, reads cut back to
  the replica by its next healthy probe). It reads the same rows with the same query (opsproof.measure.replica_lease.LEASE_SQL)
  (levers never import the plane; the plane does not import levers);
- `release_stale_pause()` (`opsproof levers release --stale`) does the same by hand, for a target whose
  own services do not.
Renewals and the resume of an expired pause serialize on one advisory transaction lock (PAUSE_LOCK), so a
late heartbeat and an auto-heal never both win. A pause not made by a lever (no unmatched
`replica.replay.pause` audit row) is left alone: an operator may have paused it on purpose.
"""

from __future__ import annotations

import psycopg

from opsproof.levers.common import LeverError, audit, connect, connection, db_now, require_audit
from opsproof.measure.replica_lease import LEASE_SQL, PAUSE_LOCK


def _replica(dsn: str) -> psycopg.Connection:
    return connect(dsn, connect_timeout=5)


def is_paused(replica_dsn: str) -> bool:
    with _replica(replica_dsn) as r:
        return bool(r.execute("select pg_is_in_recovery() and pg_is_wal_replay_paused()").fetchone()[0])


def pause_replay(primary, replica_dsn: str, run_id: str, owner: str, reason: str, lease_s: float) -> int:
    """Audit first (on the primary), then pause replay on the standby; returns the audit id (the pause's
    lease: renew it with `renew_pause` every lease/3 s, or the plane resumes replay when it expires)."""
    if not lease_s or lease_s <= 0:
        raise LeverError(f"lease must be positive, got {lease_s}")
    with connection(primary) as conn:
        require_audit(conn)
        with _replica(replica_dsn) as r:
            if not r.execute("select pg_is_in_recovery()").fetchone()[0]:
                raise LeverError("the replica DSN does not point at a standby (not in recovery)")
        aid = audit(conn, action="replica.replay.pause", target="replica", reason=reason, run_id=run_id,
                    detail={"owner": owner, "lease_s": float(lease_s),
                            "expires_at": db_now(conn, plus_s=lease_s).isoformat()}, checked=True)
        with _replica(replica_dsn) as r:
            r.execute("select pg_wal_replay_pause()")
    return int(aid)


def renew_pause(where, pause_audit_id: int, lease_s: float, run_id: str) -> bool:
    """Extend a pause's lease (an audited `replica.replay.renew` row). False = the lease is lost: it had
    expired already, or replay was resumed since (by the plane's auto-heal, an operator, another run)."""
    with connection(where) as conn:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s, %s)", PAUSE_LOCK)
            row = conn.execute(LEASE_SQL).fetchone()
            if row is None or row[0] != pause_audit_id or row[4] or row[3] is None or row[3] <= row[5]:
                return False
            audit(conn, action="replica.replay.renew", target="replica", reason="drill still running", run_id=run_id,
                  detail={"pause_audit_id": int(pause_audit_id), "lease_s": float(lease_s),
                          "expires_at": db_now(conn, plus_s=lease_s).isoformat()})
    return True


def resume_replay(primary, replica_dsn: str, run_id: str, reason: str = "drill finished") -> bool:
    """Resume replay if paused (idempotent); returns True if it resumed. Always audited: the resume row also
    closes the pause's lease (so nobody later mistakes an operator's own pause for this one)."""
    with _replica(replica_dsn) as r:
        paused = r.execute("select pg_is_in_recovery() and pg_is_wal_replay_paused()").fetchone()[0]
        if paused:
            r.execute("select pg_wal_replay_resume()")
    with connection(primary) as conn:
        audit(conn, action="replica.replay.resume", target="replica", reason=reason, run_id=run_id,
              detail={"was_paused": bool(paused)})
    return bool(paused)


def pause_lease(primary) -> dict | None:
    """The newest lever pause and its lease: {pause_audit_id, run_id, owner, expires_at, expired, resumed}."""
    with connection(primary) as conn:
        row = conn.execute(LEASE_SQL).fetchone()
    if row is None:
        return None
    aid, run, owner, expires, resumed, now = row
    return {"pause_audit_id": aid, "run_id": run, "owner": owner, "expires_at": expires,
            "expired": expires is None or expires <= now, "resumed": bool(resumed)}


def release_stale_pause(primary, replica_dsn: str | None, run_id: str = "levers-cli") -> dict | None:
    """Resume a standby left paused by a lever whose pause lease has expired (its runner died)."""
    if not replica_dsn:
        return None
    lease = pause_lease(primary)
    if lease is None or lease["resumed"]:
        return None
    out = {k: lease[k] for k in ("pause_audit_id", "run_id", "owner")}
    if not lease["expired"]:
        return {**out, "resumed": False, "why": "lease not expired yet"}
    with connection(primary) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s, %s)", PAUSE_LOCK)
        again = conn.execute(LEASE_SQL).fetchone()  # a heartbeat may have landed meanwhile
        if again is None or again[0] != lease["pause_audit_id"] or again[4]:
            return {**out, "resumed": False, "why": "already resumed"}
        if again[3] is not None and again[3] > again[5]:
            return {**out, "resumed": False, "why": "lease not expired yet"}
        if not is_paused(replica_dsn):
            return {**out, "resumed": False, "why": "replica not paused"}
        with _replica(replica_dsn) as r:
            r.execute("select pg_wal_replay_resume()")
        audit(conn, action="replica.replay.resume", target="replica",
              reason=f"stale pause by {lease['owner']} (run {lease['run_id']}): lease expired", run_id=run_id,
              detail={"pause_audit_id": lease["pause_audit_id"], "pause_run_id": lease["run_id"]})
    return {**out, "resumed": True}


def release_run_pause(primary, replica_dsn: str | None, run: str) -> dict | None:
    """`release --run RUN`: resume replay if the newest lever pause is that run's and was never resumed
    (whether or not its lease has expired)."""
    if not replica_dsn:
        return None
    lease = pause_lease(primary)
    if lease is None or lease["resumed"] or lease["run_id"] != run:
        return None
    out = {k: lease[k] for k in ("pause_audit_id", "run_id", "owner")}
    with connection(primary) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s, %s)", PAUSE_LOCK)
        if not is_paused(replica_dsn):
            return {**out, "resumed": False, "why": "replica not paused"}
        with _replica(replica_dsn) as r:
            r.execute("select pg_wal_replay_resume()")
        audit(conn, action="replica.replay.resume", target="replica",
              reason=f"released by operator (release --run {run})", run_id=run,
              detail={"pause_audit_id": lease["pause_audit_id"], "pause_run_id": run, "by": "levers-cli"})
    return {**out, "resumed": True}

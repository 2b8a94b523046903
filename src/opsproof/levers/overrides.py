"""Leased flag overrides: the only way a drill changes a flag.

A drill never edits ops.feature_flags. It inserts an ops.flag_overrides row with an owner (run id, host,
pid), a reason and an expiry (the lease). Every reader goes through ops.effective_flags, which ignores
released and expired rows, so a killed runner's override stops mattering by itself when its lease runs
out; `release_stale()` (`opsproof levers release --stale`) then stamps those rows released.
Every write here writes an audit row (ops.audit) in the same transaction.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from opsproof.levers.common import LeverError, audit, connection, require_audit


def take_override(where, key: str, value: Any, owner: str, run_id: str, reason: str, lease_s: float) -> int:
    """Insert a leased override (effective at once for every reader); returns its id."""
    if lease_s <= 0:
        raise LeverError(f"lease must be positive, got {lease_s}")
    if not reason.strip():
        raise LeverError("an override needs a reason")
    with connection(where) as conn:
        require_audit(conn)
        with conn.transaction():
            base = conn.execute("select value from ops.feature_flags where key = %s", (key,)).fetchone()
            if base is None:
                raise LeverError(f"no flag {key!r} in ops.feature_flags: refusing to override an unknown flag")
            oid, expires = conn.execute(
                """insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
                   values (%s, %s, %s, %s, %s, now() + make_interval(secs => %s::float8))
                   returning id, expires_at""",
                (key, Jsonb(value), owner, run_id, reason, float(lease_s))).fetchone()
            audit(conn, action="flag.override.take", target=f"ops.feature_flags/{key}", reason=reason, run_id=run_id,
                  detail={"override_id": oid, "value": value, "base_value": base[0], "owner": owner,
                   "lease_s": lease_s, "expires_at": expires.isoformat()})
    return int(oid)


def renew(where, ids: list[int], lease_s: float, run_id: str) -> list[int]:
    """Extend the leases of still-active overrides; returns the ids renewed (a missing id = lease lost)."""
    if not ids:
        return []
    with connection(where) as conn:
        with conn.transaction():
            rows = conn.execute(
                """update ops.flag_overrides set expires_at = now() + make_interval(secs => %s::float8)
                    where id = any(%s::bigint[]) and released_at is null and expires_at > now()
                    returning id""", (float(lease_s), list(ids))).fetchall()
            renewed = sorted(r[0] for r in rows)
            if renewed:
                audit(conn, action="flag.override.renew", target="ops.flag_overrides", reason="drill still running",
                      run_id=run_id, detail={"override_ids": renewed, "lease_s": lease_s})
    return renewed


def release(where, ids: list[int], run_id: str, reason: str = "drill finished") -> list[int]:
    """Stamp overrides released (idempotent); returns the ids this call released."""
    if not ids:
        return []
    with connection(where) as conn:
        with conn.transaction():
            rows = conn.execute(
                """update ops.flag_overrides set released_at = now()
                    where id = any(%s::bigint[]) and released_at is null returning id, key""",
                (list(ids),)).fetchall()
            if rows:
                audit(conn, action="flag.override.release", target="ops.flag_overrides", reason=reason,
                      run_id=run_id, detail={"override_ids": sorted(r[0] for r in rows), "keys": sorted({r[1] for r in rows})})
    return sorted(r[0] for r in rows)


def release_run(where, run_id: str, reason: str = "run ending") -> list[int]:
    """Release every unreleased override of one run (signal handlers, finalizers, `release --run`)."""
    with connection(where) as conn:
        ids = [r[0] for r in conn.execute(
            "select id from ops.flag_overrides where run_id = %s and released_at is null", (run_id,)).fetchall()]
        return release(conn, ids, run_id, reason)


def run_known(where, run_id: str) -> bool:
    """Did this run ever take an override or pause the replica (audited)?"""
    with connection(where) as conn:
        return bool(conn.execute(
            """select exists (select 1 from ops.flag_overrides where run_id = %s)
                   or exists (select 1 from ops.audit_log where run_id = %s and action = 'replica.replay.pause')""",
            (run_id, run_id)).fetchone()[0])


def missing_ids(where, ids: list[int]) -> list[int]:
    """The ids among `ids` that name no override at all."""
    with connection(where) as conn:
        found = {r[0] for r in conn.execute("select id from ops.flag_overrides where id = any(%s::bigint[])",
                                            (list(ids),)).fetchall()}
    return sorted(set(ids) - found)


def release_stale(where, run_id: str = "levers-cli", reason: str = "lease expired (release --stale)") -> list[dict]:
    """Stamp released every unreleased override whose lease has run out; returns those rows."""
    with connection(where) as conn:
        with conn.transaction():
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(
                    """update ops.flag_overrides set released_at = now()
                        where released_at is null and expires_at <= now()
                        returning id, key, value, owner, run_id, expires_at""").fetchall()
            if rows:
                audit(conn, action="flag.override.release_stale", target="ops.flag_overrides", reason=reason,
                      run_id=run_id, detail={"override_ids": [r["id"] for r in rows],
                       "owners": sorted({r["owner"] for r in rows}),
                       "runs": sorted({r["run_id"] for r in rows})})
    return rows


def list_overrides(where, *, include_released: bool = False, limit: int = 200) -> list[dict]:
    """Overrides with their state: active (counts now), stale (expired, not released), released."""
    with connection(where) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """select id, key, value, owner, run_id, reason, created_at, expires_at, released_at,
                          case when released_at is not null then 'released'
                               when expires_at <= now() then 'stale' else 'active' end as state,
                          extract(epoch from expires_at - now())::float8 as expires_in_s
                     from ops.flag_overrides
                    where %s or released_at is null
                    order by id desc limit %s::int""", (include_released, limit)).fetchall()


def active_overrides(where) -> list[dict]:
    return [r for r in list_overrides(where) if r["state"] == "active"]


def effective_flags(where) -> dict[str, Any]:
    with connection(where) as conn:
        return dict(conn.execute("select key, value from ops.effective_flags order by key").fetchall())


FINGERPRINT_SQL = """
select (select md5(coalesce(string_agg(f::text, '|' order by f.key), '')) from ops.feature_flags f),
       (select md5(coalesce(string_agg(o::text, '|' order by o.id), ''))
          from ops.flag_overrides o where o.released_at is null),
       (select md5(coalesce(string_agg(e.key || '=' || e.value::text, '|' order by e.key), ''))
          from ops.effective_flags e),
       (select count(*) from ops.flag_overrides o where o.released_at is null)
"""


def fingerprint(where) -> dict:
    """md5 of the flag tables: every base flag row (all columns), every unreleased override row, the
    effective flags. Equal before and after a drill = the drill left the flags exactly as it found them
    (its own override rows stay as released history; see docs/drills.md)."""
    with connection(where) as conn:
        ff, ov, eff, n = conn.execute(FINGERPRINT_SQL).fetchone()
    return {"feature_flags_md5": ff, "unreleased_overrides_md5": ov, "effective_flags_md5": eff,
            "unreleased_overrides": int(n)}

"""Steady state (as Chaos Toolkit does it): what "healthy" means before and after every drill.

- every policy flag's *effective* value equals the policy, and no flag is overridden;
- no unreleased, unexpired override on the target (one of another run is "foreign": someone else is
  changing the system; one of this run after a drill is a leak);
- the plane's components are up: a fresh heartbeat (ops.heartbeats) from each required component;
- the replica is streaming (pg_stat_replication on the primary), WAL replay is not paused on it, and
  reads are routed to it (ops.read_routing).
Read-only: one small query per item (a measurement, so it lives in measure/; the drill fixtures and the
incident levers call it).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import psycopg

DEFAULT_COMPONENTS = ("plane.sink", "plane.ingest", "plane.worker", "plane.relay", "plane.replayer",
                      "plane.gate", "plane.traffic")


def _connect(dsn: str, timeout_s: float) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)),
                           application_name="opsproof-measure", prepare_threshold=None)  # pooler-safe


@contextmanager
def connection(where: Any) -> Iterator[psycopg.Connection]:
    """`where` is a psycopg Connection (used as is), an opsproof Target (a pooled connection) or a DSN."""
    if isinstance(where, psycopg.Connection):
        with nullcontext(where) as conn:
            yield conn
    elif isinstance(where, str):
        with _connect(where, 10) as conn:
            yield conn
    elif hasattr(where, "connection"):
        with where.connection() as conn:
            yield conn
    else:
        raise TypeError(f"not a connection, Target or DSN: {type(where).__name__}")


def required_components() -> tuple[str, ...]:
    """OPSPROOF_STEADY_COMPONENTS (comma-separated heartbeat names) for a user's own services."""
    raw = os.environ.get("OPSPROOF_STEADY_COMPONENTS")
    if raw is not None:
        return tuple(c.strip() for c in raw.split(",") if c.strip())
    return DEFAULT_COMPONENTS


@dataclass
class SteadyStateReport:
    ok: bool
    problems: list[str]
    flags: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict] = field(default_factory=list)
    components: dict[str, float | None] = field(default_factory=dict)
    replica: dict[str, Any] = field(default_factory=dict)
    at: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return "steady" if self.ok else "NOT steady: " + "; ".join(self.problems)


def measure(where, policy_flags: dict[str, Any], *, run_id: str | None = None, replica_dsn: str | None = None,
            components: tuple[str, ...] | None = None, heartbeat_max_age_s: float = 10.0) -> SteadyStateReport:
    components = required_components() if components is None else components
    problems: list[str] = []
    with connection(where) as conn:
        at = conn.execute("select now()::text").fetchone()[0]
        eff = {k: (v, o, owner) for k, v, o, owner in conn.execute(
            "select key, value, overridden, override_owner from ops.effective_flags").fetchall()}
        flags = {}
        for key, want in sorted(policy_flags.items()):
            if key not in eff:
                problems.append(f"flag {key} missing from ops.feature_flags")
                continue
            value, overridden, owner = eff[key]
            flags[key] = value
            if value != want:
                problems.append(f"flag {key} is {value!r}, policy says {want!r}"
                                + (f" (override by {owner})" if overridden else ""))
        active = [dict(zip(("id", "key", "value", "owner", "run_id", "reason", "expires_at"), r)) for r in conn.execute(
            """select id, key, value, owner, run_id, reason, expires_at::text from ops.flag_overrides
                where released_at is null and expires_at > now() order by id""").fetchall()]
        for o in active:
            whose = "this run's (leaked)" if run_id and o["run_id"] == run_id else "foreign"
            problems.append(f"{whose} override #{o['id']} {o['key']}={o['value']!r} by {o['owner']} "
                            f"(run {o['run_id']}: {o['reason']}) until {o['expires_at']}")
        beats = dict(conn.execute(
            "select component, extract(epoch from now() - beat_at)::float8 from ops.heartbeats").fetchall())
        comp_ages: dict[str, float | None] = {}
        for c in components:
            age = beats.get(c)
            comp_ages[c] = None if age is None else round(age, 2)
            if age is None:
                problems.append(f"component {c} has never sent a heartbeat")
            elif age > heartbeat_max_age_s:
                problems.append(f"component {c} is down: last heartbeat {age:.1f}s ago (> {heartbeat_max_age_s:g}s)")
        replica: dict[str, Any] = {}
        rep = conn.execute("select state, pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint from pg_stat_replication").fetchall()
        replica["replication"] = [{"state": s, "replay_lag_bytes": lag} for s, lag in rep]
        routing = conn.execute("select target, consecutive_failures from ops.read_routing where region = 'replica'").fetchone()
        replica["read_routing"] = None if routing is None else {"target": routing[0], "consecutive_failures": routing[1]}
    if replica_dsn:
        if not any(s == "streaming" for s, _ in rep):
            problems.append("replica not streaming (pg_stat_replication on the primary)")
        try:
            with _connect(replica_dsn, 3) as r:
                rec, paused = r.execute("select pg_is_in_recovery(), "
                                        "case when pg_is_in_recovery() then pg_is_wal_replay_paused() end").fetchone()
            replica.update(in_recovery=rec, replay_paused=paused)
            if not rec:
                problems.append("replica is not a standby (not in recovery)")
            elif paused:
                problems.append("WAL replay is paused on the replica")
        except psycopg.Error as exc:
            problems.append(f"replica unreachable: {type(exc).__name__}")
        if routing is not None and routing[0] != "replica":
            problems.append(f"reads are routed to the {routing[0]}, not the replica "
                            f"({routing[1]} consecutive failed probes)")
    else:
        replica["configured"] = False
    return SteadyStateReport(ok=not problems, problems=problems, flags=flags, overrides=active,
                             components=comp_ages, replica=replica, at=at)


def wait_steady(where, policy_flags: dict[str, Any], *, timeout_s: float = 15.0, poll_s: float = 0.5,
                **kw) -> SteadyStateReport:
    """Poll until steady or the timeout; returns the last report (ok or not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = measure(where, policy_flags, **kw)
        if report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(poll_s)

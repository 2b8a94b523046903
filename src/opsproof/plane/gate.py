"""Health gate: `python -m opsproof.plane.gate`.

Every OPSPROOF_PROBE_INTERVAL_S (30 s in production, 1 s on the embedded stack) it probes the replica:
  lag = pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) on the replica.
A probe FAILS when the replica is unreachable (connect timeout OPSPROOF_PROBE_TIMEOUT_S), is not in
recovery, has no streaming WAL receiver, its lag exceeds OPSPROOF_LAG_THRESHOLD_BYTES, or replay is
paused with WAL pending. Each probe is one ops.health_probes row (region 'replica').
ops.read_routing (region 'replica') carries consecutive_failures; after exactly
OPSPROOF_FAILURES_TO_CUTOVER (3) consecutive failures target becomes 'primary' (+ audit + alert);
after OPSPROOF_PROBES_TO_RETURN (1) healthy probe(s) it returns to 'replica' (+ audit).
`Gate.step()` runs one probe + decision, so a drill can drive the gate probe by probe.

Auto-heal of a drill's replica pause: a drill lever that pauses WAL replay leases the pause in the audit
chain (`replica.replay.pause` with detail.expires_at, extended by `replica.replay.renew` heartbeats while
its runner lives). When a probe finds replay paused, the gate reads that lease (ops.audit_log, the ops
contract); once it has expired with no `replica.replay.resume` after it -- the runner died -- the gate
resumes replay itself (`pg_wal_replay_resume()` on the replica, audited as `replica.replay.resume` by
system@) and its next healthy probe cuts reads back to the replica. No person needed. A pause with no
open lever lease (an operator's) is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg

from opsproof.measure.replica_lease import LEASE_SQL as PAUSE_LEASE_SQL, PAUSE_LOCK
from opsproof.plane import common, notifier
from opsproof.plane.settings import PlaneSettings, load_or_exit

log = logging.getLogger("opsproof.plane.gate")
COMPONENT = "plane.gate"
# The request / probe / outbox rollup (migration 20261203001100): the gate, already the plane's periodic
# housekeeper, rolls the closed minutes every ROLLUP_INTERVAL_S (a hosted project schedules the same SQL with pg_cron)
ROLLUP_INTERVAL_S = 20.0
ROLLUP_SQL = "select ops.rollup_refresh()"


@dataclass
class Probe:
    ok: bool
    latency_ms: float
    lag_bytes: int | None
    detail: str
    paused: bool = False  # WAL replay is paused on the standby


@dataclass
class StepResult:
    probe: Probe
    consecutive_failures: int
    target: str
    changed: str | None  # 'cutover' | 'return' | None
    healed: dict | None = None  # an expired drill pause this step resumed


def probe_replica(replica_dsn: str | None, lag_threshold: int, timeout_s: float = 2.0) -> Probe:
    t0 = time.perf_counter()
    if not replica_dsn:
        return Probe(False, 0.0, None, "no replica configured")
    try:
        with psycopg.connect(replica_dsn, connect_timeout=max(1, int(timeout_s)), autocommit=True,
                             application_name="opsproof-plane-gate") as conn:
            conn.execute("select set_config('statement_timeout', %s, false)", (f"{int(timeout_s * 1000)}ms",))
            row = conn.execute(
                """select pg_is_in_recovery(),
                          pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
                          case when pg_is_in_recovery() then pg_is_wal_replay_paused() else false end,
                          (select status from pg_stat_wal_receiver limit 1)""").fetchone()
    except psycopg.OperationalError as exc:
        return Probe(False, (time.perf_counter() - t0) * 1000, None, f"unreachable: {type(exc).__name__}")
    except psycopg.Error as exc:
        return Probe(False, (time.perf_counter() - t0) * 1000, None, f"probe error: {type(exc).__name__}")
    ms = (time.perf_counter() - t0) * 1000
    in_recovery, lag, paused, receiver = row
    lag = max(int(lag or 0), 0)
    paused = bool(paused)
    if not in_recovery:
        return Probe(False, ms, None, "not a standby (not in recovery)")
    if receiver != "streaming":
        return Probe(False, ms, lag, f"wal receiver not streaming ({receiver or 'none'})", paused)
    if paused and lag > 0:
        return Probe(False, ms, lag, f"replay paused with {lag} bytes pending", paused)
    if lag > lag_threshold:
        return Probe(False, ms, lag, f"lag {lag} bytes over threshold {lag_threshold}", paused)
    return Probe(True, ms, lag, "ok", paused)


class Gate:
    def __init__(self, settings: PlaneSettings, conn: psycopg.Connection | None = None) -> None:
        self.settings = settings
        self.conn = conn or common.connect(settings.db_url, app="opsproof-plane-gate")
        self.successes = 0
        self.rollup: dict | None = None      # the last ops.rollup_refresh() document
        self.rollup_supported = True

    def refresh_rollup(self) -> dict | None:
        """One `select ops.rollup_refresh()` (idempotent, closed minutes only; a concurrent one returns at once).
        A contract without the rollup is logged once and left alone."""
        if not self.rollup_supported:
            return None
        try:
            with self.conn.transaction():
                self.rollup = self.conn.execute(ROLLUP_SQL).fetchone()[0]
        except psycopg.errors.UndefinedFunction:
            self.rollup_supported = False
            log.warning("ops.rollup_refresh() is missing (apply migration 20261203001100): no rollup maintenance")
            return None
        return self.rollup

    def step(self) -> StepResult:
        s = self.settings
        p = probe_replica(s.replica_db_url, s.lag_threshold_bytes, s.probe_timeout_s)
        changed = None
        t0 = time.perf_counter()
        self.conn.execute("select 1")  # the primary serves (if it did not, nothing below could be written)
        primary_ms = (time.perf_counter() - t0) * 1000
        with self.conn.transaction():
            self.conn.execute(
                """insert into ops.health_probes (ts, region, ok, latency_ms, lag_bytes, detail)
                   values (now(), 'replica', %s, %s, %s, %s), (now(), 'primary', true, %s, null, 'ok')""",
                (p.ok, p.latency_ms, p.lag_bytes, p.detail, primary_ms))
            fails, target = self.conn.execute(
                """update ops.read_routing
                      set consecutive_failures = case when %s then 0 else consecutive_failures + 1 end
                    where region = 'replica' returning consecutive_failures, target""", (p.ok,)).fetchone()
            self.successes = self.successes + 1 if p.ok else 0
            if not p.ok and target == "replica" and fails >= s.failures_to_cutover:
                target, changed = "primary", "cutover"
            elif p.ok and target == "primary" and self.successes >= s.probes_to_return:
                target, changed = "replica", "return"
            if changed:
                self.conn.execute("update ops.read_routing set target = %s, changed_at = now() where region = 'replica'",
                                  (target,))
                resolved = 0
                if changed == "return":  # the cutover alert is over: the replica serves reads again
                    resolved = self.conn.execute(
                        """update ops.alerts set resolved_at = now() where source = %s and resolved_at is null
                             and title like 'reads cut over to primary%%'""", (COMPONENT,)).rowcount
                common.audit(self.conn, "system@", f"read_routing.{changed}", "ops.read_routing/replica",
                             p.detail if changed == "cutover" else "replica healthy again", None,
                             {"target": target, "consecutive_failures": fails, "lag_bytes": p.lag_bytes,
                              "alerts_resolved": resolved})
        if changed == "cutover":
            try:
                notifier.notify(self.conn, s, severity="high", source=COMPONENT,
                                title=f"reads cut over to primary after {fails} failed replica probes",
                                detail={"last_probe": p.detail, "lag_bytes": p.lag_bytes})
            except Exception as exc:  # noqa: BLE001
                log.warning("cutover alert failed: %s", type(exc).__name__)
        if changed:
            log.warning("read routing %s -> %s (%s)", changed, target, p.detail)
        healed = self.heal_stale_pause() if p.paused else None
        return StepResult(p, fails, target, changed, healed)

    def heal_stale_pause(self) -> dict | None:
        """Resume WAL replay left paused by a drill lever whose lease has expired (its holder died): audited;
        the next healthy probe cuts reads back. Returns what it resumed, or None (nothing to heal)."""
        s = self.settings
        if not s.replica_db_url:
            return None
        try:
            with self.conn.transaction():
                self.conn.execute("select pg_advisory_xact_lock(%s, %s)", PAUSE_LOCK)
                row = self.conn.execute(PAUSE_LEASE_SQL).fetchone()
                if row is None:
                    return None  # no lever pause: an operator's pause is theirs
                aid, run, owner, expires, resumed, now = row
                if resumed or expires is None or expires > now:
                    return None  # resumed already, or its holder is alive and renewing
                with psycopg.connect(s.replica_db_url, autocommit=True, connect_timeout=max(1, int(s.probe_timeout_s)),
                                     application_name="opsproof-plane-gate") as r:
                    if not r.execute("select pg_is_in_recovery() and pg_is_wal_replay_paused()").fetchone()[0]:
                        return None
                    r.execute("select pg_wal_replay_resume()")
                healed = {"pause_audit_id": aid, "pause_run_id": run, "owner": owner,
                          "expired_at": expires.isoformat(), "expired_s_ago": round((now - expires).total_seconds(), 3),
                          "healed_by": COMPONENT}
                common.audit(self.conn, "system@", "replica.replay.resume", "replica",
                             f"pause lease of {owner} (run {run}) expired: WAL replay resumed by the health gate",
                             run, healed)
        except psycopg.Error as exc:
            log.warning("auto-heal of a stale replica pause failed (%s); next probe retries", type(exc).__name__)
            return None
        log.warning("resumed WAL replay left paused by %s (run %s): its lease expired %.1fs ago", owner, run,
                    healed["expired_s_ago"])
        return healed


def run(settings: PlaneSettings, stop: threading.Event) -> None:
    gate = Gate(settings)
    next_probe = 0.0
    next_rollup = 0.0
    last: StepResult | None = None
    while not stop.is_set():
        try:
            if time.monotonic() >= next_rollup:
                next_rollup = time.monotonic() + ROLLUP_INTERVAL_S
                gate.refresh_rollup()
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + settings.probe_interval_s
                last = gate.step()
            elif last is not None and last.probe.paused and last.healed is None:
                last.healed = gate.heal_stale_pause()  # between probes too (30 s apart in production)
            common.heartbeat(gate.conn, COMPONENT, {
                "target": last.target if last else None, "failures": last.consecutive_failures if last else None,
                "last_probe": last.probe.detail if last else None, "interval_s": settings.probe_interval_s,
                "rollup": {k: (gate.rollup or {}).get(k) for k in ("rolled_until", "lag_s", "new_minutes", "raw_rows",
                                                                   "duration_ms")} if gate.rollup else None})
        except psycopg.Error as exc:
            log.warning("gate db error (%s); reconnecting", type(exc).__name__)
            try:
                gate.conn.close()
                gate.conn = common.connect(settings.db_url, app="opsproof-plane-gate")
            except psycopg.Error:
                pass
        stop.wait(max(0.0, min(settings.cycle_s, next_probe - time.monotonic())))
    gate.conn.close()


def main() -> None:
    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    stopper = common.Stopper().install()
    log.info("gate up: probe every %.1fs, cutover after %d failures", settings.probe_interval_s,
             settings.failures_to_cutover)
    run(settings, stopper.event)


if __name__ == "__main__":
    main()

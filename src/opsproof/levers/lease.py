"""A heartbeat that keeps this run's leases alive while the drill runs.

Leases are short (policy [drills] lease_seconds, 10 s by default, 3..120 allowed): a runner killed with
SIGKILL stops counting within one lease, with nobody's help -- readers of ops.effective_flags ignore an
expired override, and the plane's health gate resumes a WAL replay pause whose lease has run out.

While the holder lives, this thread renews every lease it holds every lease/3 seconds, on its own
thread and its own database connection (the drill's work, its connections and its waits never delay a
renewal). Margins: a lease is lost only when no renewal got through for a whole lease, i.e. two
consecutive heartbeats missed; a failed renewal (connection dropped, a slow server) is retried after
at most 1 s, on a fresh connection, until it gets through or the lease has really run out.

What it renews:
- leased flag overrides (ops.flag_overrides.expires_at, `overrides.renew`);
- a replica WAL replay pause (an audited `replica.replay.renew` row extending the pause's expiry,
  `replica.renew_pause`).
A renewal that finds its lever gone (expired because the runner stalled longer than the lease, released
or resumed by someone else) marks the lease lost: the drill errors, naming it.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from opsproof.levers import overrides, replica
from opsproof.levers.common import LeverError, connect

log = logging.getLogger("opsproof.levers.lease")

MIN_LEASE_S = 1.0
RETRY_S = 1.0  # after a failed renewal, try again this soon (never later than interval)


def renew_interval(lease_s: float) -> float:
    """The heartbeat period for a lease: a third of it (two beats may be missed before it runs out)."""
    return max(0.3, float(lease_s) / 3.0)


class LeaseRenewer(threading.Thread):
    def __init__(self, dsn: str, run_id: str, lease_s: float, interval_s: float | None = None) -> None:
        super().__init__(daemon=True, name="opsproof-lease-renewer")
        if not lease_s or float(lease_s) < MIN_LEASE_S:
            raise LeverError(f"lease must be at least {MIN_LEASE_S:g} s, got {lease_s}")
        self.dsn, self.run_id, self.lease_s = dsn, run_id, float(lease_s)
        self.interval_s = float(interval_s) if interval_s else renew_interval(self.lease_s)
        self._ids: set[int] = set()
        self._pauses: set[int] = set()  # audit ids of replica pauses this run holds
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._kick = threading.Event()
        self._conn: psycopg.Connection | None = None
        self.lost: dict[object, str] = {}
        self.renewals = 0
        self.last_ok: float | None = None  # monotonic time of the last renewal that got through
        self.errors: list[str] = []

    # -- registry ----------------------------------------------------------------------------------
    def add(self, oid: int) -> None:
        with self._lock:
            self._ids.add(oid)

    def discard(self, oid: int) -> None:
        with self._lock:
            self._ids.discard(oid)

    def add_pause(self, audit_id: int) -> None:
        with self._lock:
            self._pauses.add(audit_id)

    def discard_pause(self, audit_id: int | None = None) -> None:
        with self._lock:
            if audit_id is None:
                self._pauses.clear()
            else:
                self._pauses.discard(audit_id)

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)

    @property
    def pauses(self) -> list[int]:
        with self._lock:
            return sorted(self._pauses)

    # -- one heartbeat -----------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._close()
            self._conn = connect(self.dsn, connect_timeout=5, application_name="opsproof-lease-renewer")
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def renew_now(self) -> list[int]:
        """Renew every lease held now; returns the override ids renewed. Raises on a connection error."""
        ids, pauses = self.ids, self.pauses
        if not ids and not pauses:
            self.last_ok = time.monotonic()
            return []
        try:
            conn = self._connection()
            renewed = overrides.renew(conn, ids, self.lease_s, self.run_id) if ids else []
            pause_state = {aid: replica.renew_pause(conn, aid, self.lease_s, self.run_id) for aid in pauses}
        except psycopg.Error:
            self._close()  # next try on a fresh connection
            raise
        self.renewals += 1
        self.last_ok = time.monotonic()
        for oid in set(ids) - set(renewed):
            if oid in self.ids:  # still ours (not released meanwhile): the lease was lost
                self.lost[oid] = "lease expired or released by someone else before renewal"
                self.discard(oid)
        for aid, ok in pause_state.items():
            if not ok and aid in self.pauses:
                self.lost[f"replica pause (audit #{aid})"] = ("pause lease expired or replay resumed by someone "
                                                              "else before renewal")
                self.discard_pause(aid)
        return renewed

    def run(self) -> None:
        wait = self.interval_s
        try:
            while not self._halt.is_set():
                self._kick.wait(wait)
                self._kick.clear()
                if self._halt.is_set():
                    break
                try:
                    self.renew_now()
                    wait = self.interval_s
                except Exception as exc:  # noqa: BLE001 - keep trying until the lease itself runs out
                    self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    del self.errors[:-20]
                    log.warning("lease renewal failed (retrying in %.1fs): %s", min(RETRY_S, self.interval_s),
                                self.errors[-1])
                    wait = min(RETRY_S, self.interval_s)
        finally:
            self._close()

    def kick(self) -> None:
        """Renew now (e.g. right after taking a lever)."""
        self._kick.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self._kick.set()
        if self.is_alive():
            self.join(timeout)

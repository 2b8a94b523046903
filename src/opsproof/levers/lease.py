"""A background thread that keeps this run's override leases alive while the drill runs.

Leases are short (policy.drills.lease_seconds); the renewer extends them every lease/3 seconds on its own
connection. If the runner dies (SIGKILL), nobody renews, the leases run out and every reader goes back
to the base flags by itself. A renewal that finds its override gone (expired because the runner stalled
longer than the lease, or released by someone else) marks the lease lost: the drill fails.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from opsproof.levers import overrides

log = logging.getLogger("opsproof.levers.lease")


class LeaseRenewer(threading.Thread):
    def __init__(self, dsn: str, run_id: str, lease_s: float, interval_s: float | None = None) -> None:
        super().__init__(daemon=True, name="opsproof-lease-renewer")
        self.dsn, self.run_id, self.lease_s = dsn, run_id, float(lease_s)
        self.interval_s = interval_s or max(0.5, self.lease_s / 3.0)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._kick = threading.Event()
        self.lost: dict[int, str] = {}
        self.renewals = 0
        self.errors: list[str] = []

    # -- registry ----------------------------------------------------------------------------------
    def add(self, oid: int) -> None:
        with self._lock:
            self._ids.add(oid)

    def discard(self, oid: int) -> None:
        with self._lock:
            self._ids.discard(oid)

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)

    # -- loop --------------------------------------------------------------------------------------
    def renew_now(self) -> list[int]:
        ids = self.ids
        if not ids:
            return []
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                             application_name="opsproof-lease-renewer") as conn:
            renewed = overrides.renew(conn, ids, self.lease_s, self.run_id)
        self.renewals += 1
        for oid in set(ids) - set(renewed):
            if oid in self.ids:  # still ours (not released meanwhile): the lease was lost
                self.lost[oid] = "lease expired or released by someone else before renewal"
                self.discard(oid)
        return renewed

    def run(self) -> None:
        while not self._halt.is_set():
            self._kick.wait(self.interval_s)
            self._kick.clear()
            if self._halt.is_set():
                break
            try:
                self.renew_now()
            except Exception as exc:  # noqa: BLE001 - keep trying until the lease itself runs out
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                log.warning("lease renewal failed: %s", self.errors[-1])

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self._kick.set()
        if self.is_alive():
            self.join(timeout)

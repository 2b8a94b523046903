"""A drill run's levers in one place: the leased overrides it took, the replica pause it holds, the lease
renewer, and `cleanup()` (what the fixture finalizers and the signal handlers call).

All writes go through overrides.py / replica.py (audited). Nothing here is pytest-specific.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opsproof.levers import overrides, replica
from opsproof.levers.common import LeverError, owner_tag
from opsproof.levers.lease import LeaseRenewer


@dataclass
class Taken:
    id: int
    key: str
    value: Any
    reason: str
    taken_at: float
    released_at: float | None = None
    released_by: str | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "value": self.value, "reason": self.reason,
                "taken_at": _iso(self.taken_at), "released_at": _iso(self.released_at),
                "released_by": self.released_by}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


@dataclass
class DrillSession:
    dsn: str = field(repr=False)
    run_id: str
    lease_s: float
    replica_dsn: str | None = field(default=None, repr=False)
    dry_run: bool = False
    owner: str = ""
    taken: list[Taken] = field(default_factory=list)
    replica_paused: bool = False
    pause_audit_id: int | None = None
    interrupted: str | None = None  # the signal that stopped the run (its levers were released under it)
    renewer: LeaseRenewer | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.owner = self.owner or owner_tag(self.run_id)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "DrillSession":
        if not self.dry_run and self.renewer is None:
            self.renewer = LeaseRenewer(self.dsn, self.run_id, self.lease_s)
            self.renewer.start()
        return self

    def stop(self) -> dict:
        result = self.cleanup("drill session ending")
        if self.renewer is not None:
            self.renewer.stop()
        return result

    # -- overrides ---------------------------------------------------------------------------------
    def take(self, key: str, value: Any, reason: str) -> Taken:
        if self.dry_run:
            raise LeverError(f"dry run: would override {key} = {value!r} ({reason}); nothing changed")
        self._refuse_if_interrupted(f"override {key}")
        oid = overrides.take_override(self.dsn, key, value, self.owner, self.run_id, reason, self.lease_s)
        t = Taken(oid, key, value, reason, time.time())
        with self._lock:
            self.taken.append(t)
        if self.renewer is not None:
            self.renewer.add(oid)
        return t

    def release(self, items: list[Taken], why: str = "drill step finished") -> list[int]:
        with self._lock:
            pending = [t for t in items if t.released_at is None]
        if not pending:
            return []
        for t in pending:  # stop renewing first: a renewal racing the release must not count as a lost lease
            if self.renewer is not None:
                self.renewer.discard(t.id)
        released = overrides.release(self.dsn, [t.id for t in pending], self.run_id, why)
        now = time.time()
        with self._lock:
            for t in pending:
                t.released_at = now
                t.released_by = why if t.id in released else "already released/expired"
        return released

    def active(self) -> list[Taken]:
        with self._lock:
            return [t for t in self.taken if t.released_at is None]

    def lost_leases(self) -> dict[int, str]:
        return dict(self.renewer.lost) if self.renewer else {}

    # -- replica -----------------------------------------------------------------------------------
    def pause_replica(self, reason: str) -> int:
        if self.dry_run:
            raise LeverError(f"dry run: would pause WAL replay on the replica ({reason}); nothing changed")
        if not self.replica_dsn:
            raise LeverError("no replica configured (OPSPROOF_REPLICA_DB_URL)")
        self._refuse_if_interrupted("pause WAL replay")
        self.replica_paused = True  # before the write: a signal landing in between still resumes it
        aid = replica.pause_replay(self.dsn, self.replica_dsn, self.run_id, self.owner, reason, self.lease_s)
        self.pause_audit_id = aid
        if self.renewer is not None:
            self.renewer.add_pause(aid)
        return aid

    def resume_replica(self, reason: str = "drill step finished") -> bool:
        if not self.replica_paused or not self.replica_dsn:
            return False
        if self.renewer is not None:  # stop the heartbeat first: a renewal racing the resume is not a lost lease
            self.renewer.discard_pause()
        resumed = replica.resume_replay(self.dsn, self.replica_dsn, self.run_id, reason)
        self.replica_paused = False
        self.pause_audit_id = None
        return resumed

    # -- interruption ------------------------------------------------------------------------------
    def interrupt(self, signame: str) -> dict:
        """A signal stops the run: release everything now; from here on no lever may be taken, and no drill
        may conclude anything (its levers were released under it)."""
        self.interrupted = self.interrupted or signame
        return self.cleanup(f"{signame} received")

    def _refuse_if_interrupted(self, what: str) -> None:
        if self.interrupted:
            raise LeverError(f"run interrupted ({self.interrupted}): refusing to {what}")

    # -- everything --------------------------------------------------------------------------------
    def cleanup(self, why: str) -> dict:
        """Release every override this run still holds (by run id, so even ones taken by a step that
        crashed before it was recorded) and resume a replica this run paused. Idempotent."""
        out: dict = {"released": [], "replica_resumed": False}
        if self.dry_run:
            return out
        errors = []
        for t in self.active():
            if self.renewer is not None:
                self.renewer.discard(t.id)
        try:
            out["released"] = overrides.release_run(self.dsn, self.run_id, why)
            now = time.time()
            with self._lock:
                for t in self.taken:
                    if t.released_at is None:
                        t.released_at, t.released_by = now, why
        except Exception as exc:  # noqa: BLE001
            errors.append(f"release: {type(exc).__name__}: {exc}")
        try:
            out["replica_resumed"] = self.resume_replica(why)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"replica resume: {type(exc).__name__}: {exc}")
        if errors:
            out["errors"] = errors
        return out

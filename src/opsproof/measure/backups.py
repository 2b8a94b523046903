"""Backups opsproof re-establishes itself, in this run (read-only).

A row in ops.backups is a claim, not evidence. A backup counts only when, now:
- it is a file opsproof can read, whose sha256 equals the recorded one, and whose archive lists with
  `pg_restore --list` (a custom/tar pg_dump archive -- the embedded default takes `pg_dump -Fc`); or
- on hosted Supabase (SUPABASE_ACCESS_TOKEN + SUPABASE_PROJECT_REF), the platform's own backup list
  (Management API `GET /v1/projects/{ref}/database/backups`) shows it COMPLETED (or a PITR point).

Candidates are walked newest first until one re-verifies; every candidate tried before it is reported
with why it did not count (row flag only, no sha256, file missing, sha256 mismatch, pg_restore rejects
it, remote location with no API configured). The check decides the verdict; this only measures.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from opsproof.errors import OpsproofError
from opsproof.target.db import Target

ROWS_SQL = ("select id, taken_at, kind, location, bytes, sha256, verified from ops.backups "
            "order by taken_at desc, id desc limit %s")
MAX_ROWS = 20            # walk at most this many recorded rows
LIST_TIMEOUT_S = 120
API_PATH = "GET /v1/projects/{ref}/database/backups"


@dataclass
class Candidate:
    source: str                 # "ops.backups" | "management-api"
    ref: str                    # "ops.backups id 7 (postgres-2026....dump)" | "platform backup 123"
    taken_at: datetime
    verified: bool = False      # re-established in this run
    why: str = ""               # why it does not count (empty when verified)
    how: str = ""               # how it was verified
    kind: str | None = None
    bytes: int | None = None

    def summary(self) -> dict:
        return {"backup": self.ref, "source": self.source, "taken_at": self.taken_at.isoformat(),
                "verified_now": self.verified, **({"how": self.how} if self.verified else {"why_not": self.why})}


@dataclass
class BackupReading:
    newest: Candidate | None                     # the newest backup re-verified in this run (None: none)
    tried: list[Candidate] = field(default_factory=list)   # every candidate looked at, newest first
    ran: list[str] = field(default_factory=list)            # the SQL, commands and API calls that ran
    sources: list[str] = field(default_factory=list)

    @property
    def unverified(self) -> list[Candidate]:
        return [c for c in self.tried if not c.verified]

    def age_hours(self, now: datetime) -> float | None:
        if self.newest is None:
            return None
        return round((now - self.newest.taken_at).total_seconds() / 3600, 2)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_remote(location: str) -> bool:
    return "://" in location


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def verify_file(row: dict, pg_restore: Path | None, ran: list[str], api_configured: bool) -> tuple[bool, str, str]:
    """(verified, why_not, how) for one ops.backups row."""
    location = str(row.get("location") or "")
    name = Path(location).name or location
    if not row.get("verified"):
        return False, "the row is not marked verified by the writer", ""
    if _is_remote(location):
        if api_configured:
            return False, ("remote location: opsproof cannot read it; the platform's backup list "
                           "(Management API) is checked instead"), ""
        return False, "remote location and no Management API configured (SUPABASE_ACCESS_TOKEN + " \
                      "SUPABASE_PROJECT_REF): only the row's flag vouches for it", ""
    path = Path(location)
    if not path.is_absolute():
        return False, f"location {location!r} is not an absolute path opsproof can read", ""
    if not row.get("sha256"):
        return False, "no sha256 recorded: the file cannot be shown to be the one that was taken (row flag only)", ""
    if not path.is_file():
        return False, f"file {name} does not exist", ""
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return False, f"file {name} is unreadable ({exc.strerror or type(exc).__name__})", ""
    ran.append(f"sha256 {path}")
    if digest != str(row["sha256"]).strip().lower():
        return False, f"file {name} does not match its recorded sha256", ""
    if pg_restore is None:
        return False, "no pg_restore available to list the archive (set OPSPROOF_PG_BINDIR)", ""
    cmd = [str(pg_restore), "--list", str(path)]
    ran.append(" ".join(cmd))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=LIST_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"pg_restore --list could not run ({type(exc).__name__})", ""
    if res.returncode != 0:
        err = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return False, f"pg_restore --list rejects {name}: {err}", ""
    entries = [ln for ln in res.stdout.splitlines() if ln.strip() and not ln.startswith(";")]
    if not any("TABLE DATA" in ln for ln in entries):
        return False, f"pg_restore --list of {name} shows no table data ({len(entries)} entries)", ""
    return True, "", f"sha256 matches; pg_restore --list: {len(entries)} entries"


def _pg_restore() -> Path | None:
    try:
        from opsproof.stack.binaries import find_bindir

        return find_bindir() / "pg_restore"
    except OpsproofError:
        return None


def platform_candidates(api, ran: list[str]) -> list[Candidate]:
    """The Management API's own backup list: COMPLETED backups count; a PITR point counts as its time."""
    doc = api.backup_status()
    ran.append(API_PATH.format(ref=api.project_ref))
    out = []
    for b in doc.backups:
        ok = b.status.upper() == "COMPLETED"
        out.append(Candidate(source="management-api", ref=f"platform backup {b.id if b.id is not None else '?'}"
                             f" ({'physical' if b.is_physical_backup else 'logical'})",
                             taken_at=_aware(b.inserted_at), verified=ok,
                             why="" if ok else f"platform status {b.status}",
                             how="listed COMPLETED by the Supabase Management API" if ok else "",
                             kind="platform"))
    latest = doc.physical_backup_data.latest_physical_backup_date_unix
    if doc.pitr_enabled and latest:
        out.append(Candidate(source="management-api", ref="platform PITR latest point",
                             taken_at=datetime.fromtimestamp(latest, tz=timezone.utc), verified=True,
                             how="PITR latest physical backup time from the Supabase Management API",
                             kind="pitr"))
    return out


def measure(target: Target, *, management_api: Callable[[], object] | None = None,
            pg_restore: Path | None | str = "auto", max_rows: int = MAX_ROWS) -> BackupReading:
    """Walk the backups newest first and re-verify each until one holds. `management_api` is a factory
    for a ManagementApi (hosted Supabase) or None when it is not configured."""
    ran: list[str] = [ROWS_SQL % max_rows]
    rows = target.rows(ROWS_SQL, (max_rows,))
    restore = _pg_restore() if pg_restore == "auto" else (Path(pg_restore) if pg_restore else None)
    candidates: list[Candidate] = []
    sources = ["ops.backups"]
    if management_api is not None:
        api = management_api()
        try:
            candidates.extend(platform_candidates(api, ran))
        finally:
            close = getattr(api, "close", None)
            if close:
                close()
        sources.append("management-api")
    pending_rows = [(_aware(r["taken_at"]), r) for r in rows]
    candidates.extend(Candidate(source="ops.backups", taken_at=t,
                                ref=f"ops.backups id {r['id']} ({Path(str(r['location'])).name or r['location']})",
                                kind=r.get("kind"), bytes=r.get("bytes")) for t, r in pending_rows)
    by_ref = {f"ops.backups id {r['id']}": r for _, r in pending_rows}
    candidates.sort(key=lambda c: c.taken_at, reverse=True)
    tried: list[Candidate] = []
    newest = None
    for c in candidates:
        if c.source == "ops.backups":
            row = by_ref[c.ref.split(" (", 1)[0]]
            c.verified, c.why, c.how = verify_file(row, restore, ran, management_api is not None)
        tried.append(c)
        if c.verified:
            newest = c
            break
    return BackupReading(newest=newest, tried=tried, ran=ran, sources=sources)

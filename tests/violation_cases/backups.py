"""A backup counts only when opsproof re-establishes it in this run (file readable, sha256 matches,
`pg_restore --list` lists it; or the Management API lists it). A row's `verified` flag alone never counts.

Most cases add one FRESH row that cannot be re-verified and make the real (re-verifiable) backups stale:
CAD-001 must walk past the fresh row, name it and why, and fail on the stale real one. The last case
leaves nothing verifiable at all: an error, never a pass. Undo deletes what was added and shifts
taken_at back by exactly the same 72 hours (no calendar-day arithmetic across DST).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import psycopg

from violation_cases import Case

_STALE = "update ops.backups set taken_at = taken_at - interval '72 hours' where kind <> 'violation'"
_FRESH = "update ops.backups set taken_at = taken_at + interval '72 hours' where kind <> 'violation'"
_PREFIX = "violation-"


def _real_backup(conn) -> Path:
    loc = conn.execute("select location from ops.backups where kind <> 'violation' and location like '/%' "
                       "and sha256 is not null order by taken_at desc limit 1").fetchone()
    assert loc, "the session stack has no local backup"
    return Path(loc[0])


def _add(kind: str):
    """inject: make the real backups stale, add one fresh `verified` row that cannot be re-verified."""
    def inject(stack) -> None:
        with psycopg.connect(stack.admin_dsn()) as conn:
            real = _real_backup(conn)
            bdir = real.parent
            if kind == "remote":
                location, sha, size = "s3://violation-bucket/postgres-latest.dump", "ab" * 32, 1024
            elif kind == "sha-mismatch":
                copy = bdir / f"{_PREFIX}sha-mismatch.dump"
                shutil.copyfile(real, copy)
                location, sha, size = str(copy), hashlib.sha256(b"not this file").hexdigest(), copy.stat().st_size
            elif kind == "not-an-archive":
                junk = bdir / f"{_PREFIX}garbage.dump"
                junk.write_bytes(b"PGDMP? no: this is not a pg_dump archive\n" * 64)
                location, sha, size = str(junk), hashlib.sha256(junk.read_bytes()).hexdigest(), junk.stat().st_size
            elif kind == "no-sha":
                copy = bdir / f"{_PREFIX}no-sha.dump"
                shutil.copyfile(real, copy)  # a real archive, but nothing ties it to what was taken
                location, sha, size = str(copy), None, copy.stat().st_size
            else:
                raise ValueError(kind)
            conn.execute(_STALE)
            conn.execute("insert into ops.backups (taken_at, kind, location, bytes, sha256, verified) "
                         "values (now() - interval '1 hour', 'violation', %s, %s, %s, true)", (location, size, sha))
    return inject


def _remove(stack) -> None:
    with psycopg.connect(stack.admin_dsn()) as conn:
        for (loc,) in conn.execute("select location from ops.backups where kind = 'violation'").fetchall():
            p = Path(loc)
            if p.is_absolute() and p.name.startswith(_PREFIX):
                p.unlink(missing_ok=True)
        conn.execute("delete from ops.backups where kind = 'violation'")
        conn.execute(_FRESH)


_MARK = "s3://violation-bucket"

CASES = [
    Case(name="CAD-001/remote-row-trusted-on-its-flag", red={"CAD-001": "fail"},
         inject=_add("remote"), undo=_remove,
         why="the newest 'verified' row is an s3:// location with no Management API configured: its flag "
             "alone does not count, and the real local backup is 72 h old"),
    Case(name="CAD-001/sha-mismatch", red={"CAD-001": "fail"},
         inject=_add("sha-mismatch"), undo=_remove,
         why="the newest backup's file does not match its recorded sha256"),
    Case(name="CAD-001/not-an-archive", red={"CAD-001": "fail"},
         inject=_add("not-an-archive"), undo=_remove,
         why="the newest backup's file matches its sha256 but pg_restore --list rejects it"),
    Case(name="CAD-001/verified-without-sha", red={"CAD-001": "fail"},
         inject=_add("no-sha"), undo=_remove,
         why="a row marked verified with no sha256: nothing ties the file to the backup that was taken"),
    Case(name="CAD-001/nothing-verifiable", red={"CAD-001": "error"},
         inject=f"update ops.backups set location = '{_MARK}' || location where location like '/%'",
         undo=f"update ops.backups set location = substr(location, {len(_MARK) + 1}) "
              f"where location like '{_MARK}/%'",
         why="every row points somewhere opsproof cannot read and no API is configured: cannot measure, "
             "never a pass"),
]

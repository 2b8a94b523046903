"""Real backups: pg_dump -Fc of the target into .opsproof/backups/, verified, recorded in ops.backups."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from opsproof.errors import OpsproofError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def take(db_url: str, directory: Path, bindir: Path) -> dict:
    """Dump, verify the archive is readable (pg_restore --list), record the row. Never a row without a file."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"postgres-{stamp}.dump"
    res = subprocess.run([str(bindir / "pg_dump"), "-Fc", "-f", str(target), "--dbname", db_url],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ))
    if res.returncode != 0 or not target.exists():
        raise OpsproofError(f"pg_dump failed: {res.stderr.strip()[-400:]}")
    check = subprocess.run([str(bindir / "pg_restore"), "--list", str(target)], capture_output=True, text=True, timeout=120)
    verified = check.returncode == 0 and "TABLE DATA" in check.stdout
    info = {"kind": "pg_dump", "location": str(target), "bytes": target.stat().st_size,
            "sha256": _sha256(target), "verified": verified}
    with psycopg.connect(db_url) as conn:
        conn.execute("insert into ops.backups (kind, location, bytes, sha256, verified) values (%s, %s, %s, %s, %s)",
                     (info["kind"], info["location"], info["bytes"], info["sha256"], info["verified"]))
    return info

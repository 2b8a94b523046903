"""Find PostgreSQL server binaries: OPSPROOF_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin, pgserver."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from opsproof.errors import UsageError

REQUIRED = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_dump", "pg_restore", "psql")

HOW_TO_GET = (
    "PostgreSQL server binaries not found: set OPSPROOF_PG_BINDIR to a bin dir holding "
    "initdb/pg_ctl/postgres, install them (apt-get install postgresql), "
    "or `pip install 'opsproof[pgserver]'`"
)


def _complete(bindir: Path) -> bool:
    return all((bindir / name).is_file() and os.access(bindir / name, os.X_OK) for name in REQUIRED)


def _pg_config_bindir() -> Path | None:
    exe = shutil.which("pg_config")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return Path(out.stdout.strip())


def _newest_system_bindir() -> Path | None:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    versions = sorted(
        (p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)),
        key=lambda p: [int(x) for x in p.name.split(".")],
        reverse=True,
    )
    for v in versions:
        if _complete(v / "bin"):
            return v / "bin"
    return None


def _pgserver_bindir() -> Path | None:
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        return None
    candidate = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return candidate if _complete(candidate) else None


def find_bindir() -> Path:
    """Return a bin dir with every server binary we need, or raise UsageError (exit 2) saying how to get them."""
    explicit = os.environ.get("OPSPROOF_PG_BINDIR")
    if explicit:
        path = Path(explicit)
        if _complete(path):
            return path
        raise UsageError(f"OPSPROOF_PG_BINDIR={explicit} lacks {', '.join(REQUIRED)}; " + HOW_TO_GET)
    for candidate in (_pg_config_bindir(), _newest_system_bindir(), _pgserver_bindir()):
        if candidate and _complete(candidate):
            return candidate
    raise UsageError(HOW_TO_GET)

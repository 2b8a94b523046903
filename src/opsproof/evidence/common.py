"""Shared pieces of the evidence pack: the error, hashing, and finding packs under a root.

A pack is `<root>/YYYY-MM-DD/` (a directory holding manifest.json) or, after retention compressed it,
`<root>/YYYY-MM-DD.tar.gz` (or `.tar.zst` on a Python whose stdlib has zstd). Anything else under the
root -- hidden staging dirs (`.tmp-*`), dirs being swapped out (`.old-*`), stray files -- is not a pack.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterator

from opsproof.errors import OpsproofError

MANIFEST = "manifest.json"
FORMAT = "opsproof-evidence/1"
TAR_SUFFIXES = (".tar.gz", ".tar.zst")
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.tar\.gz|\.tar\.zst)?$")
_CHUNK = 1 << 20


class EvidenceError(OpsproofError):
    """The evidence pack could not be written/read as asked (exit 1). Messages never contain secret values."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_stream(fh: io.BufferedIOBase) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_day(path: Path) -> date | None:
    """The date a pack path stands for (`2026-11-20`, `2026-11-20.tar.gz`), or None if it is not a pack name."""
    m = _DAY.match(path.name)
    if not m:
        return None
    try:
        return date.fromisoformat(m.group(1))
    except ValueError:
        return None


def zstd_available() -> bool:
    try:
        import compression.zstd  # noqa: F401  (Python >= 3.14)
    except ImportError:
        return False
    return True


def list_packs(root: Path) -> dict[date, Path]:
    """Every pack under root by date. When a day has both a dir and a tarball (a crash mid-compression),
    the dir wins; prune finishes the job next time."""
    root = Path(root)
    found: dict[date, Path] = {}
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        day = pack_day(entry)
        if day is None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            found[day] = entry
        elif entry.is_file() and entry.name.endswith(TAR_SUFFIXES):
            found.setdefault(day, entry)
    return dict(sorted(found.items()))


def is_tar_pack(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)


def open_tar(path: Path) -> tarfile.TarFile:
    """Open a compressed pack for reading (never extracted; members are streamed)."""
    if path.name.endswith(".tar.zst"):
        if not zstd_available():
            raise EvidenceError(f"{path.name}: cannot read .tar.zst (this Python has no zstd in its stdlib)")
        return tarfile.open(path, "r:zst")
    return tarfile.open(path, "r:gz")


@dataclass(frozen=True)
class Member:
    """One entry of a pack, relative to the pack's top (e.g. 'drills/kill_switch.json')."""

    name: str
    kind: str  # "file" | "dir" | "other"


def tar_member_name(prefix: str, raw: str) -> str | None:
    """'2026-11-20/a/b.json' -> 'a/b.json'; None when the member is outside the pack's top dir or unsafe."""
    raw = raw.rstrip("/")
    if raw == prefix:
        return ""
    if not raw.startswith(prefix + "/"):
        return None
    rel = raw[len(prefix) + 1:]
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return rel


def walk_dir(top: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix name, path) of every non-directory entry under top, sorted, without following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames):
            p = base / name
            yield p.relative_to(top).as_posix(), p
        for name in list(dirnames):
            p = base / name
            if p.is_symlink():  # a symlinked dir is an entry, never descended into
                dirnames.remove(name)
                yield p.relative_to(top).as_posix(), p

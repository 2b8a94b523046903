"""Retention: purge packs older than keep_days, compress packs older than compress_after_days into a
deterministic YYYY-MM-DD.tar.gz (YYYY-MM-DD.tar.zst when the stdlib has zstd, Python >= 3.14).

Compression is crash-safe: the archive is written under a hidden temp name, read back and compared
file-by-file with the dir, renamed into place, and only then is the dir removed.
"""

from __future__ import annotations

import gzip
import os
import secrets as _random
import shutil
import tarfile
import time
from datetime import date
from pathlib import Path

from opsproof.evidence.common import (
    EvidenceError, list_packs, open_tar, sha256_file, sha256_stream, tar_member_name, walk_dir, zstd_available,
)

STALE_TEMP_SECONDS = 24 * 3600


def _tarinfo(name: str, *, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def _write_tar(fileobj, pack_dir: Path) -> None:
    prefix = pack_dir.name
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tarinfo(prefix + "/", is_dir=True))
        seen_dirs = {""}
        for rel, p in walk_dir(pack_dir):
            if p.is_symlink() or not p.is_file():
                raise EvidenceError(f"{prefix}/{rel}: not a regular file; refusing to compress")
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in seen_dirs:
                    seen_dirs.add(d)
                    tar.addfile(_tarinfo(f"{prefix}/{d}/", is_dir=True))
            with open(p, "rb") as fh:
                tar.addfile(_tarinfo(f"{prefix}/{rel}", size=p.stat().st_size), fh)


def compress_pack(pack_dir: Path) -> Path:
    """pack_dir -> pack_dir.tar.gz (or .tar.zst); same bytes every time for the same content.
    The dir is removed only after the archive is read back and matches it file for file."""
    pack_dir = Path(pack_dir)
    use_zstd = zstd_available()
    suffix = ".tar.zst" if use_zstd else ".tar.gz"
    final = pack_dir.with_name(pack_dir.name + suffix)
    tmp = pack_dir.with_name(f".tmp-{pack_dir.name}-{_random.token_hex(4)}{suffix}")
    try:
        with open(tmp, "wb") as raw:
            if use_zstd:
                from compression import zstd  # type: ignore[import-not-found]

                with zstd.ZstdFile(raw, "w") as z:
                    _write_tar(z, pack_dir)
            else:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                    _write_tar(gz, pack_dir)
            raw.flush()
            os.fsync(raw.fileno())
        expected = {rel: sha256_file(p) for rel, p in walk_dir(pack_dir)}
        got: dict[str, str] = {}
        with open_tar(tmp) as tar:
            for member in tar:
                rel = tar_member_name(pack_dir.name, member.name)
                if rel and member.isfile():
                    with tar.extractfile(member) as fh:
                        got[rel] = sha256_stream(fh)
        if got != expected:
            raise EvidenceError(f"{pack_dir.name}: archive read-back differs from the pack; kept the dir")
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(pack_dir)
    return final


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def prune(root: Path | str, today: date, keep_days: int = 35, compress_after_days: int = 7) -> dict:
    """Purge packs older than keep_days, compress dirs older than compress_after_days.

    Returns {"purged": [...], "compressed": [...], "kept": [...], "cleaned": [...]} (names). "cleaned" are
    leftovers of crashed runs: hidden .tmp-*/.old-* entries untouched for a day, and a dir whose
    compressed twin already exists (a crash between archive rename and dir removal)."""
    root = Path(root)
    if keep_days < 0 or compress_after_days < 0:
        raise EvidenceError("keep_days and compress_after_days must be >= 0")
    report: dict[str, list[str]] = {"purged": [], "compressed": [], "kept": [], "cleaned": []}
    if not root.is_dir():
        return report
    now = time.time()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".tmp-", ".old-")):
            try:
                age = now - entry.lstat().st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_TEMP_SECONDS:
                _remove(entry)
                report["cleaned"].append(entry.name)
    for day, path in list_packs(root).items():
        twins = [root / f"{day.isoformat()}{s}" for s in (".tar.gz", ".tar.zst")]
        age = (today - day).days
        if age > keep_days:
            for p in {path, *[t for t in twins if t.exists()]}:
                _remove(p)
                report["purged"].append(p.name)
            continue
        if path.is_dir() and any(t.exists() for t in twins):
            # Crash mid-compression left both: trust the archive only if it matches the dir.
            from opsproof.evidence.verify import verify_pack

            twin = next(t for t in twins if t.exists())
            if verify_pack(twin).ok:
                shutil.rmtree(path)
                report["cleaned"].append(path.name)
                path = twin
            else:
                twin.unlink()
                report["cleaned"].append(twin.name)
        if path.is_dir() and age > compress_after_days:
            report["compressed"].append(compress_pack(path).name)
        else:
            report["kept"].append(path.name)
    return report

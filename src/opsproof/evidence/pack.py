"""The pack writer: a run writes into a hidden staging dir; `commit` refuses secrets, writes
manifest.json (sha256 of every file + the run's metadata + the previous pack's manifest hash: a chain)
and swaps the staging dir in as `<root>/YYYY-MM-DD`.

A staging dir has no manifest until commit and is hidden (`.tmp-*`), so a crash mid-run never leaves a
half pack that verifies; a rerun on the same day replaces the pack (old renamed away, new renamed in,
old deleted).
"""

from __future__ import annotations

import json
import os
import secrets as _random
import shutil
import tempfile
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from opsproof import __version__, clock
from opsproof.evidence.common import (
    FORMAT, MANIFEST, EvidenceError, is_tar_pack, list_packs, open_tar, sha256_bytes, sha256_file, walk_dir,
)
from opsproof.evidence.secrets import Secrets, find_secrets, redact
from opsproof.evidence.signing import ALG, PUBKEY, SEAL_FILES, SIG, Signer, public_pem


def sanitize_host(host: str | None) -> str | None:
    """'postgresql://user:pw@db.example:5432/postgres?sslmode=require' -> 'db.example:5432/postgres'."""
    if not host:
        return host
    if "://" not in host and "@" not in host:
        return host
    parts = urlsplit(host if "://" in host else f"//{host}")
    if not parts.hostname:
        return "<redacted>"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname}{port}{parts.path}"


def read_pack_file(pack: Path, rel: str) -> bytes:
    """The raw bytes of one file of a pack dir or compressed pack (streamed, never extracted).
    Raises EvidenceError when absent/unreadable."""
    if is_tar_pack(pack):
        prefix = pack.name.split(".", 1)[0]
        try:
            with open_tar(pack) as tar:
                try:
                    member = tar.getmember(f"{prefix}/{rel}")
                except KeyError:
                    raise EvidenceError(f"{pack.name}/{rel}: missing") from None
                fh = tar.extractfile(member)
                if fh is None:
                    raise EvidenceError(f"{pack.name}/{rel}: not a regular file")
                with fh:
                    return fh.read()
        except EvidenceError:
            raise
        except Exception as exc:  # tarfile/gzip/EOF errors: a damaged archive
            raise EvidenceError(f"{pack.name}: unreadable archive ({type(exc).__name__})") from None
    path = pack / rel
    if path.is_symlink() or not path.is_file():
        raise EvidenceError(f"{pack.name}/{rel}: missing")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EvidenceError(f"{pack.name}/{rel}: unreadable ({type(exc).__name__})") from None


def read_manifest_bytes(pack: Path) -> bytes:
    """The raw manifest.json of a pack dir or compressed pack. Raises EvidenceError when absent/unreadable."""
    return read_pack_file(pack, MANIFEST)


def previous_pack(root: Path, day: date) -> tuple[date, Path] | None:
    """The newest pack dated strictly before `day` (dir or compressed), or None."""
    earlier = [(d, p) for d, p in list_packs(root).items() if d < day]
    return earlier[-1] if earlier else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _safe_name(name: str) -> str:
    """Validate a pack-relative name: relative, no '..', not the manifest."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise EvidenceError(f"bad evidence file name {name!r}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise EvidenceError(f"bad evidence file name {name!r}: must be relative, without '..'")
    if pure.as_posix() == MANIFEST:
        raise EvidenceError(f"{MANIFEST} is written by commit(), not by the run")
    # manifest.sig / pubkey.pem may be staged (copied from a pack being amended): commit drops and rewrites them
    return pure.as_posix()


class PackWriter:
    """Writes one day's pack. Use as a context manager to abort on an exception:

        with PackWriter(root, day) as pack:
            pack.add_json("results.json", results)
            pytest_html_target = pack.path("report.html")
            ...
            pack.commit({"target": "embedded", "host": settings.host(), ...}, secrets=settings.secret_values())
    """

    def __init__(self, root: Path | str, day: date, *, run_id: str | None = None):
        self.root = Path(root)
        self.day = day
        self.run_id = run_id or _random.token_hex(8)
        self.started = clock.now()
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".tmp-{day.isoformat()}-", dir=self.root))
        self.final = self.root / day.isoformat()
        self._state = "open"  # open | committed | aborted

    # --- writing -----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state != "open":
            raise EvidenceError(f"evidence pack for {self.day} is already {self._state}")

    def path(self, name: str) -> Path:
        """A staging path to write into directly (parents created), e.g. path('report.html')."""
        self._check_open()
        target = self.staging / _safe_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_text(self, name: str, text: str) -> Path:
        target = self.path(name)
        target.write_text(text, encoding="utf-8")
        return target

    def add_bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        target.write_bytes(data)
        return target

    def add_json(self, name: str, obj: Any) -> Path:
        return self.add_text(name, json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n")

    def add_file(self, name: str, src_path: Path | str) -> Path:
        src = Path(src_path)
        target = self.path(name)
        if src.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(src, target, symlinks=False)
        else:
            shutil.copyfile(src, target)
        return target

    def files(self) -> list[str]:
        """Staged files (pack-relative names), sorted."""
        return [rel for rel, _ in walk_dir(self.staging)]

    # --- ending ------------------------------------------------------------------------------------
    def abort(self) -> None:
        """Throw the staging dir away (nothing is committed). Idempotent."""
        if self._state == "open":
            self._state = "aborted"
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "PackWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state == "open":
            self.abort()

    def commit(self, metadata: dict | None = None, secrets: Secrets | None = None, *,
               scrub: bool = False, signer: Signer | None = None) -> Path:
        """Seal the pack and swap it in as <root>/YYYY-MM-DD; returns that path.

        Refuses (EvidenceError naming the file, never the secret; staging removed, nothing committed)
        when a staged file, a file name or the metadata contains any of `secrets`. With scrub=True,
        UTF-8 text files are redacted in place first and only what can't be redacted refuses.

        With a signer, manifest.json names the key and manifest.sig (ed25519 over its bytes) + pubkey.pem
        are written next to it. Seal files copied in from a pack being re-sealed (an amendment) are dropped;
        re-sealing a pack that was signed signs again with the configured key when there is one.
        """
        self._check_open()
        try:
            return self._commit(dict(metadata or {}), secrets, scrub, signer)
        except BaseException:
            if self._state == "open":
                self.abort()
            raise

    def _commit(self, metadata: dict, secrets: Secrets | None, scrub: bool, signer: Signer | None) -> Path:
        was_signed = False
        for name in SEAL_FILES:  # the old seal of a pack being amended: it signed the old manifest
            old_seal = self.staging / name
            if old_seal.is_file() or old_seal.is_symlink():
                old_seal.unlink()
                was_signed = True
        if signer is None and was_signed:
            from opsproof.evidence.signing import existing_signer

            signer = existing_signer()
        staged = list(walk_dir(self.staging))
        for rel, p in staged:
            if p.is_symlink() or not p.is_file():
                raise EvidenceError(f"{self.day}/{rel}: not a regular file; a pack holds regular files only")
        if scrub and secrets:
            for rel, label in find_secrets(self.staging, secrets):
                p = self.staging / rel
                try:
                    text = p.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError, IsADirectoryError):
                    continue
                p.write_text(redact(text, secrets), encoding="utf-8")
        hits = find_secrets(self.staging, secrets)
        if hits:
            where = sorted({rel for rel, _ in hits})
            more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
            raise EvidenceError(f"refusing to commit evidence pack {self.day}: {where[0]} contains a secret{more}")

        if "host" in metadata:
            metadata["host"] = sanitize_host(metadata["host"])
        metadata.setdefault("opsproof_version", __version__)
        metadata.setdefault("run_id", self.run_id)
        metadata.setdefault("started", self.started.isoformat())
        metadata.setdefault("finished", clock.now().isoformat())

        prev = previous_pack(self.root, self.day)
        prev_sha = sha256_bytes(read_manifest_bytes(prev[1])) if prev else None

        files = []
        for rel, p in staged:
            with open(p, "rb") as fh:
                try:
                    os.fsync(fh.fileno())
                except OSError:
                    pass
            files.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
        manifest = {
            "format": FORMAT,
            "date": self.day.isoformat(),
            "files": sorted(files, key=lambda f: f["path"]),
            "metadata": metadata,
            "previous_pack": prev[0].isoformat() if prev else None,
            "previous_manifest_sha256": prev_sha,
        }
        if signer is not None:
            manifest["signing"] = {"alg": ALG, "key_sha256": signer.key_sha256}
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
        if find_secrets_in_text(body, secrets):
            raise EvidenceError(f"refusing to commit evidence pack {self.day}: {MANIFEST} metadata contains a secret")
        with open(self.staging / MANIFEST, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        if signer is not None:
            raw = (self.staging / MANIFEST).read_bytes()
            (self.staging / SIG).write_text(signer.sign(raw) + "\n", encoding="ascii")
            (self.staging / PUBKEY).write_bytes(public_pem(signer.public))
        _fsync_dir(self.staging)

        # Swap in: rename the old pack away, rename staging in, delete the old.
        old = None
        if self.final.exists() or self.final.is_symlink():
            old = self.root / f".old-{self.day.isoformat()}-{_random.token_hex(4)}"
            os.rename(self.final, old)
        try:
            os.rename(self.staging, self.final)
        except BaseException:
            if old is not None:
                os.rename(old, self.final)
            raise
        self._state = "committed"
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for suffix in (".tar.gz", ".tar.zst"):  # a compressed pack of the same day is superseded
            stale = self.root / f"{self.day.isoformat()}{suffix}"
            if stale.exists():
                stale.unlink()
        return self.final


def find_secrets_in_text(text: str, secrets: Secrets | None) -> bool:
    return redact(text, secrets) != text

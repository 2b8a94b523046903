"""Verify evidence packs: every listed file present with its sha256, nothing unlisted, and the chain of
previous_manifest_sha256 links across days. Works on pack dirs and on compressed packs (members are
streamed from the tarball, never extracted).

Problems are ordered so the first one is the first thing wrong: packs oldest first; within a pack the
manifest, then files in manifest order, then unlisted files, then its signature; a pack's broken link
right after.

Signatures (see signing.py): a pack whose manifest names a signing key must carry manifest.sig and
pubkey.pem that verify it, always. With trusted keys (`--pubkey`, or the OPSPROOF_SIGNING_KEY setting)
every pack must be signed by one of them: unsigned, or signed by another key, is a problem. Without
trusted keys an unsigned pack is reported as "unsigned" (a note, not a failure) -- a key that travels
with the pack proves only that the pack is self-consistent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from opsproof import clock
from opsproof.evidence.common import (
    FORMAT, MANIFEST, EvidenceError, is_tar_pack, list_packs, open_tar, pack_day, sha256_bytes, sha256_file,
    sha256_stream, tar_member_name, walk_dir,
)
from opsproof.evidence.pack import read_manifest_bytes, read_pack_file
from opsproof.evidence.signing import ALG, PUBKEY, SEAL_FILES, SIG, fingerprint, parse_public_pem, signature_ok


@dataclass
class VerifyResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)  # the packs that were checked, oldest first
    signatures: dict[str, str] = field(default_factory=dict)  # pack -> "unsigned" | key sha256 (hex)
    notes: list[str] = field(default_factory=list)  # not failures: "unsigned", keys not pinned, ...
    trusted: bool = False  # checked against trusted keys

    def __bool__(self) -> bool:
        return self.ok

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None


def _label(pack: Path) -> str:
    return pack.name


def _parse_manifest(label: str, raw: bytes, problems: list[str]) -> dict | None:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{label}/{MANIFEST}: does not parse ({type(exc).__name__})")
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        problems.append(f"{label}/{MANIFEST}: not an evidence manifest (no 'files' list)")
        return None
    if manifest.get("format") != FORMAT:
        problems.append(f"{label}/{MANIFEST}: unknown format {manifest.get('format')!r}")
        return None
    return manifest


def _listed(label: str, manifest: dict, problems: list[str]) -> dict[str, str]:
    listed: dict[str, str] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
            problems.append(f"{label}/{MANIFEST}: malformed file entry")
            continue
        if entry["path"] == MANIFEST or entry["path"] in listed:
            problems.append(f"{label}/{MANIFEST}: duplicate or reserved entry {entry['path']}")
            continue
        listed[entry["path"]] = entry["sha256"]
    return listed


def _actual_dir(pack: Path, problems: list[str]) -> dict[str, str | None]:
    actual: dict[str, str | None] = {}
    for rel, p in walk_dir(pack):
        if rel == MANIFEST:
            continue
        if p.is_symlink() or not p.is_file():
            problems.append(f"{pack.name}/{rel}: not a regular file")
            actual[rel] = None
            continue
        actual[rel] = sha256_file(p)
    return actual


def _actual_tar(pack: Path, problems: list[str]) -> dict[str, str | None]:
    prefix = pack.name.split(".", 1)[0]
    actual: dict[str, str | None] = {}
    with open_tar(pack) as tar:
        for member in tar:
            rel = tar_member_name(prefix, member.name)
            if rel is None:
                problems.append(f"{pack.name}: member {member.name!r} is outside the pack")
                continue
            if rel == "" or member.isdir() or rel == MANIFEST:
                continue
            if not member.isfile():
                problems.append(f"{pack.name}/{rel}: not a regular file")
                actual[rel] = None
                continue
            fh = tar.extractfile(member)
            with fh:
                actual[rel] = sha256_stream(fh)
    return actual


def _signature(pack: Path, label: str, manifest: dict, raw: bytes, trusted: list, problems: list[str]) -> str:
    """Check the seal of one pack; returns "unsigned" or the signing key's sha256."""
    def member(name: str) -> bytes | None:
        try:
            return read_pack_file(pack, name)
        except EvidenceError:
            return None

    sig, pub_raw = member(SIG), member(PUBKEY)
    claim = manifest.get("signing")
    if claim is None:
        if sig is not None or pub_raw is not None:
            problems.append(f"{label}/{SIG}: present, but {MANIFEST} names no signing key")
        elif trusted:
            problems.append(f"{label}: unsigned (a signing key is configured: every pack must be signed)")
        return "unsigned"
    if not isinstance(claim, dict) or claim.get("alg") != ALG or not isinstance(claim.get("key_sha256"), str):
        problems.append(f"{label}/{MANIFEST}: malformed 'signing' entry")
        return "unsigned"
    fp = claim["key_sha256"]
    if sig is None:
        problems.append(f"{label}/{SIG}: missing ({MANIFEST} says it is signed by key {fp[:16]})")
        return fp
    shipped = parse_public_pem(pub_raw) if pub_raw is not None else None
    if pub_raw is not None and (shipped is None or fingerprint(shipped) != fp):
        problems.append(f"{label}/{PUBKEY}: not the key {MANIFEST} names")
    if trusted:
        key = next((k for k in trusted if fingerprint(k) == fp), None)
        if key is None:
            problems.append(f"{label}: signed by key {fp[:16]}, which is not a trusted key")
            return fp
    else:
        key = shipped
        if key is None:
            problems.append(f"{label}/{PUBKEY}: missing or not an ed25519 public key")
            return fp
    try:
        text = sig.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not signature_ok(key, raw, text):
        problems.append(f"{label}/{SIG}: signature does not verify {MANIFEST}")
    return fp


def verify_pack(path: Path | str, trusted: list | None = None) -> VerifyResult:
    """Check one pack (dir, .tar.gz or .tar.zst): manifest parses, every listed file exists with the
    right sha256, no unlisted files (manifest.json and its seal aside), the manifest's date matches the
    pack name, and its signature (see the module doc; `trusted` = ed25519 public keys)."""
    trusted = list(trusted or [])
    pack = Path(path)
    label = _label(pack)
    problems: list[str] = []
    if not pack.exists():
        return VerifyResult(False, [f"{label}: missing"], [label])
    if pack.is_file() and not is_tar_pack(pack):
        return VerifyResult(False, [f"{label}: not an evidence pack (expected a dir or .tar.gz/.tar.zst)"], [label])
    try:
        raw = read_manifest_bytes(pack)
    except EvidenceError as exc:
        return VerifyResult(False, [str(exc)], [label])
    manifest = _parse_manifest(label, raw, problems)
    if manifest is None:
        return VerifyResult(False, problems, [label])
    day = pack_day(pack)
    if day is not None and manifest.get("date") != day.isoformat():
        problems.append(f"{label}/{MANIFEST}: dated {manifest.get('date')!r}, but the pack is {day.isoformat()}")
    listed = _listed(label, manifest, problems)
    try:
        actual = _actual_tar(pack, problems) if is_tar_pack(pack) else _actual_dir(pack, problems)
    except EvidenceError as exc:
        problems.append(str(exc))
        return VerifyResult(False, problems, [label])
    except Exception as exc:  # a damaged archive
        problems.append(f"{label}: unreadable archive ({type(exc).__name__})")
        return VerifyResult(False, problems, [label])
    for rel in sorted(listed):
        if rel not in actual:
            problems.append(f"{label}/{rel}: missing")
        elif actual[rel] is not None and actual[rel] != listed[rel]:
            problems.append(f"{label}/{rel}: sha256 mismatch")
    for rel in sorted(set(actual) - set(listed) - set(SEAL_FILES)):
        problems.append(f"{label}/{rel}: not listed in {MANIFEST}")
    status = _signature(pack, label, manifest, raw, trusted, problems)
    notes = []
    if status == "unsigned" and not trusted:
        notes.append(f"{label}: unsigned")
    return VerifyResult(not problems, problems, [label], {label: status}, notes, bool(trusted))


def _manifest_link(pack: Path) -> tuple[str | None, bytes | None]:
    """(previous_manifest_sha256 recorded in this pack, raw manifest bytes) -- (None, None) if unreadable."""
    try:
        raw = read_manifest_bytes(pack)
        return json.loads(raw.decode("utf-8")).get("previous_manifest_sha256"), raw
    except (EvidenceError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None, None


def verify_chain(root: Path | str, days: int = 35, today: date | None = None, *,
                 require_today: bool = False, trusted: list | None = None) -> VerifyResult:
    """Verify every pack dated today-days .. today (what retention with keep_days=days keeps) and the links:
    each pack's previous_manifest_sha256 must equal the sha256 of the newest earlier pack's manifest.json
    (for the oldest pack in the window, the earlier pack is checked when it is still on disk; when
    retention purged it, the link can't be checked and isn't a problem). An empty window is a problem."""
    root = Path(root)
    today = today or clock.today()
    start = today - timedelta(days=max(days, 0))
    packs = list_packs(root)
    in_window = [(d, p) for d, p in packs.items() if start <= d <= today]
    problems: list[str] = []
    checked: list[str] = []
    signatures: dict[str, str] = {}
    notes: list[str] = []
    trusted = list(trusted or [])
    if not in_window:
        return VerifyResult(False, [f"{root}: no evidence pack dated {start} .. {today}"], [], trusted=bool(trusted))
    ordered = list(packs.items())
    index = {d: i for i, (d, _) in enumerate(ordered)}
    for d, p in in_window:
        result = verify_pack(p, trusted)
        checked.append(p.name)
        problems.extend(result.problems)
        signatures.update(result.signatures)
        status, before = result.signatures.get(p.name), list(signatures.values())[:-1]
        if not trusted and before and status is not None:
            if status == "unsigned" and before[-1] != "unsigned":
                notes.append(f"{p.name}: unsigned, but the previous pack was signed (signature dropped?)")
            elif status != "unsigned" and before[-1] not in ("unsigned", status):
                notes.append(f"{p.name}: signed by key {status[:16]}, the previous pack by {before[-1][:16]} "
                             "(key changed: pin the key with --pubkey)")
        recorded, raw = _manifest_link(p)
        if raw is None:
            continue  # already reported by verify_pack
        i = index[d]
        if i == 0:
            continue  # nothing earlier on disk: first pack ever, or its predecessor was purged
        prev_day, prev_path = ordered[i - 1]
        _, prev_raw = _manifest_link(prev_path)
        if prev_raw is None:
            problems.append(f"{p.name}: broken link: previous pack {prev_path.name} has no readable {MANIFEST}")
            continue
        actual = sha256_bytes(prev_raw)
        if recorded is None:
            problems.append(f"{p.name}: broken link: no previous_manifest_sha256, but {prev_path.name} exists")
        elif recorded != actual:
            problems.append(f"{p.name}: broken link: previous_manifest_sha256 does not match "
                            f"{prev_path.name}/{MANIFEST}")
    if require_today and today not in packs:
        problems.append(f"{today.isoformat()}: missing (no evidence pack for today)")
    unsigned = [n for n, s in signatures.items() if s == "unsigned"]
    if unsigned and not trusted:
        notes.insert(0, f"{len(unsigned)} of {len(signatures)} pack(s) unsigned (no signing key configured)")
    return VerifyResult(not problems, problems, checked, signatures, notes, bool(trusted))

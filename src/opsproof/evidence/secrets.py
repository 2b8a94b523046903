"""Secrets never reach a report, a log or an artifact: find them (in any file, text or bytes, inside
tarballs too, and in file names) and redact them.

A secret is matched in the encodings it would take on its way into an artifact: raw UTF-8,
percent-encoded (a DSN's password), JSON-escaped, HTML/XML-escaped (pytest-html, junit).
Values shorter than 8 characters are skipped (too many false positives to be a useful signal).
Results name the file and *which* secret (its index in the list, or its key in a mapping) -- never the value.
"""

from __future__ import annotations

import html
import json
import tarfile
from pathlib import Path
from typing import Iterable, Mapping, Union
from urllib.parse import quote

from opsproof.evidence.common import TAR_SUFFIXES, open_tar, walk_dir

MIN_SECRET_LEN = 8
REDACTED = "[REDACTED]"
_CHUNK = 1 << 20

Secrets = Union[Iterable[str], Mapping[str, str]]


def _labelled(secrets: Secrets | None) -> list[tuple[object, str]]:
    if not secrets:
        return []
    items = secrets.items() if isinstance(secrets, Mapping) else enumerate(secrets)
    return [(label, value) for label, value in items if isinstance(value, str) and len(value) >= MIN_SECRET_LEN]


def variants(secret: str) -> list[str]:
    """The forms a secret takes once written into JSON, a URL, HTML or XML; longest first."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="/:@"),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret, quote=True),
        html.escape(secret, quote=False),
        html.escape(secret, quote=True).replace("&#x27;", "&apos;"),
    }
    return sorted((f for f in forms if f), key=lambda f: (-len(f), f))


def _needles(secrets: Secrets | None) -> list[tuple[object, bytes]]:
    out = []
    for label, value in _labelled(secrets):
        for form in variants(value):
            out.append((label, form.encode("utf-8")))
            try:
                out.append((label, form.encode("utf-16-le")))
            except UnicodeEncodeError:
                pass
    return out


def _scan_stream(fh, needles: list[tuple[object, bytes]]) -> list[object]:
    """Labels of the needles found in a binary stream (chunked, with overlap, so big files stay cheap)."""
    if not needles:
        return []
    overlap = max(len(n) for _, n in needles) - 1
    found: list[object] = []
    tail = b""
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        window = tail + chunk
        for label, needle in needles:
            if label not in found and needle in window:
                found.append(label)
        tail = window[-overlap:] if overlap > 0 else b""
    return found


def _scan_name(name: str, needles: list[tuple[object, bytes]]) -> list[object]:
    raw = name.encode("utf-8", "surrogateescape")
    found: list[object] = []
    for label, needle in needles:
        if label not in found and needle in raw:
            found.append(label)
    return found


def _scan_tar(path: Path, display: str, needles) -> list[tuple[str, object]]:
    hits: list[tuple[str, object]] = []
    try:
        with open_tar(path) as tar:
            for member in tar:
                where = f"{display}/{member.name}"
                for label in _scan_name(member.name, needles):
                    hits.append((where, label))
                if member.isfile():
                    fh = tar.extractfile(member)
                    if fh is not None:
                        with fh:
                            for label in _scan_stream(fh, needles):
                                hits.append((where, label))
    except (tarfile.TarError, OSError, EOFError):
        # Unreadable as a tarball: still scan the raw bytes.
        with open(path, "rb") as fh:
            hits.extend((display, label) for label in _scan_stream(fh, needles))
    return hits


def _scan_file(path: Path, display: str, needles) -> list[tuple[str, object]]:
    hits = [(display, label) for label in _scan_name(path.name, needles)]
    if path.is_symlink():
        return hits
    if path.name.endswith(TAR_SUFFIXES) or path.name.endswith((".tgz", ".tar")):
        # The compressed bytes can't hide a secret in plain sight, but its members can.
        hits.extend(_scan_tar(path, display, needles))
        with open(path, "rb") as fh:
            hits.extend((display, label) for label in _scan_stream(fh, needles) if (display, label) not in hits)
        return hits
    with open(path, "rb") as fh:
        hits.extend((display, label) for label in _scan_stream(fh, needles))
    return hits


def find_secrets(root_or_file: Path | str, secrets: Secrets | None) -> list[tuple[str, object]]:
    """[(file, which)] for every file under root_or_file (or that one file) containing any secret.

    `file` is relative to root_or_file (members of tarballs as 'pack.tar.gz/member'); `which` is the
    secret's index in the list (or key in a mapping). Secret values never appear in the result.
    """
    target = Path(root_or_file)
    needles = _needles(secrets)
    if not needles or not target.exists():
        return []
    if target.is_file():
        return _scan_file(target, target.name, needles)
    hits: list[tuple[str, object]] = []
    for rel, path in walk_dir(target):
        for part_label in _scan_name(rel, needles):
            if (rel, part_label) not in hits:
                hits.append((rel, part_label))
        if path.is_file() and not path.is_symlink():
            for hit in _scan_file(path, rel, needles):
                if hit not in hits:
                    hits.append(hit)
    return hits


def redact(text: str | bytes, secrets: Secrets | None, replacement: str = REDACTED) -> str | bytes:
    """Replace every known form of every secret (>= 8 chars) with `replacement`."""
    forms: list[str] = []
    for _, value in _labelled(secrets):
        forms.extend(variants(value))
    forms.sort(key=len, reverse=True)
    if isinstance(text, bytes):
        for form in forms:
            text = text.replace(form.encode("utf-8"), replacement.encode("utf-8"))
        return text
    for form in forms:
        text = text.replace(form, replacement)
    return text

"""The audit-chain anchor: each day's pack records the head of ops.audit_log (last id, its hash, the row
count) in audit_anchor.json; the next run requires the chain to EXTEND that anchor.

Why: ops.verify_audit_chain() only proves the chain is self-consistent. Someone with write access to the
database can rewrite a row and recompute every hash after it, or delete the newest rows, and the chain
still verifies. A head recorded in an earlier, sealed (hashed, chained, signed) pack cannot be moved
without also forging the evidence. Checks read here (read-only); only the pack writer writes packs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from opsproof.evidence.common import MANIFEST, EvidenceError, list_packs
from opsproof.evidence.pack import read_manifest_bytes, read_pack_file, sanitize_host

ANCHOR = "audit_anchor.json"
KEYS = ("last_id", "last_hash", "rows")


@dataclass(frozen=True)
class PreviousAnchor:
    pack: str          # pack name, e.g. "2026-12-02"
    day: date
    anchor: dict       # {"last_id", "last_hash", "rows", ...}


def make(last_id: int, last_hash: str, rows: int, **extra) -> dict:
    return {"last_id": int(last_id), "last_hash": str(last_hash), "rows": int(rows), **extra}


def _valid(anchor: object) -> bool:
    return (isinstance(anchor, dict) and isinstance(anchor.get("last_id"), int)
            and isinstance(anchor.get("last_hash"), str) and isinstance(anchor.get("rows"), int))


def previous_anchor(root: Path | str, day: date, host: str | None, trusted: list | None = None) -> PreviousAnchor | None:
    """The anchor of the newest pack dated before `day` for the same target (manifest metadata.host) that
    holds one; None when there is no such pack (the first day for this target). The pack must verify
    (files, manifest, signature -- against `trusted` keys when given): an anchor from a pack that does not
    verify cannot be trusted and raises EvidenceError naming the pack and the problem."""
    from opsproof.evidence.verify import verify_pack  # verify imports pack; keep the import graph flat

    want = sanitize_host(host)
    for d, pack in reversed([(d, p) for d, p in list_packs(Path(root)).items() if d < day]):
        try:
            manifest = json.loads(read_manifest_bytes(pack).decode("utf-8"))
        except (EvidenceError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvidenceError(f"earlier evidence pack {pack.name} has no readable {MANIFEST} ({exc}): "
                                "its audit anchor cannot be trusted") from None
        meta = manifest.get("metadata") if isinstance(manifest, dict) else None
        if not isinstance(meta, dict) or meta.get("host") != want:
            continue  # another target's pack: its own chain
        listed = {f.get("path") for f in manifest.get("files", []) if isinstance(f, dict)}
        if ANCHOR not in listed:
            continue  # a day without CAD-004 (drills only, an older format): look further back
        result = verify_pack(pack, trusted)
        if not result.ok:
            raise EvidenceError(f"earlier evidence pack {pack.name} does not verify ({result.first_problem}): "
                                "its audit anchor cannot be trusted")
        try:
            anchor = json.loads(read_pack_file(pack, ANCHOR).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            anchor = None
        if not _valid(anchor):
            raise EvidenceError(f"{pack.name}/{ANCHOR}: not an audit anchor ({', '.join(KEYS)})")
        return PreviousAnchor(pack.name, d, anchor)
    return None


def compare(anchor: dict, anchored_row_hash: str | None, rows_up_to_anchor: int, rows_now: int) -> list[str]:
    """What changed since the anchor (empty = the chain extends it):
    - the anchored row must still exist with the same hash (a rewrite at or before it, with every hash
      after it recomputed, changes it; deleting the tail removes it);
    - the rows up to and including it must be exactly as many as then (no row removed or inserted);
    - the table must not have shrunk."""
    problems = []
    last_id, rows = anchor["last_id"], anchor["rows"]
    if anchored_row_hash is None:
        problems.append(f"anchored row id {last_id} no longer exists (rows deleted from the tail?)")
    elif anchored_row_hash != anchor["last_hash"]:
        problems.append(f"anchored row id {last_id} now hashes to {anchored_row_hash[:12]}..., was "
                        f"{anchor['last_hash'][:12]}... (a row at or before it was rewritten and the chain recomputed)")
    if rows_up_to_anchor != rows:
        problems.append(f"{rows_up_to_anchor} rows up to id {last_id}, the anchor recorded {rows} "
                        "(rows removed or inserted)")
    if rows_now < rows:
        problems.append(f"ops.audit_log shrank: {rows_now} rows now, {rows} at the anchor")
    return problems

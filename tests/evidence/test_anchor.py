"""The audit-chain anchor: read from the newest earlier pack for the same target, trusted only when that
pack verifies; compare() names what changed (rewrite + recompute, deleted tail, shrunk table)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from opsproof.evidence import PackWriter, compress_pack
from opsproof.evidence.anchor import ANCHOR, compare, make, previous_anchor
from opsproof.evidence.common import EvidenceError
from opsproof.evidence.signing import generate

DAY = date(2026, 11, 20)
HOST = "127.0.0.1:54329/postgres"


def pack_with(root, day, anchor=None, host=HOST, signer=None):
    w = PackWriter(root, day)
    w.add_json("results.json", {"controls": []})
    if anchor is not None:
        w.add_json(ANCHOR, anchor)
    return w.commit({"target": "embedded", "host": host}, signer=signer)


def test_first_day_has_no_anchor(tmp_path):
    assert previous_anchor(tmp_path / "missing", DAY, HOST) is None
    pack_with(tmp_path, DAY, make(5, "aa" * 32, 5, target=HOST))
    assert previous_anchor(tmp_path, DAY, HOST) is None  # today's own pack is not "earlier"


def test_newest_earlier_pack_for_the_same_target_wins(tmp_path):
    pack_with(tmp_path, DAY - timedelta(days=3), make(3, "a3" * 32, 3, target=HOST))
    pack_with(tmp_path, DAY - timedelta(days=2), make(4, "a4" * 32, 4, target=HOST))
    pack_with(tmp_path, DAY - timedelta(days=1))  # a drills-only day: no anchor, look further back
    other = tmp_path / "other"
    pack_with(other, DAY - timedelta(days=1), make(99, "ff" * 32, 99, target="db.elsewhere:5432/postgres"),
              host="db.elsewhere:5432/postgres")
    prev = previous_anchor(tmp_path, DAY, HOST)
    assert prev.pack == (DAY - timedelta(days=2)).isoformat() and prev.anchor["last_id"] == 4
    assert previous_anchor(other, DAY, HOST) is None  # another target's chain is not ours


def test_anchor_from_a_compressed_pack(tmp_path):
    p = pack_with(tmp_path, DAY - timedelta(days=9), make(7, "b7" * 32, 7, target=HOST))
    compress_pack(p)
    prev = previous_anchor(tmp_path, DAY, HOST)
    assert prev.pack.endswith(".tar.gz") and prev.anchor["rows"] == 7


def test_an_edited_anchor_is_not_trusted(tmp_path):
    p = pack_with(tmp_path, DAY - timedelta(days=1), make(7, "b7" * 32, 7, target=HOST))
    (p / ANCHOR).write_text(json.dumps(make(9, "c9" * 32, 9, target=HOST)))
    with pytest.raises(EvidenceError, match="does not verify .*audit_anchor.json: sha256 mismatch"):
        previous_anchor(tmp_path, DAY, HOST)


def test_a_pack_resigned_by_another_key_is_not_trusted_when_a_key_is_configured(tmp_path):
    key, other = generate(tmp_path / "k.pem"), generate(tmp_path / "o.pem")
    pack_with(tmp_path / "ev", DAY - timedelta(days=1), make(7, "b7" * 32, 7, target=HOST), signer=other)
    assert previous_anchor(tmp_path / "ev", DAY, HOST).anchor["last_id"] == 7  # no key configured
    with pytest.raises(EvidenceError, match="not a trusted key"):
        previous_anchor(tmp_path / "ev", DAY, HOST, [key.public])


def test_compare():
    a = make(10, "aa" * 32, 10)
    assert compare(a, "aa" * 32, 10, 14) == []  # extended by four rows
    rewritten = compare(a, "bb" * 32, 10, 14)
    assert len(rewritten) == 1 and "rewritten" in rewritten[0]
    gone = compare(a, None, 8, 8)
    assert "no longer exists" in gone[0] and "rows removed" in gone[1] and "shrank" in gone[2]
    assert "rows removed or inserted" in compare(a, "aa" * 32, 9, 12)[0]

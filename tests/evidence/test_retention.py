"""Retention: purge > keep_days, compress > compress_after_days to a deterministic tar.gz that still verifies."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import date, timedelta

from opsproof.evidence import PackWriter, compress_pack, prune, verify_chain, verify_pack

TODAY = date(2026, 11, 30)


def make_pack(root, day):
    w = PackWriter(root, day)
    w.add_json("results.json", {"day": day.isoformat()})
    w.add_json("drills/kill_switch.json", {"ok": True})
    w.add_text("trace-sample.txt", "trace 1\n")
    return w.commit({"target": "embedded"})


def test_prune_purges_compresses_and_chain_still_verifies(tmp_path):
    ages = [40, 36, 35, 10, 8, 7, 1, 0]
    for age in ages:
        make_pack(tmp_path, TODAY - timedelta(days=age))
    assert verify_chain(tmp_path, days=60, today=TODAY).ok

    report = prune(tmp_path, TODAY, keep_days=35, compress_after_days=7)
    d = lambda age: (TODAY - timedelta(days=age)).isoformat()  # noqa: E731
    assert sorted(report["purged"]) == [d(40), d(36)]
    assert sorted(report["compressed"]) == sorted(f"{d(a)}.tar.gz" for a in (35, 10, 8))
    assert not (tmp_path / d(40)).exists() and not (tmp_path / d(10)).exists()
    assert (tmp_path / f"{d(10)}.tar.gz").is_file()
    assert (tmp_path / d(7)).is_dir() and (tmp_path / d(0)).is_dir()

    assert verify_pack(tmp_path / f"{d(10)}.tar.gz").ok
    res = verify_chain(tmp_path, days=35, today=TODAY)
    assert res.ok, res.problems
    assert res.packs[:3] == [f"{d(a)}.tar.gz" for a in (35, 10, 8)]
    assert res.packs[3:] == [d(7), d(1), d(0)]

    again = prune(tmp_path, TODAY, keep_days=35, compress_after_days=7)  # idempotent
    assert again["purged"] == [] and again["compressed"] == []


def test_tampered_compressed_pack_is_named(tmp_path):
    pack = make_pack(tmp_path, TODAY - timedelta(days=10))
    make_pack(tmp_path, TODAY)
    archive = compress_pack(pack)
    # rebuild the archive with one member changed
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m, data in members:
            if m.name.endswith("results.json"):
                data = b'{"day": "forged"}'
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(gzip.compress(buf.getvalue()))
    name = archive.name
    res = verify_pack(archive)
    assert not res.ok and res.problems == [f"{name}/results.json: sha256 mismatch"]
    assert verify_chain(tmp_path, today=TODAY).problems[0] == f"{name}/results.json: sha256 mismatch"


def test_compression_is_deterministic(tmp_path):
    a = make_pack(tmp_path / "a", TODAY)
    b_root = tmp_path / "b"
    b_root.mkdir()
    import shutil

    shutil.copytree(a, b_root / a.name)
    (b_root / a.name / "results.json").touch()  # different mtime, same bytes
    assert compress_pack(a).read_bytes() == compress_pack(b_root / a.name).read_bytes()


def test_crash_mid_compression_leftovers_are_resolved(tmp_path):
    pack = make_pack(tmp_path, TODAY - timedelta(days=10))
    import shutil

    keep = tmp_path / "keep"
    shutil.copytree(pack, keep)
    compress_pack(pack)
    shutil.copytree(keep, pack)  # as if the process died before removing the dir
    shutil.rmtree(keep)
    report = prune(tmp_path, TODAY)
    assert report["cleaned"] == [pack.name]
    assert not pack.exists() and verify_chain(tmp_path, today=TODAY).ok


def test_compressed_pack_manifest_links_forward(tmp_path):
    make_pack(tmp_path, TODAY - timedelta(days=9))
    prune(tmp_path, TODAY, compress_after_days=7)
    newer = make_pack(tmp_path, TODAY)  # previous pack is compressed: the link still uses its manifest bytes
    assert json.loads((newer / "manifest.json").read_text())["previous_manifest_sha256"]
    assert verify_chain(tmp_path, today=TODAY).ok

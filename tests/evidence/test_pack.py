"""Evidence pack: commit + verify, tamper detection, the chain, atomic same-day rerun, crashed staging."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from opsproof.evidence import EvidenceError, PackWriter, list_packs, verify_chain, verify_pack
from opsproof.evidence.common import sha256_file

DAY = date(2026, 11, 20)
META = {"target": "embedded", "host": "postgresql://postgres:hunter2hunter2@127.0.0.1:54329/postgres",
        "policy_sha256": "ab" * 32}


def make_pack(root: Path, day: date, marker: str = "v1") -> Path:
    w = PackWriter(root, day)
    w.add_json("results.json", {"controls": [{"id": "SLO-003", "verdict": "pass", "marker": marker}]})
    w.add_json("flags.json", {"autonomy.mode": "FULL"})
    w.add_text("alerts.sql.out", "select ...;\n(0 rows)\n")
    w.add_json("drills/kill_switch.json", {"ok": True})
    w.path("allure-results").mkdir()
    (w.path("allure-results/abc-result.json")).write_text('{"name": "t"}')
    w.path("report.html").write_text("<html>ok</html>")
    return w.commit(META)


def test_commit_then_verify_ok(tmp_path):
    pack = make_pack(tmp_path, DAY)
    assert pack == tmp_path / "2026-11-20" and pack.is_dir()
    manifest = json.loads((pack / "manifest.json").read_text())
    paths = [f["path"] for f in manifest["files"]]
    assert paths == sorted(paths)
    assert "manifest.json" not in paths and "drills/kill_switch.json" in paths
    assert manifest["files"][0]["sha256"] == sha256_file(pack / manifest["files"][0]["path"])
    md = manifest["metadata"]
    assert md["host"] == "127.0.0.1:54329/postgres"  # credentials stripped
    assert md["target"] == "embedded" and md["opsproof_version"] and md["run_id"] and md["started"] and md["finished"]
    assert manifest["previous_manifest_sha256"] is None and manifest["date"] == "2026-11-20"
    assert verify_pack(pack).ok
    assert verify_chain(tmp_path, today=DAY).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_tampered_file_is_named(tmp_path):
    pack = make_pack(tmp_path, DAY)
    (pack / "results.json").write_text('{"controls": []}')
    res = verify_pack(pack)
    assert not res.ok and res.problems[0] == "2026-11-20/results.json: sha256 mismatch"
    chain = verify_chain(tmp_path, today=DAY)
    assert not chain.ok and chain.problems[0] == "2026-11-20/results.json: sha256 mismatch"


def test_deleted_file_is_named(tmp_path):
    pack = make_pack(tmp_path, DAY)
    (pack / "drills" / "kill_switch.json").unlink()
    res = verify_pack(pack)
    assert not res.ok and res.problems == ["2026-11-20/drills/kill_switch.json: missing"]


def test_extra_file_is_named(tmp_path):
    pack = make_pack(tmp_path, DAY)
    (pack / "drills" / "sneaky.json").write_text("{}")
    res = verify_pack(pack)
    assert not res.ok and res.problems == ["2026-11-20/drills/sneaky.json: not listed in manifest.json"]


def test_deleted_or_garbled_manifest(tmp_path):
    pack = make_pack(tmp_path, DAY)
    (pack / "manifest.json").write_text("{not json")
    assert verify_pack(pack).problems[0].startswith("2026-11-20/manifest.json: does not parse")
    (pack / "manifest.json").unlink()
    assert verify_pack(pack).problems == ["2026-11-20/manifest.json: missing"]


def test_pack_copied_to_another_day_is_caught(tmp_path):
    import shutil

    pack = make_pack(tmp_path, DAY)
    shutil.copytree(pack, tmp_path / "2026-11-21")
    res = verify_pack(tmp_path / "2026-11-21")
    assert not res.ok and "dated '2026-11-20'" in res.problems[0]


def test_chain_across_three_days_then_broken_middle(tmp_path):
    days = [DAY, DAY + timedelta(days=1), DAY + timedelta(days=3)]  # a gap day is fine: links skip it
    for d in days:
        make_pack(tmp_path, d)
    m2 = json.loads((tmp_path / "2026-11-21" / "manifest.json").read_text())
    assert m2["previous_pack"] == "2026-11-20"
    assert m2["previous_manifest_sha256"] == sha256_file(tmp_path / "2026-11-20" / "manifest.json")
    res = verify_chain(tmp_path, days=35, today=days[-1])
    assert res.ok, res.problems
    assert res.packs == ["2026-11-20", "2026-11-21", "2026-11-23"]

    # Rewrite the middle manifest (e.g. someone "fixes" metadata): its own files still hash, the link breaks.
    mpath = tmp_path / "2026-11-21" / "manifest.json"
    m2["metadata"]["target"] = "env"
    mpath.write_text(json.dumps(m2, indent=2, sort_keys=True) + "\n")
    assert verify_pack(tmp_path / "2026-11-21").ok
    res = verify_chain(tmp_path, today=days[-1])
    assert not res.ok
    assert res.problems[0] == "2026-11-23: broken link: previous_manifest_sha256 does not match 2026-11-21/manifest.json"


def test_deleting_a_middle_pack_breaks_the_chain(tmp_path):
    import shutil

    for i in range(3):
        make_pack(tmp_path, DAY + timedelta(days=i))
    shutil.rmtree(tmp_path / "2026-11-21")
    res = verify_chain(tmp_path, today=DAY + timedelta(days=2))
    assert not res.ok and res.problems[0].startswith("2026-11-22: broken link")


def test_rerun_same_day_replaces_atomically(tmp_path):
    make_pack(tmp_path, DAY - timedelta(days=1))
    first = make_pack(tmp_path, DAY, marker="first")
    (first / "only-in-first-run.txt").write_text("stale")  # would fail verify if it survived
    second = make_pack(tmp_path, DAY, marker="second")
    assert second == first
    assert not (second / "only-in-first-run.txt").exists()
    assert json.loads((second / "results.json").read_text())["controls"][0]["marker"] == "second"
    assert verify_pack(second).ok
    assert verify_chain(tmp_path, today=DAY).ok  # the rerun links to the previous day, not to itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-19", "2026-11-20"]


def test_crashed_run_leaves_no_pack_that_verifies(tmp_path):
    w = PackWriter(tmp_path, DAY)
    w.add_json("results.json", {"controls": []})
    # the process "dies" here: no commit, no abort
    assert w.staging.is_dir() and w.staging.name.startswith(".tmp-2026-11-20-")
    assert not (w.staging / "manifest.json").exists()
    assert list_packs(tmp_path) == {}
    res = verify_chain(tmp_path, today=DAY)
    assert not res.ok and "no evidence pack" in res.problems[0]
    assert not verify_pack(w.staging).ok
    assert not verify_pack(tmp_path / "2026-11-20").ok  # reported missing, not green
    assert verify_pack(tmp_path / "2026-11-20").problems == ["2026-11-20: missing"]


def test_crashed_rerun_keeps_the_previous_pack(tmp_path):
    good = make_pack(tmp_path, DAY, marker="good")
    w = PackWriter(tmp_path, DAY)
    w.add_json("results.json", {"half": True})  # crash: never committed
    assert verify_chain(tmp_path, today=DAY).ok
    assert json.loads((good / "results.json").read_text())["controls"][0]["marker"] == "good"
    w.abort()
    assert not w.staging.exists()


def test_require_today(tmp_path):
    make_pack(tmp_path, DAY)
    assert verify_chain(tmp_path, today=DAY + timedelta(days=1)).ok
    res = verify_chain(tmp_path, today=DAY + timedelta(days=1), require_today=True)
    assert not res.ok and res.problems == ["2026-11-21: missing (no evidence pack for today)"]


def test_context_manager_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with PackWriter(tmp_path, DAY) as w:
            w.add_text("x.txt", "x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_names_are_refused(tmp_path):
    w = PackWriter(tmp_path, DAY)
    for bad in ("../escape.txt", "/abs.txt", "manifest.json", "a/../../b", ""):
        with pytest.raises(EvidenceError):
            w.add_text(bad, "x")
    w.abort()


def test_add_file_copies_files_and_dirs(tmp_path):
    src = tmp_path / "src"
    (src / "allure-results").mkdir(parents=True)
    (src / "allure-results" / "u-result.json").write_text("{}")
    (src / "junit.xml").write_text("<testsuites/>")
    root = tmp_path / "evidence"
    w = PackWriter(root, DAY)
    w.add_file("junit.xml", src / "junit.xml")
    w.add_file("allure-results", src / "allure-results")
    pack = w.commit({"target": "embedded"})
    names = [f["path"] for f in json.loads((pack / "manifest.json").read_text())["files"]]
    assert names == ["allure-results/u-result.json", "junit.xml"]
    assert verify_pack(pack).ok
    with pytest.raises(EvidenceError):
        w.add_text("late.txt", "after commit")

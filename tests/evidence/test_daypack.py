"""The one pack writer: run kinds own their files, merge at commit time under one lock, never amend a tampered pack."""

from __future__ import annotations

import fcntl
import json
import threading
from datetime import date
from pathlib import Path

import pytest

from opsproof.evidence import daypack
from opsproof.evidence.common import EvidenceError
from opsproof.evidence.pack import PackWriter
from opsproof.evidence.verify import verify_chain, verify_pack

DAY = date(2026, 11, 20)


def daily_run(root: Path, run_id: str = "daily1", marker: str = "d1") -> daypack.DayPackRun:
    run = daypack.open_day(root, DAY, "daily", run_id)
    run.add_json(run.name("results", "json"), {"suite": "daily", "marker": marker})
    run.add_text(run.name("report", "html"), "<html>daily</html>")
    run.add_json(run.artifact_name("flags.json"), {"autonomy.mode": "FULL"})
    run.path("allure-results/abc-result.json").write_text("{}")
    return run


def gate_run(root: Path, run_id: str = "gate1") -> daypack.DayPackRun:
    run = daypack.open_day(root, DAY, "gate", run_id)
    run.add_json(run.name("results", "json"), {"suite": "gate"})
    run.add_json(run.artifact_name("flags.json"), {"autonomy.mode": "SAFE"})  # -> gate/flags.json
    return run


def cadence_run(root: Path, run_id: str = "cad1") -> daypack.DayPackRun:
    run = daypack.open_day(root, DAY, "cadence-daily", run_id)
    run.add_json(run.name("ttl_cleanup", "json"), {"task": "ttl_cleanup", "verdict": "pass"})
    return run


def files(pack: Path) -> set[str]:
    return {f["path"] for f in json.loads((pack / "manifest.json").read_text())["files"]}


def meta(pack: Path) -> dict:
    return json.loads((pack / "manifest.json").read_text())["metadata"]


@pytest.mark.parametrize("order", ["daily-first", "others-first"])
def test_kinds_keep_each_others_files_in_either_order(tmp_path, order):
    runs = [("daily", daily_run), ("gate", gate_run), ("cadence-daily", cadence_run)]
    if order == "others-first":
        runs.reverse()
    for kind, make in runs:
        make(tmp_path).commit({"suite": kind, "target": "embedded", "host": "127.0.0.1:5432/postgres",
                               "green": kind == "daily"})
    pack = tmp_path / DAY.isoformat()
    assert verify_pack(pack).ok and verify_chain(tmp_path, today=DAY).ok
    assert {"results.json", "report.html", "flags.json", "allure-results/abc-result.json", "results-gate.json",
            "gate/flags.json", "cadence/daily/ttl_cleanup.json"} <= files(pack)
    assert json.loads((pack / "flags.json").read_text()) == {"autonomy.mode": "FULL"}  # the gate run did not replace it
    m = meta(pack)
    assert set(m["runs"]) == {"daily", "gate", "cadence-daily"}
    assert m["suite"] == "daily" and m["green"] is True  # the top level is the daily run's
    assert m["runs"]["gate"]["files"] == ["gate/flags.json", "results-gate.json"]


def test_a_rerun_of_a_kind_replaces_only_its_own_files(tmp_path):
    daily_run(tmp_path).commit({"suite": "daily"})
    gate_run(tmp_path).commit({"suite": "gate"})
    run = daypack.open_day(tmp_path, DAY, "daily", "daily2")
    run.add_json("results.json", {"suite": "daily", "marker": "d2"})
    pack = run.commit({"suite": "daily"})
    assert json.loads((pack / "results.json").read_text())["marker"] == "d2"
    assert "report.html" not in files(pack) and "allure-results/abc-result.json" not in files(pack)  # its old files go
    assert {"results-gate.json", "gate/flags.json"} <= files(pack)


def test_an_adhoc_run_never_replaces_the_daily_results(tmp_path):
    daily_run(tmp_path).commit({"suite": "daily", "green": True})
    run = daypack.open_day(tmp_path, DAY, "adhoc", "k-subset")
    assert run.name("results", "json") == "adhoc/k-subset/results.json"
    assert run.artifact_name("slo_snapshot.json") == "adhoc/k-subset/slo_snapshot.json"
    with pytest.raises(EvidenceError, match="does not own 'results.json'"):
        run.add_json("results.json", {"suite": "adhoc"})
    run.add_json(run.name("results", "json"), {"suite": "adhoc", "controls": 3})
    pack = run.commit({"suite": "adhoc", "green": False})
    assert json.loads((pack / "results.json").read_text())["marker"] == "d1"
    assert "adhoc/k-subset/results.json" in files(pack) and "report.html" in files(pack)
    assert meta(pack)["green"] is True and "adhoc/k-subset" in meta(pack)["runs"]


@pytest.mark.parametrize("kind,name", [("daily", "drills/kill_switch.json"), ("daily", "results-gate.json"),
                                       ("daily", "acceptance.json"), ("gate", "results.json"),
                                       ("cadence-weekly", "cadence/daily/x.json"), ("adhoc", "adhoc/other/x.json"),
                                       ("drill", "manifest.sig"), ("weekly", "cadence/weekly/x.json")])
def test_names_outside_the_kinds_ownership_are_refused(tmp_path, kind, name):
    run = daypack.open_day(tmp_path, DAY, kind, "r1")
    with pytest.raises(EvidenceError):
        run.add_text(name, "x")
    run.abort()


def test_a_file_written_straight_into_staging_outside_the_kind_is_refused_at_commit(tmp_path):
    daily_run(tmp_path).commit({"suite": "daily"})
    before = (tmp_path / DAY.isoformat() / "manifest.json").read_bytes()
    run = gate_run(tmp_path)
    (run.staging / "results.json").write_text("{}")  # e.g. a report path not taken from run.name()
    with pytest.raises(EvidenceError, match="does not own"):
        run.commit({"suite": "gate"})
    assert (tmp_path / DAY.isoformat() / "manifest.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_commit_reads_the_pack_as_it_is_at_commit_time(tmp_path):
    gate = gate_run(tmp_path)  # opened first ...
    daily_run(tmp_path).commit({"suite": "daily"})  # ... another kind commits meanwhile
    pack = gate.commit({"suite": "gate"})
    assert {"results.json", "flags.json", "results-gate.json"} <= files(pack)


def test_concurrent_commits_serialize(tmp_path, monkeypatch):
    inside, release = threading.Event(), threading.Event()
    real_commit = PackWriter.commit

    def slow_commit(self, *a, **kw):
        if self.run_id == "daily1":
            inside.set()
            assert release.wait(30)
        return real_commit(self, *a, **kw)

    monkeypatch.setattr(PackWriter, "commit", slow_commit)
    errors: list[BaseException] = []

    def go(run, kind):
        try:
            run.commit({"suite": kind})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    first = threading.Thread(target=go, args=(daily_run(tmp_path), "daily"))
    first.start()
    assert inside.wait(30)
    with open(tmp_path / daypack.LOCK, "a") as fh:  # the lock is held while the first commit seals
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    others = [threading.Thread(target=go, args=(make(tmp_path), kind))
              for kind, make in (("gate", gate_run), ("cadence-daily", cadence_run))]
    for t in others:
        t.start()
    release.set()
    for t in [first, *others]:
        t.join(60)
    assert not errors, errors
    pack = tmp_path / DAY.isoformat()
    assert verify_pack(pack).ok
    assert {"results.json", "results-gate.json", "cadence/daily/ttl_cleanup.json"} <= files(pack)
    assert set(meta(pack)["runs"]) == {"daily", "gate", "cadence-daily"}


def test_a_tampered_current_pack_is_not_amended(tmp_path):
    pack = daily_run(tmp_path).commit({"suite": "daily"})
    (pack / "results.json").write_text('{"suite": "daily", "forged": true}')
    run = gate_run(tmp_path)
    with pytest.raises(EvidenceError, match="does not verify"):
        run.commit({"suite": "gate"})
    assert json.loads((pack / "results.json").read_text())["forged"] is True  # left as found, for the auditor
    assert "results-gate.json" not in files(pack)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_secrets_are_refused_and_a_legacy_pack_keeps_its_metadata(tmp_path):
    with PackWriter(tmp_path, DAY) as w:  # a pack from before run kinds
        w.add_json("results.json", {"suite": "daily"})
        w.commit({"suite": "daily", "target": "embedded", "green": True})
    run = cadence_run(tmp_path)
    run.add_text(run.name("leak", "txt"), "password hunter2hunter2")
    with pytest.raises(EvidenceError, match="secret"):
        run.commit({"by": "cadence"}, secrets=["hunter2hunter2"])
    pack = cadence_run(tmp_path).commit({"by": "cadence"}, secrets=["hunter2hunter2"])
    m = meta(pack)
    assert m["runs"]["daily"]["green"] is True and m["green"] is True and m["suite"] == "daily"
    assert "results.json" in files(pack)

"""Allure HTML via the pinned Allure 3 CLI, and the `opsproof evidence` CLI (verify/prune exit codes)."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from opsproof.evidence import PackWriter
from opsproof.evidence.allure import allure_bin, generate
from opsproof.evidence.cli import app

DAY = date(2026, 11, 20)
runner = CliRunner()


@pytest.mark.skipif(not allure_bin().exists() or shutil.which("node") is None,
                    reason="node_modules/.bin/allure (or node) is absent")
def test_allure_generate_makes_index_html(tmp_path):
    results = tmp_path / "allure-results"
    results.mkdir()
    uid = str(uuid.uuid4())
    (results / f"{uid}-result.json").write_text(json.dumps(
        {"uuid": uid, "name": "t", "fullName": "checks.test_x#t", "status": "passed",
         "start": 1_790_000_000_000, "stop": 1_790_000_001_000}))
    out = tmp_path / "allure-report"
    res = generate(results, out)
    assert res, res.reason
    assert (out / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allure-report", "allure-results"]  # no strays


def test_allure_generate_reports_why_not(tmp_path):
    res = generate(tmp_path / "nope", tmp_path / "out")
    assert not res and res.reason
    res = generate(tmp_path, tmp_path / "out", project=tmp_path)  # no node_modules here
    assert not res and "allure CLI not found" in res.reason


def _packs(root, n):
    for i in range(n):
        w = PackWriter(root, DAY + timedelta(days=i))
        w.add_json("results.json", {"i": i})
        w.commit({"target": "embedded"})


def test_cli_verify_exit_codes(tmp_path):
    _packs(tmp_path, 3)
    today = (DAY + timedelta(days=2)).isoformat()
    ok = runner.invoke(app, ["verify", "--root", str(tmp_path), "--today", today])
    assert ok.exit_code == 0, ok.output
    assert "3 packs verified" in ok.output
    one = runner.invoke(app, ["verify", str(tmp_path / "2026-11-21")])
    assert one.exit_code == 0, one.output

    (tmp_path / "2026-11-21" / "results.json").write_text("{}")
    bad = runner.invoke(app, ["verify", "--root", str(tmp_path), "--today", today])
    assert bad.exit_code == 1
    assert bad.output.strip() == "2026-11-21/results.json: sha256 mismatch"
    bad_dir = runner.invoke(app, ["verify", str(tmp_path), "--today", today])  # a root given as DIR
    assert bad_dir.exit_code == 1 and bad_dir.output.strip() == "2026-11-21/results.json: sha256 mismatch"

    missing = runner.invoke(app, ["verify", str(tmp_path / "2020-01-01")])
    assert missing.exit_code == 2
    assert "no such evidence path" in missing.output and len(missing.output.strip().splitlines()) == 1


def test_cli_prune(tmp_path):
    _packs(tmp_path, 1)
    today = (DAY + timedelta(days=10)).isoformat()
    res = runner.invoke(app, ["prune", "--root", str(tmp_path), "--today", today,
                              "--keep-days", "35", "--compress-after", "7"])
    assert res.exit_code == 0, res.output
    assert "1 compressed" in res.output
    assert (tmp_path / "2026-11-20.tar.gz").is_file()
    ok = runner.invoke(app, ["verify", str(tmp_path / "2026-11-20.tar.gz")])
    assert ok.exit_code == 0, ok.output
    ok = runner.invoke(app, ["verify", str(tmp_path / "2026-11-20")])  # resolves to the compressed pack
    assert ok.exit_code == 0, ok.output

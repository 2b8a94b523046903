"""The plugin's contract with its callers: the suite kind is explicit (or the documented `pytest -m <kind>`
over the whole suite), a partial run never replaces another kind's results, selection by id / severity /
framework requirement, waivers reported as waived (never as pass), and options that cannot silently move pytest's
rootdir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite_runner import REPO, run_suite


def _pack(ev: Path) -> Path:
    return sorted(p for p in ev.glob("????-??-??") if p.is_dir())[-1]


def _ids(results: dict) -> set[str]:
    return {c["id"] for c in results["controls"]}


@pytest.fixture(scope="module")
def daily_pack(stack, stack_home, tmp_path_factory):
    ev = tmp_path_factory.mktemp("kinds") / "ev"
    proc, results = run_suite(stack_home, ev, "-m", "daily", "-p", "no:randomly")
    assert proc.returncode == 0 and results["verdict"] == "GREEN", proc.stdout[-2000:]
    return ev


def test_a_partial_run_is_adhoc_and_leaves_the_daily_results_alone(daily_pack, stack_home):
    pack = _pack(daily_pack)
    before = {p.name: p.read_bytes() for p in (pack / "results.json", pack / "slo_snapshot.json")}
    proc, results = run_suite(stack_home, daily_pack, "-m", "daily", "checks/test_slo.py")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert results["suite"] == "adhoc" and _ids(results) == {"SLO-001", "SLO-002", "SLO-003"}
    assert {p.name: p.read_bytes() for p in (pack / "results.json", pack / "slo_snapshot.json")} == before
    assert (pack / "adhoc" / results["run_id"] / "slo_snapshot.json").is_file()
    assert "[adhoc]" in proc.stdout


def test_an_explicit_daily_that_misses_catalog_controls_is_red(stack, stack_home, tmp_path):
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", "--opsproof-suite=daily", "-k", "slo")
    assert results["suite"] == "daily" and results["verdict"] == "RED" and not results["green"]
    missing = {m["id"] for m in results["not_run"]}
    assert {"FLG-001", "SEC-001", "CAD-004"} <= missing and "SLO-001" not in missing


def test_selection_by_id_severity_and_requirement(stack, stack_home, tmp_path):
    from opsproof.catalog import load

    cat = load(REPO / "controls.toml")
    proc, results = run_suite(stack_home, tmp_path / "a", "-m", "daily", "--opsproof-control=FLG-001",
                              "--opsproof-control=BUD-001")
    assert results["suite"] == "adhoc" and _ids(results) == {"FLG-001", "BUD-001"}, proc.stdout[-1500:]
    proc, results = run_suite(stack_home, tmp_path / "b", "-m", "daily", "--opsproof-requirement=SOC2:CC6.1")
    want = cat.select(requirements=["SOC2:CC6.1"]) & cat.select(suites=["daily"])
    assert want and _ids(results) == want, proc.stdout[-1500:]
    proc, results = run_suite(stack_home, tmp_path / "c", "-m", "daily", "--opsproof-requirement=SOC2:CC99.9")
    assert proc.returncode == 2 and "CC99.9" in proc.stdout + proc.stderr and results is None


def test_waived_failure_is_waived_never_pass_and_expired_waiver_does_not_apply(stack, stack_home, tmp_path):
    text = (REPO / "opsproof.toml").read_text()
    assert "p95_ms_max" in text
    import re

    policy = tmp_path / "strict.toml"
    policy.write_text(re.sub(r"(?m)^p95_ms_max\s*=.*$", "p95_ms_max = 1.0", text, count=1))
    waivers = tmp_path / "waivers.toml"
    common = ("-m", "daily", f"--opsproof-policy={policy}", f"--opsproof-waivers={waivers}", "--junitxml",
              str(tmp_path / "j.xml"))
    waivers.write_text('[[waiver]]\ncontrol = "SLO-003"\njustification = "known slow region, fix in PROJ-12"\n'
                       'approver = "cto@example.com"\nexpires = 2999-12-31\n')
    proc, results = run_suite(stack_home, tmp_path / "ev", *common)
    slo3 = next(c for c in results["controls"] if c["id"] == "SLO-003")
    assert slo3["verdict"] == "waived" and slo3["waiver"]["approver"] == "cto@example.com", slo3
    assert results["summary"]["waived"] == 1 and results["verdict"] == "GREEN" and proc.returncode == 0
    junit = (tmp_path / "j.xml").read_text()
    assert "WAIVED SLO-003" in junit
    pack = _pack(tmp_path / "ev")
    assert (pack / "waivers.toml").is_file()  # the waivers are part of the signed pack
    assert "approved by cto@example.com" in (pack / "report.html").read_text()  # HTML: waived, never passed
    allure = [json.loads(f.read_text()) for f in (pack / "allure-results").glob("*-result.json")]
    slo3_allure = [r for r in allure if "SLO-003" in r.get("name", "")]
    assert slo3_allure and all(r["status"] == "skipped" and "WAIVED SLO-003" in r["statusDetails"]["message"]
                               for r in slo3_allure)
    compliance = json.loads((pack / "compliance.json").read_text())
    assert '"waived"' in json.dumps(compliance)
    waivers.write_text(waivers.read_text().replace("2999-12-31", "2020-01-01"))
    proc, results = run_suite(stack_home, tmp_path / "ev2", *common)
    slo3 = next(c for c in results["controls"] if c["id"] == "SLO-003")
    assert slo3["verdict"] == "fail" and results["verdict"] == "RED" and proc.returncode == 1
    assert results["waivers_expired"][0]["control"] == "SLO-003"


def test_a_path_option_given_with_a_space_is_refused(stack, stack_home, tmp_path):
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", "--opsproof-policy",
                              str(REPO / "opsproof.toml"))
    assert proc.returncode == 2 and "--opsproof-policy=" in proc.stdout + proc.stderr and results is None


def test_ini_twin_sets_the_window(stack, stack_home, tmp_path):
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "gate", "-o", "opsproof_window=6h")
    assert results["suite"] == "gate" and results["window"]["label"] == "6h", proc.stdout[-1500:]
    assert results["window"]["length_s"] == 6 * 3600

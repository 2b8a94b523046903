"""The reports an auditor reads, from ONE real daily run with one control forced red (FLG-001: an unexpired
override of a required flag): pytest-html header and finding, Allure titles/severities/labels, JUnit JSON
properties, the compliance report. Plus unit tests of the value formatting and the compliance model."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import psycopg
import pytest

from opsproof.evidence.compliance import compliance_report, render_html, render_markdown
from opsproof.evidence.findings import record_line
from suite_runner import run_suite
from violation_cases import all_cases

CASE = next(c for c in all_cases() if c.name == "FLG-001/override")
RED_NODE = "checks/test_flags.py::test_required_flag[autonomy.emergencyStop]"


def _sql(stack, sql):
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def red_pack(stack, stack_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("evidence-reports")
    _sql(stack, CASE.inject)
    try:
        proc, results = run_suite(stack_home, out, "-m", "daily", env={"OPSPROOF_NO_ALLURE_HTML": "0"})
    finally:
        _sql(stack, CASE.undo)
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, results, out / results["date"]


def _html_tests(pack):
    text = (pack / "report.html").read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', text).group(1)
    return text, json.loads(html.unescape(blob))


def test_run_is_red_only_for_the_forced_control(red_pack):
    proc, results, _ = red_pack
    red = {c["nodeid"]: c["verdict"] for c in results["controls"] if c["verdict"] != "pass"}
    assert red.get(RED_NODE) == "fail", red
    assert not [n for n in red if n != RED_NODE and n.startswith("checks/test_flags.py")], red
    assert results["verdict"] == "RED" and proc.returncode != 0


def test_printed_report_paths_are_the_final_ones(red_pack):
    proc, results, pack = red_pack
    assert ".tmp-" not in proc.stdout, proc.stdout[-2000:]


def test_html_header_names_verdict_target_window_policy_run(red_pack):
    _, results, pack = red_pack
    text, data = _html_tests(pack)
    header = text[text.index("opsproof-header"):]
    header = header[: header.index("</div>")]
    for needle in ("RED", results["run_id"], results["policy"]["sha256"], "daily", "24h",
                   f"{results['target']['host']}:{results['target']['port']}/{results['target']['database']}",
                   "critical", "high", "medium", "low"):
        assert needle in header, needle
    assert "opsproof daily evidence report" in data["title"]
    assert "object at 0x" not in text and "Traceback" not in text
    for secret_ish in ("postgresql://", "password"):
        assert secret_ish not in header.lower()


def test_html_columns_and_rounded_values(red_pack):
    _, _, pack = red_pack
    text, data = _html_tests(pack)
    for col in ("Control id", "Title", "Severity", "Frameworks", "Measured", "Required"):
        assert f">{col}</th>" in text, col
    rows = {nid: t[0]["resultsTableRow"] for nid, t in data["tests"].items()}
    slo = next(r for nid, r in rows.items() if nid.endswith("test_p95_latency"))
    assert "<td>SLO-003</td>" in slo and any(re.fullmatch(r"<td>\d+ ms</td>", c) for c in slo), slo
    assert "<td>≤ 2500 ms</td>" in slo
    for r in rows.values():  # no raw floats with long tails, no Python reprs
        cells = " ".join(r)
        assert not re.search(r"\d\.\d{5,}", cells), cells
        assert "{'" not in cells and "True" not in cells


def test_failing_control_shows_a_finding_not_a_traceback(red_pack):
    _, _, pack = red_pack
    _, data = _html_tests(pack)
    log = data["tests"][RED_NODE][0]["log"]
    assert "FINDING FLG-001" in log
    for needle in ('class="measured">true<', 'class="required">= false<', "ops.effective_flags", "Remediation",
                   "window 24h"):
        assert needle in log, needle
    assert "AssertionError" not in log and "def test_required_flag" not in log


def test_allure_titles_severities_and_behaviors(red_pack):
    _, results, pack = red_pack
    res = [json.loads(f.read_text()) for f in (pack / "allure-results").glob("*-result.json")]
    assert len(res) == len(results["controls"])
    by_title = {}
    mapping = {"critical": "blocker", "high": "critical", "medium": "normal", "low": "minor"}
    ours = {c["nodeid"]: c for c in results["controls"]}
    for r in res:
        labels = {}
        for lab in r["labels"]:
            labels.setdefault(lab["name"], []).append(lab["value"])
        cid = labels["feature"][0]
        entry = next(c for c in ours.values() if c["id"] == cid)
        assert r["name"] == f"{cid} {entry['title']}", r["name"]
        assert labels["severity"] == [mapping[entry["severity"]]], (cid, labels["severity"])
        assert labels["epic"] == [entry["area"]] and labels["story"] == [entry["title"]]
        by_title.setdefault(r["name"], []).append(r)
    flg = [r for r in by_title[f"FLG-001 {ours[RED_NODE]['title']}"] if r["status"] == "failed"]
    assert len(flg) == 1 and flg[0]["statusDetails"]["message"].startswith("FINDING FLG-001")
    names = set()
    for f in (pack / "allure-results").glob("*-container.json"):
        c = json.loads(f.read_text())
        names |= {x["name"] for k in ("befores", "afters") for x in c.get(k, [])}
    assert not any("<lambda>" in n for n in names), sorted(names)


def test_allure_single_file_report_and_history(red_pack):
    _, results, pack = red_pack
    single = pack / "allure-report.html"
    assert single.is_file() and single.stat().st_size > 10_000
    page = single.read_text()
    assert "window.allureReportData" in page  # the data is inlined: nothing to fetch from file://
    assert "googletagmanager" not in page  # no third-party call from an evidence file
    history = pack.parent / "allure-history.jsonl"
    assert history.is_file() and len(history.read_text().strip().splitlines()) == 1


def test_junit_properties_are_json_and_the_suite_carries_the_run(red_pack):
    _, results, pack = red_pack
    root = ET.parse(pack / "junit.xml").getroot()
    suite = root.find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["opsproof_run_id"] == results["run_id"]
    assert props["opsproof_policy_sha256"] == results["policy"]["sha256"]
    assert results["target"]["host"] in props["opsproof_target"]
    cases = suite.findall("testcase")
    assert len(cases) == len(results["controls"])
    seen = 0
    for case in cases:
        for p in case.iter("property"):
            if p.get("name").startswith("opsproof_"):
                value = json.loads(p.get("value"))
                assert isinstance(value, dict), p.get("value")[:200]
                seen += 1
    assert seen >= 2 * len(cases)


def test_compliance_report_has_the_failing_requirement_red(red_pack):
    _, results, pack = red_pack
    doc = json.loads((pack / "compliance.json").read_text())
    flg = next(c for c in results["controls"] if c["id"] == "FLG-001")
    fw, reqs = next((k, v) for k, v in flg["frameworks"].items() if v)
    framework = next(f for f in doc["frameworks"] if f["framework"] == fw)
    req = next(r for r in framework["requirements"] if r["requirement"] == reqs[0])
    assert req["status"] == "fail"
    assert any(c["id"] == "FLG-001" and c["status"] == "fail" for c in req["controls"])
    assert framework["status"] == "fail"
    passed = {c["id"] for c in results["controls"] if c["verdict"] == "pass"} - {
        c["id"] for c in results["controls"] if c["verdict"] != "pass"}
    passing = [r for f in doc["frameworks"] for r in f["requirements"]
               if all(c["id"] in passed for c in r["controls"])]
    assert passing and all(r["status"] == "pass" for r in passing)
    assert "FLG-001" in (pack / "compliance.html").read_text()


# -- units (no stack) ---------------------------------------------------------------------------------------------

def test_values_are_rounded_with_units():
    assert record_line({"measured": 684.1302, "threshold": "<= 2500.0 ms", "verdict": "pass"}) == ("684 ms",
                                                                                                  "≤ 2500 ms")
    assert record_line({"measured": 99.8, "threshold": ">= 99.95%", "verdict": "fail"}) == ("99.8%", "≥ 99.95%")
    assert record_line({"measured": 99.9499, "threshold": ">= 99.95%", "verdict": "fail"})[0] == "99.9499%"
    assert record_line({"measured": 2499.99999, "threshold": "<= 2500.0 ms", "verdict": "pass"})[0] == "2500 ms"
    assert record_line({"measured": 0.8538096439317947, "threshold": "< 2.0 s"}) == ("0.854 s", "< 2 s")
    assert record_line({"name": "replay.max_bytes", "measured": 2097152.0, "threshold": "<= 2097152"}) == (
        "2 MB", "≤ 2 MB")
    assert record_line({"measured": True, "threshold": "== true"}) == ("true", "= true")
    assert record_line({"measured": {"holders": ["system@"]}, "threshold": "x"})[0] == '{"holders": ["system@"]}'


def test_compliance_waivers_and_not_run():
    fw = {"SOC2": ["CC1"], "ISO27001": ["A.1"]}
    results = {"suite": "daily", "run_id": "r", "date": "2026-12-03", "verdict": "GREEN",
               "controls": [
                   {"id": "A-001", "title": "a", "severity": "high", "frameworks": fw, "verdict": "pass"},
                   {"id": "B-001", "title": "b", "severity": "low", "frameworks": {"SOC2": ["CC1", "CC2"]},
                    "verdict": "waived", "message": "WAIVED: x",
                    "waiver": {"justification": "vendor fix", "approver": "cto@", "expires": "2026-12-31"}},
                   {"id": "C-001", "title": "c", "severity": "low", "frameworks": {"SOC2": ["CC3"]},
                    "verdict": "pass"}],
               "not_run": [{"id": "C-001", "nodeid": "x::y", "reason": "collected, never ran"}]}
    doc = compliance_report(results, None)
    soc2 = {r["requirement"]: r for r in next(f for f in doc["frameworks"] if f["framework"] == "SOC2")[
        "requirements"]}
    assert soc2["CC1"]["status"] == "waived" and soc2["CC2"]["status"] == "waived"  # never "pass"
    assert soc2["CC3"]["status"] == "not run"
    w = next(c for c in soc2["CC2"]["controls"] if c["id"] == "B-001")["waivers"][0]
    assert w["approver"] == "cto@" and w["expires"] == "2026-12-31" and w["justification"] == "vendor fix"
    iso = next(f for f in doc["frameworks"] if f["framework"] == "ISO27001")
    assert iso["status"] == "pass"
    assert "vendor fix" in render_html(doc) and "cto@" in render_markdown(doc)

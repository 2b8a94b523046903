"""SEC-007/SEC-008 without a stack: SARIF files, recorded GitHub API answers (respx), detect-secrets for real."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import respx

from opsproof import clock
from opsproof.errors import UsageError
from opsproof.measure import code_scans as cs
from opsproof.policy import Policy, load
from opsproof.recorder import MeasurementError, Recorder

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SARIF = DATA / "sarif"
GH = DATA / "github"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
API = "https://api.github.com"
SLUG = "acme-logistics/tms"
# an AWS-shaped access key id, assembled at run time so no file of this repository holds one
PLANTED = "AKIA" + "Q7WJ3KD9LMZ2PXR4"
SECRET_IN_RECORDING = "RECORDED-SECRET-VALUE-MUST-NEVER-APPEAR"


def _check_module():
    spec = importlib.util.spec_from_file_location("opsproof_check_code_scans", REPO / "checks" / "test_code_scans.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CHECKS = _check_module()


class _Item:
    def __init__(self):
        self.user_properties: list = []


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    monkeypatch.setattr(clock, "now", lambda: NOW)


@pytest.fixture
def evidence():
    return Recorder(_Item())


def _policy(tmp_path: Path, **code_scans) -> Policy:
    """A policy whose file lives in tmp_path (so [code_scans] paths are relative to it)."""
    p = Policy.model_validate({"code_scans": code_scans})
    return p.model_copy(update={"source": str(tmp_path / "opsproof.toml")})


def _dump(evidence: Recorder) -> str:
    return json.dumps(evidence.item.user_properties, default=str)


def _copy_sarif(tmp_path: Path, *names: str) -> None:
    (tmp_path / "ci").mkdir(exist_ok=True)
    for n in names:
        shutil.copy(SARIF / n, tmp_path / "ci" / n)


def _tree(root: Path, planted: bool) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "README.md").write_text("# app\n")
    if planted:
        (root / "src" / "cloud.py").write_text(f'import os\n\nREGION = "eu-central-1"\nKEY_ID = "{PLANTED}"\n')
    return root


# -- SARIF ----------------------------------------------------------------------------------------------------

def test_codeql_sarif_high_finding_from_security_severity():
    [r] = cs.read_sarif(SARIF / "codeql-python.sarif")
    assert (r.tool, r.kind, r.source) == ("CodeQL", "static", "sarif")
    assert r.scanned_at == datetime(2026, 11, 29, 3, 12, 40, 87000, tzinfo=timezone.utc)
    assert r.by_severity() == {"critical": 0, "high": 1, "medium": 0, "low": 1}
    sql = next(f for f in r.findings if f.rule_id == "py/sql-injection")
    assert (sql.file, sql.line, sql.severity) == ("src/tms/search.py", 42, "high")
    assert sql.rule == "SQL query built from user-controlled sources"   # from the query pack (an extension)
    assert r.detail["not_open"] == 1                                     # the accepted suppression
    assert "user-provided value" not in json.dumps(r.evidence(NOW))      # result messages are never kept
    assert str(SARIF / "codeql-python.sarif") in r.query


def test_gitleaks_clean_and_semgrep_medium():
    [g] = cs.read_sarif(SARIF / "gitleaks-clean.sarif")
    assert (g.tool, g.kind, g.findings) == ("gitleaks", "secrets", [])
    assert g.scanned_at == datetime(2026, 11, 30, 22, 40, 3, tzinfo=timezone.utc)
    [s] = cs.read_sarif(SARIF / "semgrep.sarif")
    assert s.kind == "static"
    assert s.by_severity() == {"critical": 0, "high": 0, "medium": 1, "low": 0}   # result level wins; kind=pass ignored
    assert "shell=True)" not in json.dumps(s.evidence(NOW))                    # snippets are never kept


@pytest.mark.parametrize("level,score,expected", [
    ("error", None, "high"), ("warning", None, "medium"), ("note", None, "low"), ("none", None, None),
    (None, None, "medium"), ("note", "9.8", "critical"), ("note", "7.0", "high"), ("error", "5.3", "medium"),
    ("error", "2.0", "low"), ("error", "n/a", "high")])
def test_severity_mapping(level, score, expected):
    assert cs.severity_of(level, score) == expected


@pytest.mark.parametrize("content,message", [
    ("not json", "is not JSON"), ('{"version": "2.0.0", "runs": []}', "not SARIF 2.1.0"),
    ('{"version": "2.1.0", "runs": []}', "without runs"),
    ('{"version": "2.1.0", "runs": [{"tool": {"driver": {}}}]}', "names no tool")])
def test_bad_sarif_is_an_error(tmp_path, content, message):
    f = tmp_path / "x.sarif"
    f.write_text(content)
    with pytest.raises(MeasurementError, match=message):
        cs.read_sarif(f)


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(MeasurementError, match="no SARIF file matches"):
        cs.read_sarif_globs(["ci/*.sarif"], tmp_path)


# -- GitHub (recorded answers replayed) ----------------------------------------------------------------------

def _gh_routes(router, analyses="analyses.json", alerts="alerts-open.json", secrets="secret-alerts-open.json"):
    def js(name, status=200):
        return httpx.Response(status, json=json.loads((GH / name).read_text()))

    router.get(f"{API}/repos/{SLUG}").mock(return_value=js("repo.json"))
    router.get(f"{API}/repos/{SLUG}/code-scanning/analyses", params={"ref": "refs/heads/main"}).mock(
        return_value=js(analyses, 404 if "none" in analyses else 200))
    router.get(f"{API}/repos/{SLUG}/code-scanning/alerts", params={"state": "open"}).mock(return_value=js(alerts))
    router.get(f"{API}/repos/{SLUG}/secret-scanning/alerts", params={"state": "open"}).mock(return_value=js(secrets))


def test_github_code_and_secret_scanning(monkeypatch):
    monkeypatch.setenv("TMS_GH_TOKEN", "test-token-not-a-secret")
    with respx.mock(assert_all_called=True) as router:
        _gh_routes(router)
        with cs.GitHub(SLUG, "TMS_GH_TOKEN") as gh:
            readings = {r.tool: r for r in gh.code_scanning()}
            secret = gh.secret_scanning()
        assert router.calls[0].request.headers["Authorization"] == "Bearer test-token-not-a-secret"
    codeql, gitleaks = readings["CodeQL"], readings["gitleaks"]
    # the oldest of the newest successful analysis per category (the errored go analysis does not count)
    assert codeql.scanned_at == datetime(2026, 11, 29, 3, 14, 2, tzinfo=timezone.utc)
    assert set(codeql.detail["categories"]) == {"/language:python", "/language:javascript"}
    assert codeql.detail["errored_analyses"] == 1
    assert codeql.by_severity() == {"critical": 0, "high": 1, "medium": 0, "low": 1}
    assert (gitleaks.kind, gitleaks.findings) == ("secrets", [])
    assert "code-scanning/analyses?ref=refs%2Fheads%2Fmain" in codeql.query
    assert [f.rule_id for f in secret.findings] == ["stripe_api_key"]
    blob = json.dumps([r.evidence(NOW) for r in (*readings.values(), secret)])
    assert SECRET_IN_RECORDING not in blob and "test-token-not-a-secret" not in blob


def test_github_pagination_follows_link(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    alerts = json.loads((GH / "alerts-open.json").read_text())
    nxt = f"{API}/repositories/881234567/code-scanning/alerts?state=open&per_page=100&page=2"
    with respx.mock(assert_all_called=False) as router:
        _gh_routes(router)
        router.get(f"{API}/repos/{SLUG}/code-scanning/alerts", params={"state": "open"}).mock(
            return_value=httpx.Response(200, json=alerts[:1], headers={"Link": f'<{nxt}>; rel="next"'}))
        router.get(nxt).mock(return_value=httpx.Response(200, json=alerts[1:]))
        with cs.GitHub(SLUG, "GITHUB_TOKEN") as gh:
            [codeql] = [r for r in gh.code_scanning() if r.tool == "CodeQL"]
    assert len(codeql.findings) == 2


def test_github_no_analysis_and_no_token_are_errors(monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(MeasurementError, match=r"\$GITHUB_TOKEN is not set"):
        cs.GitHub(SLUG, "GITHUB_TOKEN")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    with respx.mock(assert_all_called=False) as router, cs.GitHub(SLUG, "GITHUB_TOKEN") as gh:
        _gh_routes(router, analyses="analyses-none.json")
        with pytest.raises(MeasurementError, match="HTTP 404: no analysis found"):
            gh.code_scanning()


# -- detect-secrets, for real ---------------------------------------------------------------------------------

def test_detect_secrets_finds_planted_key_without_keeping_it(tmp_path):
    r = cs.run_detect_secrets(_tree(tmp_path / "tms", planted=True))
    assert [(f.rule_id, f.file, f.line) for f in r.findings] == [("AWS Access Key", "src/cloud.py", 4)]
    assert r.findings[0].ref.startswith("hashed_secret=") and r.detail["files"] == 3
    assert "detect-secrets 1." in r.query and "scan --all-files" in r.query
    assert PLANTED not in json.dumps(r.evidence(NOW))


def test_detect_secrets_clean_tree_empty_and_missing(tmp_path):
    assert cs.run_detect_secrets(_tree(tmp_path / "clean", planted=False)).findings == []
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    with pytest.raises(MeasurementError, match="holds no files"):
        cs.run_detect_secrets(tmp_path / "empty")
    with pytest.raises(MeasurementError, match="not a directory"):
        cs.run_detect_secrets(tmp_path / "nope")


def test_baseline_accepts_only_audited_false_positives(tmp_path):
    root = _tree(tmp_path / "tms", planted=True)
    out = subprocess.run([sys.executable, "-m", "detect_secrets", "scan", "--all-files", "."], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    baseline = root / ".secrets.baseline"
    baseline.write_text(out)
    unaudited = cs.run_detect_secrets(root, baseline)           # in the baseline but never audited: still open
    assert [f.rule_id for f in unaudited.findings] == ["AWS Access Key"]
    assert unaudited.detail["unaudited_in_baseline"] == 1
    doc = json.loads(out)
    for items in doc["results"].values():
        for it in items:
            it["is_secret"] = False
    baseline.write_text(json.dumps(doc, indent=2))
    before = baseline.read_bytes()
    audited = cs.run_detect_secrets(root, baseline)
    assert audited.findings == [] and len(audited.detail["accepted_by_baseline_audit"]) == 1
    assert baseline.read_bytes() == before                        # the baseline is read, never written
    # a new secret is not covered by the old audit
    (root / "src" / "more.py").write_text('OTHER = "' + "AKIA" + 'ZX81MN0PQ4RT7VW2"\n')
    assert [f.file for f in cs.run_detect_secrets(root, baseline).findings] == ["src/more.py"]


# -- the checks themselves (called directly: no stack needed) --------------------------------------------------

def test_sec007_nothing_configured_is_an_error(tmp_path, evidence):
    with pytest.raises(MeasurementError, match="neither sarif files nor github_repo"):
        CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path), evidence)


def test_sec007_high_finding_fails_naming_rule_and_file(tmp_path, evidence):
    _copy_sarif(tmp_path, "codeql-python.sarif", "gitleaks-clean.sarif")
    with pytest.raises(AssertionError, match=r"high py/sql-injection src/tms/search.py:42"):
        CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, sarif=["ci/*.sarif"]), evidence)
    art = next(v for k, v in evidence.item.user_properties if k == "opsproof_artifact")
    assert art["name"] == "code_scans.json" and len(art["content"]["readings"]) == 2
    assert [r["verdict"] for r in evidence.records] == ["fail"]   # only CodeQL is a static analyzer here


def test_sec007_clean_recent_scan_passes(tmp_path, evidence):
    _copy_sarif(tmp_path, "semgrep.sarif", "gitleaks-clean.sarif")
    CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, sarif=["ci/*.sarif"]), evidence)
    [rec] = evidence.records
    assert rec["verdict"] == "pass" and rec["measured"]["open"]["medium"] == 1


def test_sec007_fail_on_is_policy(tmp_path, evidence):
    _copy_sarif(tmp_path, "semgrep.sarif")
    with pytest.raises(AssertionError, match="medium python.lang.security"):
        CHECKS.test_static_analysis_recent_and_clean(
            _policy(tmp_path, sarif=["ci/semgrep.sarif"], fail_on=["critical", "high", "medium"]), evidence)


def test_sec007_old_scan_fails(tmp_path, evidence):
    _copy_sarif(tmp_path, "codeql-old.sarif", "semgrep.sarif")
    with pytest.raises(AssertionError, match=r"stale: CodeQL: last scan 42\.\d+ d ago"):
        CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, sarif=["ci/*.sarif"]), evidence)


def test_sec007_undated_or_secrets_only_is_an_error(tmp_path, evidence):
    doc = json.loads((SARIF / "semgrep.sarif").read_text())
    doc["runs"][0]["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": []}]
    doc["runs"][0]["results"] = []
    (tmp_path / "semgrep.sarif").write_text(json.dumps(doc))
    with pytest.raises(MeasurementError, match="undated"):
        CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, sarif=["semgrep.sarif"]), evidence)
    _copy_sarif(tmp_path, "gitleaks-clean.sarif")
    with pytest.raises(MeasurementError, match="no static analyzer"):
        CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, sarif=["ci/gitleaks-clean.sarif"]),
                                                     Recorder(_Item()))


def test_sec007_from_github_api_fails_on_high_alert(tmp_path, evidence, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    with respx.mock(assert_all_called=False) as router:
        _gh_routes(router)
        with pytest.raises(AssertionError, match="high py/sql-injection src/tms/search.py:42"):
            CHECKS.test_static_analysis_recent_and_clean(_policy(tmp_path, github_repo=SLUG), evidence)


def test_sec008_shipped_fixture_repo_is_clean(evidence):
    pol = load(REPO / "opsproof.toml")
    assert pol.code_scans.secrets_scan_paths == ["fixtures/tms-repo"]
    CHECKS.test_secrets_scanning_clean(pol, evidence)
    [rec] = evidence.records
    assert rec["verdict"] == "pass" and rec["detail"]["files"] >= 3


def test_sec008_planted_key_fails_without_the_value(tmp_path, evidence):
    _tree(tmp_path / "tms", planted=True)
    with pytest.raises(AssertionError, match=r"critical AWS Access Key src/cloud.py:4") as exc:
        CHECKS.test_secrets_scanning_clean(_policy(tmp_path, secrets_scan_paths=["tms"]), evidence)
    assert PLANTED not in str(exc.value) and PLANTED not in _dump(evidence)
    assert next(v for k, v in evidence.item.user_properties if k == "opsproof_artifact")["name"] == "secret_scans.json"


def test_sec008_baseline_from_policy(tmp_path, evidence):
    root = _tree(tmp_path / "tms", planted=True)
    doc = json.loads(subprocess.run([sys.executable, "-m", "detect_secrets", "scan", "--all-files", "."], cwd=root,
                                    capture_output=True, text=True, check=True).stdout)
    for items in doc["results"].values():
        for it in items:
            it["is_secret"] = False
    (root / ".secrets.baseline").write_text(json.dumps(doc))
    CHECKS.test_secrets_scanning_clean(
        _policy(tmp_path, secrets_scan_paths=["tms"], secrets_baseline="tms/.secrets.baseline"), evidence)
    assert evidence.records[0]["detail"]["accepted_by_baseline_audit"][0]["rule_id"] == "AWS Access Key"


def test_sec008_tms_scanners_sarif_and_api(tmp_path, evidence, monkeypatch):
    _tree(tmp_path / "tms", planted=False)
    doc = json.loads((SARIF / "gitleaks-clean.sarif").read_text())
    doc["runs"][0]["results"] = [{
        "ruleId": "generic-api-key", "message": {"text": "generic-api-key has detected secret for file cfg.env."},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": "deploy/cfg.env"},
                                            "region": {"startLine": 2, "snippet": {"text": "SNIPPET-SECRET-VALUE"}}}}],
        "partialFingerprints": {"commitSha": "4e1c0a9", "email": "dev@example.com"}}]
    (tmp_path / "gitleaks.sarif").write_text(json.dumps(doc))
    with pytest.raises(AssertionError, match="critical generic-api-key deploy/cfg.env:2"):
        CHECKS.test_secrets_scanning_clean(
            _policy(tmp_path, secrets_scan_paths=["tms"], sarif=["gitleaks.sarif"]), evidence)
    assert "SNIPPET-SECRET-VALUE" not in _dump(evidence)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    ev2 = Recorder(_Item())
    with respx.mock(assert_all_called=False) as router:
        _gh_routes(router)
        with pytest.raises(AssertionError, match="stripe_api_key") as exc:
            CHECKS.test_secrets_scanning_clean(_policy(tmp_path, secrets_scan_paths=["tms"], github_repo=SLUG), ev2)
    assert SECRET_IN_RECORDING not in str(exc.value) and SECRET_IN_RECORDING not in _dump(ev2)
    assert {r["name"] for r in ev2.records} == {"detect-secrets (tms) open secrets",
                                                "gitleaks (GitHub code scanning) open secrets",
                                                "GitHub secret scanning open secrets"}


def test_sec008_without_paths_is_an_error(tmp_path, evidence):
    with pytest.raises(MeasurementError, match="secrets_scan_paths is empty"):
        CHECKS.test_secrets_scanning_clean(_policy(tmp_path, secrets_scan_paths=[]), evidence)


@pytest.mark.parametrize("section,message", [
    ('github_token_env = "ghp_0123456789abcdefABCDEF"', "NAME of an environment variable"),
    ('github_repo = "not a repo"', "not owner/name"),
    ('fail_on = ["severe"]', "fail_on"), ("fail_on = []", "fail_on"), ("max_age_days = 0", "max_age_days")])
def test_policy_refuses_bad_code_scans(tmp_path, section, message):
    f = tmp_path / "opsproof.toml"
    f.write_text(f"[code_scans]\n{section}\n")
    with pytest.raises(UsageError, match=message):
        load(f)

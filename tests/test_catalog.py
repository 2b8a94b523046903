"""The control catalog (controls.toml) against the suite, the violation cases, the README -- and its loaders.

Fast: no stack. The suite's markers are read by importing each test module of checks/, drills/ and acceptance/
by path and walking its marks (function marks, module `pytestmark`, and the marks of `pytest.param(...)` values
of a parametrize), so parametrized controls (TEL-001..007) count as well.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsproof import catalog, catalog_readme, waivers
from opsproof.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
DOORS = {"checks": "check", "drills": "drill", "acceptance": "acceptance"}

# Controls whose "can go red" proof is still missing (no violation case, no `proof` test). This set may only
# shrink: the test fails when a control outside it lacks a proof, and when one inside it gained one.
KNOWN_PROOF_GAPS: set[str] = set()


# ---------------------------------------------------------------------------------------------------------------
# the suite's markers


def _marks(obj) -> list:
    marks = getattr(obj, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    return [getattr(m, "mark", m) for m in marks]


def _import(path: Path):
    name = f"_opsproof_catalog_meta_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def collect_markers() -> dict[str, list[dict]]:
    """control id -> one dict per test that carries it: where, kind (by door), suites, marker kwargs."""
    out: dict[str, list[dict]] = {}
    for door, kind in DOORS.items():
        for path in sorted((REPO / door).glob("test_*.py")):
            module = _import(path)
            module_marks = _marks(module)
            for fname, fn in vars(module).items():
                if not fname.startswith("test_") or not callable(fn):
                    continue
                fmarks = module_marks + _marks(fn)
                # (control mark, extra marks of its pytest.param) pairs
                found = [(m, []) for m in fmarks if m.name == "control"]
                for pm in (m for m in fmarks if m.name == "parametrize"):
                    for value in (pm.args[1] if len(pm.args) > 1 else pm.kwargs.get("argvalues", [])):
                        pmarks = [getattr(x, "mark", x) for x in getattr(value, "marks", ())]
                        found += [(m, pmarks) for m in pmarks if m.name == "control"]
                for m, pmarks in found:
                    suites = {x.name for x in fmarks + pmarks if x.name in catalog.SUITES}
                    cid = m.args[0] if m.args else m.kwargs.get("id")
                    out.setdefault(cid, []).append({"where": f"{door}/{path.name}::{fname}", "kind": kind,
                                                    "suites": suites, "args": m.args, "kwargs": m.kwargs})
    return out


@pytest.fixture(scope="module")
def cat() -> catalog.Catalog:
    return catalog.load(REPO / "controls.toml")


@pytest.fixture(scope="module")
def markers() -> dict[str, list[dict]]:
    return collect_markers()


def test_every_marker_id_is_in_the_catalog_and_every_catalog_id_has_a_test(cat, markers):
    assert None not in markers, f"control marks without an id: {markers.get(None)}"
    assert sorted(set(markers) - set(cat.ids)) == [], "control ids used by a test but missing from controls.toml"
    assert sorted(set(cat.ids) - set(markers)) == [], "controls.toml ids that no test in checks/drills/acceptance carries"


def test_markers_agree_with_the_catalog(cat, markers):
    problems = []
    for cid, uses in sorted(markers.items()):
        c = cat.get(cid)
        for u in uses:
            if u["kwargs"] or len(u["args"]) != 1:  # title, severity, frameworks live in controls.toml only
                problems.append(f"{cid}: {u['where']} marks control({u['args']}, {u['kwargs']}): write "
                                f"control(\"{cid}\") -- the catalog holds its metadata")
            if u["kind"] != c.kind:
                problems.append(f"{cid}: {u['where']} is a {u['kind']}, the catalog says {c.kind}")
            if u["suites"] != set(c.suites):
                problems.append(f"{cid}: {u['where']} runs in {sorted(u['suites'])}, the catalog says "
                                f"{sorted(c.suites)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# every control can be shown red: a violation case (checks) or a proof test (drills, acceptance, weekly checks)


def _violation_red_ids() -> set[str]:
    from violation_cases import all_cases  # tests/ is on sys.path (rootdir conftest, no __init__.py)

    return {cid for case in all_cases() for cid in case.red}


def _defined(nodeid: str) -> bool:
    path, _, rest = nodeid.partition("::")
    names = rest.split("[", 1)[0].split("::")
    file = REPO / path
    if not file.is_file():
        return False
    scope = ast.parse(file.read_text()).body
    for name in names:
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            return False
        scope = node.body if isinstance(node, ast.ClassDef) else []
    return True


def test_every_proof_nodeid_exists(cat):
    missing = [f"{cid}: {p}" for cid in cat.ids for p in cat.get(cid).proof if not _defined(p)]
    assert not missing, "proof tests that do not exist:\n" + "\n".join(missing)


def test_every_control_can_be_shown_red(cat):
    red = _violation_red_ids()
    assert red - set(cat.ids) == set(), "violation cases name ids the catalog does not know"
    gaps = set()
    for cid in cat.ids:
        c = cat.get(cid)
        if c.kind == "check" and set(c.suites) & {"daily", "gate", "monthly"}:
            ok = cid in red                       # run by tests/test_controls_vs_stack.py on a real stack
        elif c.kind == "check":                   # weekly-only: a violation case or a proof test
            ok = cid in red or bool(c.proof)
        else:
            ok = bool(c.proof)
        if not ok:
            gaps.add(cid)
    assert gaps - KNOWN_PROOF_GAPS == set(), "controls with no violation case and no proof test"
    assert KNOWN_PROOF_GAPS - gaps == set(), "these now have a proof: remove them from KNOWN_PROOF_GAPS"


def test_readme_table_is_current(cat):
    text = (REPO / "README.md").read_text()
    from opsproof import policy

    table = cat.readme_table(policy.load(REPO / "opsproof.toml"))
    assert catalog_readme.current_table(text) == table, "README controls table is stale: run `opsproof catalog readme`"


def test_every_policy_key_resolves_in_the_project_policy(cat):
    from opsproof import policy

    pol = policy.load(REPO / "opsproof.toml")
    for cid in cat.ids:
        for t in cat.get(cid).thresholds:
            catalog.policy_value(pol, t.policy_key)


# ---------------------------------------------------------------------------------------------------------------
# selection


def test_select_by_id_severity_requirement_and_suite(cat):
    assert cat.select() == set(cat.ids)
    assert cat.select(ids=["SLO-003"]) == {"SLO-003"}
    assert cat.select(requirements=["SOC2:CC6.1"]) == set(cat.requirements()["SOC2"]["CC6.1"])
    assert "SEC-001" in cat.select(requirements=["soc2:CC6.1"])
    crit_gate = cat.select(severities=["critical"], suites=["gate"])
    assert crit_gate and all(cat.get(i).severity == "critical" and "gate" in cat.get(i).suites for i in crit_gate)
    assert cat.select(ids=["SLO-003"], severities=["critical"]) == set()
    both = cat.select(requirements=["SOC2:CC6.1", "ISO27001:A.8.16"])
    assert both == set(cat.requirements()["SOC2"]["CC6.1"]) | set(cat.requirements()["ISO27001"]["A.8.16"])


@pytest.mark.parametrize("kwargs,needle", [
    ({"ids": ["XYZ-001"]}, "SLO-003"),
    ({"severities": ["blocker"]}, "critical, high, medium, low"),
    ({"requirements": ["SOC2:CC99.1"]}, "SOC2:CC6.1"),
    ({"requirements": ["SOC2:CC1.1"]}, "no control covers"),
    ({"suites": ["nightly"]}, "weekly"),
])
def test_select_unknown_is_a_usage_error_listing_the_valid_ones(cat, kwargs, needle):
    with pytest.raises(UsageError) as exc:
        cat.select(**kwargs)
    assert exc.value.exit_code == 2 and needle in str(exc.value) and "\n" not in str(exc.value)


def test_requirements_map_frameworks_to_controls(cat):
    reqs = cat.requirements()
    assert set(reqs) == {"SOC2", "ISO27001"}
    assert "SLO-003" in reqs["ISO27001"]["A.8.16"]
    assert all(r in catalog.SOC2_CRITERIA for r in reqs["SOC2"])


# ---------------------------------------------------------------------------------------------------------------
# malformed catalogs


GOOD = """[SLO-003]
title = "p95 request latency meets the SLO"
area = "slo"
severity = "high"
kind = "check"
suites = ["daily"]
frameworks = { SOC2 = ["CC7.2"], ISO27001 = ["A.8.16"] }
policy_key = "slo.p95_ms_max"
operator = "<="
rationale = "Slow is the first sign of saturation."
remediation = "Find the slow routes and shed load."
"""


@pytest.mark.parametrize("change,needle", [
    (('severity = "high"', 'severity = "blocker"'), "severity"),
    (('suites = ["daily"]', 'suites = ["drill"]'), "suites"),
    (('"A.8.16"', '"A.9.99"'), "A.9.99"),
    (('"CC7.2"', '"CC7.9"'), "CC7.9"),
    (('policy_key = "slo.p95_ms_max"', 'policy_key = "slo.p95_max"'), "slo.p95_max"),
    (('operator = "<="', 'operator = "=<"'), "operator"),
    (('operator = "<="\n', ''), "policy_key and operator"),
    (('[SLO-003]', '[slo-3]'), "slo-3"),
    (('title = "p95 request latency meets the SLO"\n', ''), "title"),
    (('kind = "check"', 'kind = "check"\nowner = "me"'), "owner"),
    (('[SLO-003]', 'SLO-003 = 1\n[X]'), "SLO-003"),
])
def test_malformed_catalog_is_one_line_exit_2_naming_file_and_id(tmp_path, change, needle):
    f = tmp_path / "controls.toml"
    f.write_text(GOOD.replace(*change))
    with pytest.raises(UsageError) as exc:
        catalog.load(f)
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in msg and str(f) in msg and needle in msg, msg


def test_catalog_missing_or_not_toml(tmp_path):
    for content in (None, "[[[", ""):
        f = tmp_path / "controls.toml"
        if content is not None:
            f.write_text(content)
        with pytest.raises(UsageError) as exc:
            catalog.load(f)
        assert exc.value.exit_code == 2 and str(f) in str(exc.value)


def test_default_path_is_the_project_dir(monkeypatch, tmp_path):
    (tmp_path / "controls.toml").write_text(GOOD)
    monkeypatch.setenv("OPSPROOF_PROJECT_DIR", str(tmp_path))
    assert catalog.load().ids == ["SLO-003"]


# ---------------------------------------------------------------------------------------------------------------
# waivers


def _waivers(tmp_path, body: str, cat) -> waivers.Waivers:
    f = tmp_path / "waivers.toml"
    f.write_text(body)
    return waivers.load(f, cat)


W = """[[waiver]]
control = "TEL-007"
justification = "No CI webhook on this deployment until Q1."
approver = "head-of-platform@example.com"
expires = 2026-12-31

[[waiver]]
control = "CAD-003"
parameter = "agent_logs"
justification = "agent_logs partitions are dropped by design."
approver = "dba@example.com"
expires = 2026-06-30
"""


def test_waiver_applies_until_its_expiry_day_then_not(tmp_path, cat):
    w = _waivers(tmp_path, W, cat)
    node = "checks/test_telemetry.py::test_stream_fresh[ci_events]"
    hit = w.for_entry("TEL-007", node, dt.date(2026, 12, 31))
    assert hit is not None and hit.entry() == {"justification": "No CI webhook on this deployment until Q1.",
                                               "approver": "head-of-platform@example.com", "expires": "2026-12-31"}
    assert w.for_entry("TEL-007", node, dt.date(2027, 1, 1)) is None
    assert [x.control for x in w.expired(dt.date(2027, 1, 1))] == ["TEL-007", "CAD-003"]
    assert [x.control for x in w.expired(dt.date(2026, 7, 1))] == ["CAD-003"]
    assert w.for_entry("TEL-006", "checks/test_telemetry.py::test_stream_fresh[dlq_replays]", dt.date(2026, 1, 1)) is None


def test_parameter_waiver_matches_only_that_param(tmp_path, cat):
    w = _waivers(tmp_path, W, cat)
    day = dt.date(2026, 1, 1)
    assert w.for_entry("CAD-003", "checks/test_cadence.py::test_partitions_ahead[agent_logs]", day).parameter == "agent_logs"
    assert w.for_entry("CAD-003", "checks/test_cadence.py::test_partitions_ahead[spans]", day) is None
    assert w.for_entry("CAD-003", "checks/test_cadence.py::test_partitions_ahead", day) is None
    assert w.for_entry("CAD-003", "checks/test_cadence.py::test_partitions_ahead[agent_logs_old]", day) is None


@pytest.mark.parametrize("body,needle", [
    (W.replace('control = "TEL-007"', 'control = "TEL-099"'), "unknown control id 'TEL-099'"),
    (W.replace("expires = 2026-12-31\n", ""), "expires: Field required"),
    (W.replace("expires = 2026-12-31", 'expires = "2026-12-31"'), "must be a TOML date"),
    (W.replace("expires = 2026-12-31", "expires = 2026-12-31T10:00:00"), "not a date-time"),
    (W.replace('approver = "head-of-platform@example.com"\n', ""), "approver"),
    (W.replace('justification = "No CI webhook on this deployment until Q1."', 'justification = ""'),
     "justification"),
    (W.replace("[[waiver]]\ncontrol", "[[waiver]]\nreason = 'x'\ncontrol", 1), "reason"),
    ("[waiver]\ncontrol = 'TEL-007'\n", "array of tables"),
    ("[[waivers]]\ncontrol = 'TEL-007'\n", "unknown key"),
    ("[[waiver\n", "not valid TOML"),
])
def test_malformed_waivers_is_one_line_exit_2(tmp_path, cat, body, needle):
    with pytest.raises(UsageError) as exc:
        _waivers(tmp_path, body, cat)
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in msg and needle in msg and "waivers.toml" in msg, msg


def test_no_waivers_file_means_no_waivers_but_an_explicit_missing_path_is_an_error(tmp_path, monkeypatch, cat):
    monkeypatch.setenv("OPSPROOF_PROJECT_DIR", str(tmp_path))
    w = waivers.load(catalog=cat)
    assert len(w) == 0 and w.source is None and w.for_entry("TEL-007", "x::y", dt.date(2026, 1, 1)) is None
    with pytest.raises(UsageError) as exc:
        waivers.load(tmp_path / "nope.toml", cat)
    assert exc.value.exit_code == 2


def test_the_example_waivers_file_is_valid_and_not_the_default(cat):
    w = waivers.load(REPO / "waivers.example.toml", cat)
    assert len(w) >= 1 and all(x.control in cat for x in w.waivers)
    assert waivers.default_path().name == "waivers.toml"


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_list_show_and_readme_check(tmp_path, monkeypatch):
    from opsproof.catalog_cli import app

    monkeypatch.setenv("OPSPROOF_PROJECT_DIR", str(REPO))
    r = CliRunner().invoke(app, ["list", "--requirement", "SOC2:CC6.1", "--severity", "critical"])
    assert r.exit_code == 0 and "SEC-001" in r.output and "SLO-003" not in r.output, r.output
    r = CliRunner().invoke(app, ["list", "--requirement", "SOC2:CC42.1"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["show", "SLO-003", "--json"])
    assert r.exit_code == 0 and '"policy_key": "slo.p95_ms_max"' in r.output
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{catalog_readme.BEGIN}\n| old |\n{catalog_readme.END}\n\nrest\n")
    r = CliRunner().invoke(app, ["readme", "--check", "--readme", str(readme)])
    assert r.exit_code == 1
    assert CliRunner().invoke(app, ["readme", "--readme", str(readme)]).exit_code == 0
    assert CliRunner().invoke(app, ["readme", "--check", "--readme", str(readme)]).exit_code == 0
    text = readme.read_text()
    assert text.startswith("# x\n") and text.endswith(f"{catalog_readme.END}\n\nrest\n") and "| SLO-003 |" in text
    readme.write_text("# no markers\n")
    assert CliRunner().invoke(app, ["readme", "--readme", str(readme)]).exit_code == 2

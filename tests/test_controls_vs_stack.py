"""Every daily control PASSES on the healthy stack, and each violation case turns EXACTLY its controls red.

Each case (tests/violation_cases/, one module per topic) breaks one thing on the test session's stack
with real SQL or a callable, runs the WHOLE daily suite in a subprocess (`pytest -m daily`, no -k),
undoes the break (always) and asserts: the named controls have the named verdict and every other
daily control passes. False-alarm probes (`red={}`) must keep the whole suite green. A meta-test
fails when a daily control id has no case that turns it red.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import psycopg
import pytest

import suite_runner
from suite_runner import REPO, run_suite, verdicts
from violation_cases import Case, all_cases

CASES = all_cases()
CASE_BY_NAME = {c.name: c for c in CASES}

# Collect the daily suite in a subprocess and print every control id it holds (a plugin object, so
# nothing extra has to be importable there). Collection reaches the target, hence the stack.
_COLLECT = r"""
import json, sys, pytest
class Ids:
    ids = {}
    def pytest_collection_finish(self, session):
        for item in session.items:
            m = item.get_closest_marker("control")
            if m is not None:
                self.ids.setdefault(m.kwargs.get("id") or (m.args[0] if m.args else None), []).append(item.nodeid)
p = Ids()
code = pytest.main(["-p", "no:cacheprovider", "-q", "--collect-only", "--opsproof-no-evidence", "-m", "daily"], plugins=[p])
print("OPSPROOF-CONTROL-IDS " + json.dumps(p.ids))
sys.exit(int(code))
"""


def collect_daily_control_ids(stack_home) -> dict[str, list[str]]:
    env = dict(os.environ, OPSPROOF_HOME=str(stack_home), OPSPROOF_PROJECT_DIR=str(REPO))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run([sys.executable, "-c", _COLLECT], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OPSPROOF-CONTROL-IDS ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-2000:]
    ids = json.loads(line.split(" ", 1)[1])
    assert None not in ids, f"daily checks without a control id: {ids.get(None)}"
    return ids


@pytest.fixture(scope="module")
def daily_controls(stack, stack_home) -> dict[str, list[str]]:
    ids = collect_daily_control_ids(stack_home)
    assert ids, "the daily suite collected no control"
    return ids


@pytest.fixture(scope="module")
def healthy_fingerprints(stack, stack_home, tmp_path_factory):
    """The healthy daily run, with the stack's fingerprint before and after it: what a suite run changes by
    itself (e.g. audit rows of the advisors' canary) is not something a case's undo must restore."""
    out = tmp_path_factory.mktemp("evidence-healthy")
    cutoff = _settle(stack, stack_home)
    before = fingerprint(stack.admin_dsn(), cutoff)
    proc, results = run_suite(stack_home, out, "-m", "daily")
    # the audit log is append-only and suite runs append to it (its chain is checked instead: "audit chain ok")
    volatile = frozenset(_diff(before, fingerprint(stack.admin_dsn(), cutoff))) | {"rows ops.audit_log"}
    return (proc, results, out), volatile


@pytest.fixture(scope="module")
def healthy_run(healthy_fingerprints):
    return healthy_fingerprints[0]


@pytest.fixture(scope="module")
def volatile(healthy_fingerprints) -> frozenset:
    return healthy_fingerprints[1]


def test_every_daily_control_passes_on_the_healthy_stack(healthy_run, daily_controls):
    proc, results, _ = healthy_run
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-2000:]
    bad = {c["nodeid"]: (c["verdict"], c.get("message")) for c in results["controls"] if c["verdict"] != "pass"}
    assert not bad, bad
    assert proc.returncode == 0 and results["green"]
    assert {c["id"] for c in results["controls"]} == set(daily_controls)


def test_every_daily_control_has_a_violation_case(daily_controls):
    covered = {cid for c in CASES for cid in c.red}
    uncovered = sorted(set(daily_controls) - covered)
    assert not uncovered, (f"daily controls with no violation case that turns them red: {uncovered} "
                           "(add a Case to tests/violation_cases/<topic>.py)")


def test_case_declarations_are_well_formed(daily_controls):
    problems = []
    for c in CASES:
        if not c.name:
            problems.append(f"{c!r}: a case needs a name")
        for cid, verdict in c.red.items():
            if verdict not in ("fail", "error"):
                problems.append(f"{c.name}: {cid} -> {verdict!r} (fail or error)")
            if cid not in daily_controls:
                problems.append(f"{c.name}: {cid} is not a daily control")
        if c.inject is None and not c.env and not c.args and getattr(c, "prepare", None) is None:
            problems.append(f"{c.name}: injects nothing")
    assert not problems, problems


# -- running one case ------------------------------------------------------------------


def _takes_evidence_dir(fn) -> bool:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _step(step, stack, evidence_dir, superuser: bool = False) -> None:
    """SQL runs as the stack's `postgres` (or its superuser) with autocommit; a callable gets the Stack (and the
    evidence dir if it asks)."""
    if step is None:
        return
    if callable(step):
        step(stack, evidence_dir) if _takes_evidence_dir(step) else step(stack)
        return
    with psycopg.connect(stack.superuser_dsn() if superuser else stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(step)


_FINGERPRINT_TABLES = """
select n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname in ('ops', 'public', 'auth', 'storage') and c.relkind in ('r', 'p') and not c.relispartition
 order by 1, 2
"""
_FINGERPRINT_SETS = {   # each query returns one text column; compared as sets of rows
    "policies": "select format('%s.%s.%s:%s:%s:%s', schemaname, tablename, policyname, cmd, coalesce(qual, ''), "
                "coalesce(with_check, '')) from pg_policies",
    "grants": "select format('%s.%s:%s:%s', g.table_schema, g.table_name, g.grantee, g.privilege_type) "
              "from information_schema.role_table_grants g "
              "where g.grantee in ('anon', 'authenticated', 'service_role', 'authenticator', 'public') "
              "and not exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace "
              "where n.nspname = g.table_schema and c.relname = g.table_name and c.relispartition)",
    "routines": "select format('%s.%s', routine_schema, specific_name) from information_schema.routines "
                "where routine_schema in ('ops', 'public')",
    "flags": "select format('%s=%s', key, value) from ops.feature_flags",
    "live overrides": "select format('%s=%s by %s', key, value, owner) from ops.flag_overrides "
                      "where released_at is null and expires_at > now()",
    "budgets": "select format('%s=%s', key, value) from ops.budgets",
    "service accounts": "select format('%s:%s:%s', name, permissions, rotated_at) from ops.service_accounts",
    "backups": "select format('%s:%s:%s', id, taken_at, verified) from ops.backups",
}
# Tables the test runner tops up with fresh telemetry before every suite run (suite_runner.top_up): only their
# rows older than the case's start (minus the seed's 5-minute tail, with margin) are compared.
_TIME_COLUMN = {"ops.requests": "ts", "ops.health_probes": "ts", "ops.agent_tasks": "enqueued_at",
                "ops.spans": "started_at", "ops.agent_logs": "ts", "ops.outbox": "created_at", "ops.dlq_replays": "at",
                "ops.dlq": "created_at", "ops.ci_events": "at"}
_TOPPED_UP = set(getattr(suite_runner, "TOPPED_UP_TABLES", ()))
_TOP_UP_MARGIN = "10 minutes"

# sets where only a removal is a left-over (a case may legitimately leave an extra daily partition behind)
_GROW_ONLY = {"partitions"}


def fingerprint(dsn: str, cutoff=None) -> dict[str, object]:
    """A cheap picture of what a case may touch: row counts, RLS, policies, grants, partitions, config rows.
    Topped-up telemetry tables count only rows older than `cutoff` (a timestamptz)."""
    from psycopg import sql as q

    out: dict[str, object] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema, rel, rls, force in conn.execute(_FINGERPRINT_TABLES).fetchall():
            name = f"{schema}.{rel}"
            out[f"rls {name}"] = (rls, force)
            table = q.SQL("{}.{}").format(q.Identifier(schema), q.Identifier(rel))
            try:
                if name in _TOPPED_UP:
                    if cutoff is None or name not in _TIME_COLUMN:
                        continue
                    out[f"rows {name} (older than the case)"] = conn.execute(
                        q.SQL("select count(*) from {} where {} < %s or {} is null").format(
                            table, q.Identifier(_TIME_COLUMN[name]), q.Identifier(_TIME_COLUMN[name])),
                        (cutoff,)).fetchone()[0]
                else:
                    out[f"rows {name}"] = conn.execute(q.SQL("select count(*) from {}").format(table)).fetchone()[0]
            except psycopg.Error as exc:
                out[f"rows {name}"] = f"unreadable: {type(exc).__name__}"
        # partitions a case drops must come back; ones it adds (ensure_partitions) may stay
        out["partitions"] = frozenset(r[0] for r in conn.execute(
            "select format('%s.%s', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relispartition and n.nspname in ('ops', 'public')").fetchall())
        try:
            out["audit chain ok"] = bool(conn.execute("select ok from ops.verify_audit_chain()").fetchone()[0])
        except psycopg.Error as exc:
            out["audit chain ok"] = f"unreadable: {type(exc).__name__}"
        for key, sql in _FINGERPRINT_SETS.items():
            try:
                out[key] = frozenset(r[0] for r in conn.execute(sql).fetchall())
            except psycopg.Error as exc:
                out[key] = f"unreadable: {type(exc).__name__}"
    return out


def _diff(before: dict, after: dict, ignore=frozenset()) -> dict:
    out = {}
    for k in sorted(set(before) | set(after)):
        if k in ignore:
            continue
        b, a = before.get(k), after.get(k)
        if isinstance(b, frozenset) and isinstance(a, frozenset):
            gone, new = sorted(b - a)[:5], ([] if k in _GROW_ONLY else sorted(a - b)[:5])
            if gone or new:
                out[k] = {"gone": gone, "new": new}
        elif b != a:
            out[k] = (b, a)
    return out


def _describe(results: dict) -> list[str]:
    return [f"{c['id']} {c['verdict']}: {(c.get('message') or '')[:200]}" for c in results["controls"]
            if c["verdict"] != "pass"]


def _settle(stack, stack_home):
    """Top the telemetry up now (the suite run's own top-up then adds only rows newer than this) and return the
    cutoff before which a topped-up table's rows belong to the case's before/after picture."""
    if hasattr(suite_runner, "top_up"):
        suite_runner.top_up(stack_home)
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        return conn.execute(f"select now() - interval '{_TOP_UP_MARGIN}'").fetchone()[0]


def run_case(case: Case, stack, stack_home, evidence_dir, volatile=frozenset()):
    """prepare -> inject -> whole daily suite -> undo (always). Returns (proc, results, fingerprint diff)."""
    evidence_dir.mkdir(parents=True, exist_ok=True)
    cutoff = _settle(stack, stack_home)
    before = fingerprint(stack.admin_dsn(), cutoff)
    try:
        prepare = getattr(case, "prepare", None)
        if prepare is not None:
            prepare(stack, evidence_dir)
        _step(case.inject, stack, evidence_dir, case.superuser)
        proc, results = run_suite(stack_home, evidence_dir, "-m", "daily", *case.args, env=dict(case.env))
    finally:
        _step(case.undo, stack, evidence_dir, case.superuser)
    return proc, results, _diff(before, fingerprint(stack.admin_dsn(), cutoff), volatile)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_turns_exactly_its_controls_red(case, daily_controls, volatile, stack, stack_home, tmp_path):
    proc, results, left_over = run_case(case, stack, stack_home, tmp_path / "evidence", volatile)
    undo_msg = (f"\n  UNDO did not restore the stack (later cases would inherit it): {left_over}" if left_over else "")
    assert results is not None, (f"{case.name}: no results.json{undo_msg}\n"
                                 + proc.stdout[-3000:] + proc.stderr[-2000:])
    v = verdicts(results)
    ran = {c["id"] for c in results["controls"]}
    missing = sorted(set(daily_controls) - ran)
    wrong = {cid: f"expected {want}, got {v.get(cid)}" for cid, want in case.red.items() if v.get(cid) != want}
    collateral = sorted(f"{c['id']} {c['verdict']} ({c['nodeid']}): {(c.get('message') or '')[:300]}"
                        for c in results["controls"] if c["id"] not in case.red and c["verdict"] != "pass")
    assert not (wrong or collateral or missing or left_over), (
        f"{case.name} ({case.why})\n  intended controls not red as declared: {wrong}\n"
        f"  COLLATERAL reds (controls that should have stayed pass): {collateral}\n"
        f"  daily controls that did not run at all: {missing}{undo_msg}")
    if case.red:
        assert proc.returncode != 0 and not results["green"], f"{case.name}: red controls but a green run"
        for c in results["controls"]:
            if c["id"] in case.red and c["verdict"] != "pass":
                assert (c.get("message") or "").strip(), f"{c['id']}: a red verdict must say what it measured"
    else:
        assert proc.returncode == 0 and results["green"], (case.name, _describe(results), proc.stdout[-2000:])


SIX_ARTIFACTS = ("flags.json", "slo_snapshot.json", "outbox_lag.json", "alerts.sql.out", "trace-sample.txt",
                 "audit_digest.json")


def test_healthy_pack_verifies_and_holds_the_seed_artifacts(healthy_run):
    from opsproof.evidence.verify import verify_pack

    _, results, out = healthy_run
    pack = out / results["date"]
    for name in (*SIX_ARTIFACTS, "results.json", "junit.xml", "report.html", "manifest.json"):
        assert (pack / name).exists(), name
    assert verify_pack(pack).ok
    assert (pack / "allure-results").is_dir() and any((pack / "allure-results").iterdir())
    sample = [ln for ln in (pack / "trace-sample.txt").read_text().strip().splitlines()
              if not ln.startswith("source:")]  # the first line names the source of the traces
    assert len(sample) == 3, sample


def test_pack_never_contains_a_secret(healthy_run, stack):
    from opsproof.evidence.secrets import find_secrets

    _, results, out = healthy_run
    env = stack.env()
    secrets = [v for k, v in env.items() if k.endswith(("PASSWORD", "SECRET", "_KEY")) or k.startswith("OPSPROOF_KEY_")]
    assert len(secrets) >= 8
    assert find_secrets(out, secrets) == []


def test_xdist_gives_the_same_results_and_one_pack(healthy_run, stack_home, tmp_path):
    _, serial, _ = healthy_run
    proc, parallel = run_suite(stack_home, tmp_path, "-m", "daily", "-n", "2")
    assert parallel is not None, proc.stdout[-2000:]
    assert verdicts(parallel) == verdicts(serial)
    assert len(list(tmp_path.glob("????-??-??"))) == 1
    assert {c["nodeid"] for c in parallel["controls"]} == {c["nodeid"] for c in serial["controls"]}
    for name in SIX_ARTIFACTS:
        assert (tmp_path / parallel["date"] / name).exists(), name


def test_red_run_posts_one_slack_message_naming_the_failed_controls(stack, stack_home, tmp_path):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    case, kexpr = CASE_BY_NAME["WCH-006"], "test_active_alerts"
    try:
        _step(case.inject, stack, tmp_path)
        try:
            run_suite(stack_home, tmp_path / "red", "-m", "daily", "-k", kexpr, env={"ALERT_WEBHOOK_URL": url})
        finally:
            _step(case.undo, stack, tmp_path)
        run_suite(stack_home, tmp_path / "green", "-m", "daily", "-k", kexpr, env={"ALERT_WEBHOOK_URL": url})
    finally:
        server.shutdown()
    assert len(received) == 1, "one message for the red run, none for the green run"
    msg = received[0]
    assert "WCH-006" in json.dumps(msg) and msg["text"] and msg["blocks"]


def test_report_columns_and_allure_labels_carry_the_control_facts(healthy_run):
    import json as _json

    _, results, out = healthy_run
    pack = out / results["date"]
    html = (pack / "report.html").read_text()
    for needle in (">Control id</th>", ">Measured</th>", ">Required</th>", "SLO-001", "SEC-006"):
        assert needle in html, needle
    labels = []
    for f in (pack / "allure-results").glob("*-result.json"):
        labels += [(lab["name"], lab["value"]) for lab in _json.loads(f.read_text()).get("labels", [])]
    assert ("epic", "slo") in labels and ("epic", "security") in labels
    assert ("severity", "critical") in labels
    assert ("tag", "SOC2:CC6.1") in labels
    for c in results["controls"]:
        assert c["id"] and c["title"] and c["area"] and c["severity"] and c["frameworks"], c
        assert c["records"] and all("measured" in r and "threshold" in r for r in c["records"]), c["id"]


def test_reports_the_user_asks_for_go_where_asked_and_the_pack_keeps_a_copy(stack, stack_home, tmp_path):
    """A --junitxml the user asks for goes where asked: the plugin must not steal it."""
    junit = tmp_path / "mine" / "junit.xml"
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", "-k", "test_ci_self_heal",
                              f"--junitxml={junit}")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert junit.exists() and 'tests="1"' in junit.read_text()
    assert results["suite"] == "adhoc"  # a -k subset: its own folder, never the daily's junit.xml
    assert (tmp_path / "ev" / results["date"] / "adhoc" / results["run_id"] / "junit.xml").read_text() \
        == junit.read_text()

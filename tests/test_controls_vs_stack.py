"""Every daily control PASSES on the healthy stack and FAILS on a stack where that one thing is violated.

The violation is injected with real SQL on the test session's stack, the real suite runs in a
subprocess (`pytest -m daily -k <check>`), and the violation is undone afterwards.
"""

from __future__ import annotations

import psycopg
import pytest

from suite_runner import run_suite, verdicts

# control id -> (-k expression selecting its check, inject SQL, undo SQL)
VIOLATIONS = {
    "FLG-001/override": (
        "test_required_flag and emergencyStop",
        "insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at) values "
        "('autonomy.emergencyStop', 'true', 'violation-test', 't', 'inject', now() + interval '10 minutes')",
        "delete from ops.flag_overrides where owner = 'violation-test'"),
    "FLG-001/base": (
        "test_required_flag and otelEnabled",
        "update ops.feature_flags set value = 'false', updated_by = 'violation-test' where key = 'obs.otelEnabled'",
        "update ops.feature_flags set value = 'true', updated_by = 'migration' where key = 'obs.otelEnabled'"),
    "BUD-001": (
        "test_configured_budget_within_policy and concurrency",
        "update ops.budgets set value = 200 where key = 'agent.concurrency'",
        "update ops.budgets set value = 150 where key = 'agent.concurrency'"),
    "BUD-002": (
        "test_observed_agent_concurrency",
        "insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id) "
        "select 'violation', 'succeeded', now() - interval '3 hours', now() - interval '2 hours', "
        "now() - interval '1 hour', 'violation' from generate_series(1, 160)",
        "delete from ops.agent_tasks where kind = 'violation'"),
    "BUD-003": (
        "test_observed_replay_use",
        "insert into ops.dlq_replays (items, bytes, failed, at, requested_by) "
        "values (60, 1000, 0, now() - interval '1 hour', 'violation')",
        "delete from ops.dlq_replays where requested_by = 'violation'"),
    "SLO-001": (
        # every region down for 10 minutes (a replica-only failure is not downtime: the gate cuts over)
        "test_uptime",
        "update ops.health_probes set ok = false, detail = 'violation:' || coalesce(detail, '') "
        "where ts >= now() - interval '3 hours' and ts < now() - interval '3 hours' + interval '10 minutes' and ok",
        "update ops.health_probes set ok = true, detail = nullif(substr(detail, 11), '') "
        "where detail like 'violation:%'"),
    "SLO-002": (
        "test_success_rate",
        "insert into ops.requests (ts, route, status, duration_ms, source) "
        "select now() - make_interval(secs => g), '/api/loads', 500, 50, 'violation' from generate_series(1, 400) g",
        "delete from ops.requests where source = 'violation'"),
    "SLO-003": (
        "test_p95_latency",
        "insert into ops.requests (ts, route, status, duration_ms, source) "
        "select now() - make_interval(secs => g), '/api/loads', 200, 9000, 'violation' from generate_series(1, 800) g",
        "delete from ops.requests where source = 'violation'"),
    "WCH-001": (
        "test_outbox_lag",
        "insert into ops.outbox (created_at, published_at, topic) select now() - interval '2 hours', "
        "now() - interval '2 hours' + interval '20 seconds', 'violation' from generate_series(1, 6000)",
        "delete from ops.outbox where topic = 'violation'"),
    "WCH-002": (
        "test_agent_health",
        "insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id) "
        "select 'violation', 'failed', now() - interval '2 hours', now() - interval '2 hours', "
        "now() - interval '2 hours' + interval '1 second', 'violation' from generate_series(1, 400)",
        "delete from ops.agent_tasks where kind = 'violation'"),
    "WCH-003": (
        "test_dlq_replays",
        "insert into ops.dlq_replays (tenant_id, items, bytes, failed, at, requested_by) "
        "select '00000000-0000-0000-0000-000000000001', 1, 100, 0, now() - make_interval(mins => g), 'violation' "
        "from generate_series(1, 3) g",
        "delete from ops.dlq_replays where requested_by = 'violation'"),
    "WCH-004": (
        "test_ci_self_heal",
        "insert into ops.ci_events (branch, kind, at, detail) values ('main', 'self_heal', now() - interval '1 hour', "
        "'{\"violation\": true}')",
        "delete from ops.ci_events where detail ? 'violation'"),
    "WCH-005": (
        "test_trace_coverage",
        "insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id, canary) "
        "values ('violation', 'succeeded', now() - interval '1 hour', now() - interval '1 hour', "
        "now() - interval '59 minutes', 'violation', true)",
        "delete from ops.agent_tasks where kind = 'violation'"),
    "WCH-006": (
        "test_active_alerts",
        "insert into ops.alerts (severity, source, title) values ('critical', 'violation', 'injected outage')",
        "delete from ops.alerts where source = 'violation'"),
    "CAD-001": (
        "test_backup_freshness",
        "update ops.backups set taken_at = taken_at - interval '3 days'",
        "update ops.backups set taken_at = taken_at + interval '3 days'"),
    "CAD-002": (
        "test_agent_logs_ttl",
        "select ops.ensure_partitions('agent_logs', current_date - 20, current_date - 20); "
        "insert into ops.agent_logs (ts, level, message) values (now() - interval '20 days', 'info', 'violation')",
        "delete from ops.agent_logs where message = 'violation'"),
    "CAD-004": (
        "test_audit_chain",
        "select ops.audit('violation-test', 'violation.test', 'ops.audit_log', 'to be tampered', 't', '{}'::jsonb); "
        "set session_replication_role = replica; "
        "update ops.audit_log set reason = 'tampered' where action = 'violation.test'",
        "delete from ops.audit_log where action = 'violation.test'; set session_replication_role = origin"),
    "CAD-003": (
        "test_partitions_ahead and requests",
        "do $$ begin execute format('drop table ops.requests_%s', to_char(current_date + 7, 'YYYYMMDD')); end $$",
        "select ops.ensure_partitions('requests', current_date, current_date + 7)"),
    "SEC-001": (
        "test_cross_tenant_reads_are_zero",
        "create policy violation_leak on public.loads for select to authenticated using (true)",
        "drop policy violation_leak on public.loads"),
    "SEC-003": (
        "test_portal_matrix_equals_role_matrix",
        "insert into public.portal_roles (portal_key, app_role) values ('financial', 'viewer')",
        "delete from public.portal_roles where portal_key = 'financial' and app_role = 'viewer'"),
    "SEC-002": (
        "test_rls_enabled_everywhere",
        "alter table ops.ci_events disable row level security",
        "alter table ops.ci_events enable row level security"),
    "SEC-004": (
        "test_service_account_rotation",
        "update ops.service_accounts set rotated_at = rotated_at - interval '100 days' where name = 'ci@'",
        "update ops.service_accounts set rotated_at = rotated_at + interval '100 days' where name = 'ci@'"),
    "SEC-005": (
        "test_kill_switch_account_least_privilege",
        "update ops.service_accounts set permissions = permissions || 'flags:autonomy.emergencyStop'::text "
        "where name = 'ci@'",
        "update ops.service_accounts set permissions = array_remove(permissions, 'flags:autonomy.emergencyStop') "
        "where name = 'ci@'"),
    "SEC-006": (
        "test_supabase_advisors",
        "create table public.violation_no_rls (id int); grant select on public.violation_no_rls to anon",
        "drop table public.violation_no_rls"),
}


@pytest.fixture(scope="module")
def healthy_run(stack, stack_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("evidence-healthy")
    proc, results = run_suite(stack_home, out, "-m", "daily")
    return proc, results, out


def test_every_daily_control_passes_on_the_healthy_stack(healthy_run):
    proc, results, _ = healthy_run
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-2000:]
    bad = {c["nodeid"]: (c["verdict"], c.get("message")) for c in results["controls"] if c["verdict"] != "pass"}
    assert not bad, bad
    assert proc.returncode == 0 and results["green"]


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_control_fails_when_violated(case, stack, stack_home, tmp_path):
    kexpr, inject, undo = VIOLATIONS[case]
    control = case.split("/")[0]
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(inject)
        try:
            proc, results = run_suite(stack_home, tmp_path, "-m", "daily", "-k", kexpr)
        finally:
            conn.execute(undo)
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-2000:]
    v = verdicts(results)
    assert v.get(control) == "fail", (v, [c.get("message") for c in results["controls"]])
    assert proc.returncode != 0 and not results["green"]
    # the failure message says what drifted
    msgs = " ".join(c.get("message") or "" for c in results["controls"] if c["verdict"] == "fail")
    assert any(word in msgs for word in ("measured", "drifted", "broken")), msgs


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
    assert len((pack / "trace-sample.txt").read_text().strip().splitlines()) == 3


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
    kexpr, inject, undo = VIOLATIONS["WCH-006"]
    try:
        with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
            conn.execute(inject)
            try:
                run_suite(stack_home, tmp_path / "red", "-m", "daily", "-k", kexpr, env={"ALERT_WEBHOOK_URL": url})
            finally:
                conn.execute(undo)
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
    for needle in ("<th>Control</th>", "<th>Measured</th>", "<th>Threshold</th>", "SLO-001", "SEC-006"):
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
    """`opsproof cadence weekly` reads the drills' --junitxml: the plugin must not steal it."""
    junit = tmp_path / "mine" / "junit.xml"
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", "-k", "test_ci_self_heal",
                              f"--junitxml={junit}")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert junit.exists() and 'tests="1"' in junit.read_text()
    assert (tmp_path / "ev" / results["date"] / "junit.xml").read_text() == junit.read_text()

"""The operational cadence against the embedded stack: each task changes what it says and nothing else;
the run goes on past a failing task; records land in today's pack (verifiable); restore test RPO/RTO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest

from opsproof import policy as policy_mod
from opsproof.evidence.pack import PackWriter
from opsproof.evidence.verify import verify_pack
from opsproof.levers import cadence
from opsproof.levers import incident as inc

REPO = Path(__file__).resolve().parents[2]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))


@pytest.fixture(scope="module")
def pol():
    return policy_mod.load(REPO / "opsproof.toml")


@pytest.fixture
def ctx(stack, pol, tmp_path):
    env = stack.env()
    keys = {a: env[k] for a, k in (("autopilot@", "OPSPROOF_KEY_AUTOPILOT"), ("agents@", "OPSPROOF_KEY_AGENTS"),
                                   ("dlq@", "OPSPROOF_KEY_DLQ"), ("ci@", "OPSPROOF_KEY_CI"), ("n8n@", "OPSPROOF_KEY_N8N"),
                                   ("system@", "OPSPROOF_KEY_SYSTEM")) if k in env}
    return cadence.CadenceContext(dsn=stack.admin_dsn(), policy=pol, target="embedded", project_dir=REPO,
                                  scratch_dsn=stack.admin_dsn(), backups_dir=stack.backups, keys=keys,
                                  secrets=sorted(v for k, v in env.items() if k.endswith(("PASSWORD", "SECRET", "_KEY"))
                                                 or k.startswith("OPSPROOF_KEY_")),
                                  scan_paths=[tmp_path / "scan"])


@pytest.fixture
def db(stack):
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        yield conn


def md5(conn, sql: str) -> str:
    return conn.execute(f"select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from ({sql}) x").fetchone()[0]


# -- daily -------------------------------------------------------------------------------------------

def test_ttl_cleanup_removes_exactly_the_expired_logs(ctx, db):
    ttl = ctx.policy.cadence.agent_logs_ttl_days
    db.execute("select ops.ensure_partitions('agent_logs', current_date - %s, current_date - %s)", (ttl + 6, ttl - 1))
    db.execute("""insert into ops.agent_logs (ts, message) values
                  (now() - make_interval(days => %(t)s + 5), 'expired-old-partition'),
                  (now() - make_interval(days => %(t)s, hours => 1), 'expired-recent'),
                  (now() - make_interval(days => %(t)s) + interval '1 hour', 'kept-inside-ttl')""", {"t": ttl})
    within = f"select * from ops.agent_logs where ts >= now() - interval '{ttl - 1} days'"
    kept_before = md5(db, within)
    parts_before = db.execute("select count(*) from pg_inherits where inhparent = 'ops.agent_logs'::regclass").fetchone()[0]
    rec = cadence.ttl_cleanup(ctx)
    assert rec["ok"], rec
    assert rec["expired_rows"] >= 2 and rec["expired_left"] == 0 and rec["partitions_dropped"] >= 1
    assert db.execute(f"select count(*) from ops.agent_logs where ts < now() - interval '{ttl} days'").fetchone()[0] == 0
    assert db.execute("select count(*) from ops.agent_logs where message = 'kept-inside-ttl'").fetchone()[0] == 1
    assert md5(db, within) == kept_before
    parts_after = db.execute("select count(*) from pg_inherits where inhparent = 'ops.agent_logs'::regclass").fetchone()[0]
    assert parts_after == parts_before - rec["partitions_dropped"]


def test_partition_rotation_creates_ahead_and_drops_beyond_retention(ctx, db):
    keep = ctx.policy.evidence.retention_days
    ahead = ctx.policy.cadence.partitions_ahead_days
    future = db.execute("select 'requests_' || to_char(current_date + 3, 'YYYYMMDD')").fetchone()[0]
    assert db.execute(f"select count(*) from ops.{future}").fetchone()[0] == 0
    db.execute(f"drop table ops.{future}")
    db.execute("select ops.ensure_partitions('requests', current_date - %s, current_date - %s)", (keep + 20, keep + 20))
    db.execute("insert into ops.requests (ts, route, status, duration_ms) values "
               "(current_date - %s + interval '1 hour', '/old', 200, 1)", (keep + 20,))
    recent = "select * from ops.requests where ts >= current_date - 2"
    recent_before = md5(db, recent)
    rec = cadence.partition_rotation(ctx)
    assert rec["ok"], rec
    assert rec["created"]["requests"] >= 1 and rec["dropped"]["requests"] >= 1
    assert db.execute("select to_regclass(%s) is not null", (f"ops.{future}",)).fetchone()[0]
    assert db.execute("select count(*) from ops.requests where route = '/old'").fetchone()[0] == 0
    assert db.execute("""select count(*) from generate_series(current_date, current_date + %s, interval '1 day') d
                          where to_regclass('ops.requests_' || to_char(d, 'YYYYMMDD')) is null""", (ahead,)).fetchone()[0] == 0
    assert md5(db, recent) == recent_before
    assert cadence.partition_rotation(ctx)["created"]["requests"] == 0  # idempotent


def test_backup_freshness_passes_then_replaces_a_stale_backup(ctx, db):
    rec = cadence.backup_freshness(ctx)
    assert rec["ok"] and not rec["taken_now"] and rec.get("sha256_ok"), rec
    n = db.execute("select count(*) from ops.backups").fetchone()[0]
    saved = db.execute("select id, taken_at from ops.backups").fetchall()
    db.execute("update ops.backups set taken_at = taken_at - interval '40 hours'")
    try:
        rec = cadence.backup_freshness(ctx)
        assert rec["ok"] and rec["taken_now"] and rec["age_h"] < 1, rec
        assert db.execute("select count(*) from ops.backups").fetchone()[0] == n + 1
    finally:
        for bid, at in saved:
            db.execute("update ops.backups set taken_at = %s where id = %s", (at, bid))


def test_backup_freshness_fails_on_a_hosted_target_with_a_stale_backup(ctx, db):
    ctx.target = "env"
    saved = db.execute("select id, taken_at from ops.backups").fetchall()
    db.execute("update ops.backups set taken_at = taken_at - interval '40 hours'")
    try:
        rec = cadence.backup_freshness(ctx)
        assert not rec["ok"] and "h old" in rec["summary"]
    finally:
        for bid, at in saved:
            db.execute("update ops.backups set taken_at = %s where id = %s", (at, bid))


def test_budget_drift_reports_configured_policy_observed(ctx, db):
    rec = cadence.budget_drift(ctx)
    assert rec["ok"], rec
    assert {b["budget"] for b in rec["budgets"]} == {"agent.concurrency", "replay.batch_items", "replay.max_bytes",
                                                    "replay.fail_rate_pct"}
    before = md5(db, "select * from ops.budgets")
    row = db.execute("select value, updated_at, updated_by from ops.budgets where key = 'agent.concurrency'").fetchone()
    db.execute("update ops.budgets set value = 500 where key = 'agent.concurrency'")
    try:
        rec = cadence.budget_drift(ctx)
        assert not rec["ok"] and any("agent.concurrency: configured 500 above policy 150" in d for d in rec["drift"])
    finally:
        db.execute("update ops.budgets set value = %s, updated_at = %s, updated_by = %s where key = 'agent.concurrency'", row)
    assert md5(db, "select * from ops.budgets") == before


def test_known_good_snapshot_only_when_on_policy(ctx, db):
    n = db.execute("select count(*) from ops.flag_snapshots").fetchone()[0]
    rec = cadence.known_good_snapshot(ctx)
    assert rec["taken"], rec
    snap = inc.last_known_good(db)
    assert snap["id"] == rec["snapshot_id"] and snap["flags"]["autonomy.emergencyStop"] is False
    oid = db.execute("""insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
                        values ('autonomy.mode', '"SAFE"', 'test', 'test', 'test', now() + interval '1 minute')
                        returning id""").fetchone()[0]
    try:
        rec = cadence.known_good_snapshot(ctx)
        assert not rec["taken"] and "autonomy.mode" in rec["summary"]
    finally:
        db.execute("delete from ops.flag_overrides where id = %s", (oid,))
    assert db.execute("select count(*) from ops.flag_snapshots").fetchone()[0] == n + 1


# -- weekly ------------------------------------------------------------------------------------------

def test_dr_drill_records_pass_and_fail(ctx, tmp_path):
    (tmp_path / "test_ok.py").write_text("def test_drill_ok():\n    assert True\n")
    (tmp_path / "test_bad.py").write_text("def test_drill_bad():\n    assert False\n")
    ctx.project_dir = tmp_path
    ctx.drill_args = [str(tmp_path / "test_ok.py"), "-p", "no:opsproof"]
    rec = cadence.dr_drill(ctx)
    assert rec["ok"] and rec["tests"] == 1, rec
    ctx.drill_args = [str(tmp_path), "-p", "no:opsproof"]
    rec = cadence.dr_drill(ctx)
    assert not rec["ok"] and rec["failures"] == 1 and "test_drill_bad" in rec["failed"][0], rec


def test_portal_audit_matches_the_role_matrix(ctx):
    rec = cadence.portal_audit(ctx)
    assert rec["ok"] and rec["cells"] == 160, rec


def test_canary_sanity_flags_an_overridden_canary(ctx, db):
    assert cadence.canary_sanity(ctx)["ok"]
    oid = db.execute("""insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
                        values ('canary.rollout_percentage', '"RAMP_50"', 'test', 'test', 'test',
                                now() + interval '1 minute') returning id""").fetchone()[0]
    try:
        rec = cadence.canary_sanity(ctx)
        assert not rec["ok"] and "canary.rollout_percentage" in rec["summary"]
    finally:
        db.execute("delete from ops.flag_overrides where id = %s", (oid,))


def test_secrets_scan_names_the_file_never_the_secret(ctx, tmp_path):
    scan = tmp_path / "scan"
    (scan / "logs").mkdir(parents=True)
    (scan / "logs" / "clean.log").write_text("nothing to see\n")
    assert cadence.secrets_scan(ctx)["ok"]
    secret = ctx.secrets[0]
    (scan / "logs" / "leaky.log").write_text(f"connecting with {secret}\n")
    rec = cadence.secrets_scan(ctx)
    assert not rec["ok"] and rec["files_with_secrets"] == ["scan/logs/leaky.log"]
    assert secret not in json.dumps(rec)


# -- monthly -----------------------------------------------------------------------------------------

def test_key_rotation_rehearsal_proves_new_accepted_old_refused_and_changes_nothing(ctx, db):
    accounts = md5(db, "select * from ops.service_accounts")
    events = db.execute("select count(*) from ops.ingest_events").fetchone()[0]
    rec = cadence.key_rotation_rehearsal(ctx)
    assert rec["ok"], rec
    n8n = rec["accounts"]["n8n@"]
    assert n8n["ingest_status"] == {"new": 201, "old": 401} and n8n["registered_matches_deployed"]
    assert len(rec["accounts"]) == 6 and all(a["new_fingerprint"].startswith("sha256:") for a in rec["accounts"].values())
    assert all(a["new_fingerprint"] != a["old_fingerprint"] for a in rec["accounts"].values())
    assert md5(db, "select * from ops.service_accounts") == accounts
    assert db.execute("select count(*) from ops.ingest_events").fetchone()[0] == events
    assert not any(k in json.dumps(rec) for k in ctx.keys.values())


def test_restore_test_reports_plausible_rpo_rto(ctx, db):
    rec = cadence.restore_test(ctx)
    assert rec["ok"], {k: rec.get(k) for k in ("summary", "mismatched", "pg_restore_errors")}
    assert 0 < rec["rto_s"] < 300 and 0 < rec["rpo_s"] < 300, rec
    assert rec["tables"] > 20 and rec["rows"] > 1000
    assert rec["scratch_dropped"]
    assert db.execute("select count(*) from pg_database where datname like 'opsproof_restore_%'").fetchone()[0] == 0
    print(f"\nrestore test: {rec['tables']} tables, {rec['rows']} rows, dump {rec['dump_bytes']} B in {rec['dump_s']}s; "
          f"RTO {rec['rto_s']}s, RPO {rec['rpo_s']}s")


def test_cost_slo_review_summarises_30_days(ctx):
    """The test stack holds 3 days of history: the 27 unprobed days are not uptime (no false green)."""
    rec = cadence.cost_slo_review(ctx)
    slo = rec["measurements"]["slo"]
    assert slo["requests"] > 0 and rec["cost"]["database_bytes"] > 0
    assert slo["uptime_pct"] < 15, slo
    assert not rec["ok"] and [f for f in rec["findings"] if f.startswith("uptime ")] == rec["findings"], rec["findings"]


# -- the run, the pack, the CLI -------------------------------------------------------------------

def test_run_goes_on_past_a_failing_task_and_audits_each(ctx, db, monkeypatch):
    def boom(c):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cadence, "SCHEDULES", {**cadence.SCHEDULES, "daily": (
        ("boom", boom), ("budget_drift", cadence.budget_drift))})
    recs = cadence.run(ctx, "daily", log=lambda m: None)
    assert [(r["task"], r["ok"]) for r in recs] == [("boom", False), ("budget_drift", True)]
    assert "disk on fire" in recs[0]["summary"]
    acts = [r[0] for r in db.execute("select action from ops.audit_log where run_id = %s order by id", (ctx.run_id,))]
    assert acts == ["cadence.boom", "cadence.budget_drift"]


def test_amend_keeps_todays_files_and_verifies(tmp_path, ctx):
    root = tmp_path / "evidence"
    with PackWriter(root, date.today()) as pack:
        pack.add_json("results.json", {"suite": "daily", "green": True})
        pack.commit({"suite": "daily", "target": "embedded"})
    recs = [{"task": "budget_drift", "ok": True, "summary": "fine"}]
    path = cadence.amend_today_pack(root, recs, {"by": "test"}, ctx.secrets)
    assert verify_pack(path)
    assert json.loads((path / "results.json").read_text())["green"] is True
    assert json.loads((path / "cadence" / "budget_drift.json").read_text())["summary"] == "fine"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["metadata"]["suite"] == "daily" and manifest["metadata"]["amendments"][0]["by"] == "test"
    # a tampered pack is not re-sealed
    (path / "results.json").write_text('{"green": true, "forged": 1}')
    with pytest.raises(Exception, match="does not verify"):
        cadence.amend_today_pack(root, recs, {"by": "test"}, ctx.secrets)
    # a record holding a secret is refused
    (path / "results.json").unlink()
    import shutil
    shutil.rmtree(path)
    with pytest.raises(Exception, match="secret"):
        cadence.amend_today_pack(root, [{"task": "x", "ok": True, "summary": ctx.secrets[0]}], {}, ctx.secrets)


def test_cli_daily_writes_the_pack_and_bad_task_is_exit_2(stack, stack_home, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack").symlink_to(stack_home / "stack")
    env = {**os.environ, "OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO), "OPSPROOF_TARGET": "embedded"}
    root = tmp_path / "evidence"
    res = subprocess.run([OPSPROOF, "cadence", "daily", "--evidence-dir", str(root), "--json"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    out = json.loads(res.stdout)
    pack = Path(out["pack"])
    assert verify_pack(pack)
    assert sorted(p.name for p in (pack / "cadence").iterdir()) == sorted(
        f"{n}.json" for n, _ in cadence.SCHEDULES["daily"])
    res = subprocess.run([OPSPROOF, "cadence", "monthly", "--only", "nope", "--no-pack"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr

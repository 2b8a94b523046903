"""The operational cadence against the embedded stack: maintenance and rehearsals change what they say and nothing
else; the run goes on past a failing task (fail vs error); entries land in today's pack through the one pack writer
(verifiable, other kinds' files kept); restore test RPO/RTO; key rotation through the ingest over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest

from opsproof import policy as policy_mod
from opsproof.evidence import daypack
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
                                  scratch_dsn=stack.admin_dsn(), backups_dir=stack.backups, keys=keys)


@pytest.fixture
def secrets(stack):
    env = stack.env()
    return sorted(v for k, v in env.items() if k.endswith(("PASSWORD", "SECRET", "_KEY")) or k.startswith("OPSPROOF_KEY_"))


@pytest.fixture
def ingest_url(stack, ctx):
    """The real ingest app (the reference plane's), served over HTTP with the deployed n8n@ key."""
    import uvicorn

    from opsproof.plane.ingest import make_app
    from opsproof.plane.settings import PlaneSettings

    settings = PlaneSettings(SUPABASE_DB_URL=stack.admin_dsn(), N8N_SIGNING_KEY=ctx.keys["n8n@"])
    server = uvicorn.Server(uvicorn.Config(make_app(settings), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # uvicorn offers no started event
    assert server.started, "ingest did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


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


def test_backup_refresh_takes_a_backup_only_when_stale(ctx, db):
    rec = cadence.backup_refresh(ctx)
    assert rec["ok"] and not rec["taken_now"], rec
    n = db.execute("select count(*) from ops.backups").fetchone()[0]
    saved = db.execute("select id, taken_at from ops.backups").fetchall()
    db.execute("update ops.backups set taken_at = taken_at - interval '40 hours'")
    try:
        rec = cadence.backup_refresh(ctx)
        assert rec["ok"] and rec["taken_now"] and rec["previous_age_h"] > 40, rec
        assert db.execute("select count(*) from ops.backups").fetchone()[0] == n + 1
        assert db.execute("select count(*) from ops.audit_log where action = 'cadence.backup_refresh' and run_id = %s",
                          (ctx.run_id,)).fetchone()[0] == 1
    finally:
        for bid, at in saved:
            db.execute("update ops.backups set taken_at = %s where id = %s", (at, bid))


def test_no_review_is_left_in_the_cadence():
    """The reviews are checks now (CAD-001, BUD-*, SEC-003, CAD-005, CAD-006, SLO-001..003 at 30d)."""
    assert set(cadence.TASKS) == {"ttl_cleanup", "partition_rotation", "backup_refresh", "known_good_snapshot",
                                  "key_rotation", "restore_test", "static_scan"}
    assert cadence.SCHEDULES["weekly"] == ("static_scan",)  # a scan (SARIF for SEC-007), not a verdict
    assert cadence.tasks_of("daily", "env") == ["ttl_cleanup", "partition_rotation", "known_good_snapshot"]
    assert cadence.SUITE_RUNS["weekly"] == (("weekly", ("--opsproof-window=7d",)), ("drill", ()))
    assert cadence.SUITE_RUNS["monthly"] == (("monthly", ("--opsproof-window=30d",)),)
    src = Path(cadence.__file__).read_text()
    assert "opsproof.plane" not in src and "psycopg.connect" not in src and "ops.audit(" not in src


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


# -- rehearsals --------------------------------------------------------------------------------------

def test_key_rotation_rehearsal_through_the_ingest_over_http_changes_nothing(ctx, db, ingest_url):
    ctx.ingest_url = ingest_url
    accounts = md5(db, "select * from ops.service_accounts")
    events = db.execute("select count(*) from ops.ingest_events").fetchone()[0]
    rec = cadence.key_rotation_rehearsal(ctx)
    assert rec["ok"], rec
    n8n = rec["accounts"]["n8n@"]
    assert n8n["ingest_status"] == {"rehearsal": 401, "deployed": 201} and n8n["registered_matches_deployed"]
    assert len(rec["accounts"]) == 6 and all(a["new_fingerprint"].startswith("sha256:") for a in rec["accounts"].values())
    assert all(a["new_fingerprint"] != a["old_fingerprint"] for a in rec["accounts"].values())
    assert all(r["verdict"] == "pass" for r in rec["records"]) and len(rec["records"]) == 8
    assert md5(db, "select * from ops.service_accounts") == accounts
    assert db.execute("select count(*) from ops.ingest_events").fetchone()[0] == events
    assert not any(k in json.dumps(rec) for k in ctx.keys.values())


def test_key_rotation_without_a_reachable_ingest_is_an_error_not_a_pass(ctx, monkeypatch):
    ctx.ingest_url = "http://127.0.0.1:9"  # discard port: nothing listens
    monkeypatch.setattr(cadence, "SCHEDULES", {**cadence.SCHEDULES, "monthly": ("key_rotation",)})
    [entry] = cadence.run(ctx, "monthly", log=lambda m: None)
    assert entry["verdict"] == "error" and "not reachable" in entry["message"], entry


def test_restore_test_reports_plausible_rpo_rto(ctx, db):
    rec = cadence.restore_test(ctx)
    assert rec["ok"], {k: rec.get(k) for k in ("summary", "mismatched", "pg_restore_errors")}
    assert 0 < rec["rto_s"] < 300 and 0 < rec["rpo_s"] < 300, rec
    assert rec["tables"] > 20 and rec["rows"] > 1000
    assert rec["scratch_dropped"] and [r["verdict"] for r in rec["records"]] == ["pass"] * 3
    assert db.execute("select count(*) from pg_database where datname like 'opsproof_restore_%'").fetchone()[0] == 0
    print(f"\nrestore test: {rec['tables']} tables, {rec['rows']} rows, dump {rec['dump_bytes']} B in {rec['dump_s']}s; "
          f"RTO {rec['rto_s']}s, RPO {rec['rpo_s']}s")


def test_cost_review_is_an_artifact_with_its_query(ctx):
    art = cadence.cost_review(ctx)
    assert art["database_bytes"] > 0 and "ops.requests" in art["largest_tables"]
    assert "pg_database_size" in art["query"] and "verdict" not in art


# -- the run, the pack, the CLI -------------------------------------------------------------------

def test_run_fail_vs_error_goes_on_and_audits_each(ctx, db, monkeypatch):
    def boom(c):
        raise RuntimeError("disk on fire")

    def wrong(c):
        raise cadence.TaskFailed("restored copy differs")

    monkeypatch.setattr(cadence, "TASKS", {**cadence.TASKS, "boom": (boom, "maintenance", "Boom", True),
                                           "wrong": (wrong, "rehearsal", "Wrong", True)})
    monkeypatch.setattr(cadence, "SCHEDULES", {**cadence.SCHEDULES, "daily": ("boom", "wrong", "partition_rotation")})
    entries = cadence.run(ctx, "daily", log=lambda m: None)
    assert [(e["task"], e["kind"], e["verdict"]) for e in entries] == [
        ("boom", "maintenance", "error"), ("wrong", "rehearsal", "fail"), ("partition_rotation", "maintenance", "pass")]
    assert "disk on fire" in entries[0]["message"] and entries[2]["records"]
    acts = [r[0] for r in db.execute("select action from ops.audit_log where run_id = %s order by id", (ctx.run_id,))]
    assert acts == ["cadence.boom", "cadence.wrong", "cadence.partition_rotation.rotate", "cadence.partition_rotation"]
    doc = cadence.journal("daily", ctx.run_id, entries, date.today())  # the shared journal shape
    assert doc["verdict"] == "RED" and doc["summary"] == {"pass": 1, "fail": 1, "error": 1, "skipped": 0}


def test_write_pack_keeps_other_kinds_files_and_refuses_a_tampered_pack(tmp_path, ctx, secrets):
    root = tmp_path / "evidence"
    daily = daypack.open_day(root, None, "daily", "daily1")
    daily.add_json("results.json", {"suite": "daily", "green": True})
    daily.commit({"suite": "daily", "target": "embedded", "green": True})
    entries = cadence.run(ctx, "daily", only=["partition_rotation"], log=lambda m: None)
    path = cadence.write_pack(root, "daily", ctx.run_id, entries, {"by": "test", "target": "embedded"}, secrets)
    assert verify_pack(path)
    assert json.loads((path / "results.json").read_text())["green"] is True
    assert json.loads((path / "cadence/daily/partition_rotation.json").read_text())["verdict"] == "pass"
    journal = json.loads((path / "cadence/daily/results.json").read_text())
    assert journal["suite"] == "cadence-daily" and journal["controls"][0]["kind"] == "maintenance"
    meta = json.loads((path / "manifest.json").read_text())["metadata"]
    assert meta["suite"] == "daily" and meta["runs"]["cadence-daily"]["by"] == "test"
    (path / "results.json").write_text('{"green": true, "forged": 1}')  # a tampered pack is not re-sealed
    with pytest.raises(Exception, match="does not verify"):
        cadence.write_pack(root, "daily", ctx.run_id, entries, {"by": "test"}, secrets)
    import shutil

    shutil.rmtree(path)
    leak = [{**entries[0], "message": secrets[0]}]  # an entry holding a secret is refused
    with pytest.raises(Exception, match="secret"):
        cadence.write_pack(root, "daily", ctx.run_id, leak, {}, secrets)


def _cli_env(stack_home, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack").symlink_to(stack_home / "stack")
    return {**os.environ, "OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO), "OPSPROOF_TARGET": "embedded"}


def test_cli_daily_writes_the_pack_and_bad_task_is_exit_2(stack, stack_home, tmp_path):
    env = _cli_env(stack_home, tmp_path)
    root = tmp_path / "evidence"
    res = subprocess.run([OPSPROOF, "cadence", "daily", "--evidence-dir", str(root), "--json"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    out = json.loads(res.stdout)
    pack = Path(out["pack"])
    assert verify_pack(pack)
    assert sorted(p.name for p in (pack / "cadence" / "daily").iterdir()) == sorted(
        ["results.json", *(f"{n}.json" for n in cadence.SCHEDULES["daily"])])
    res = subprocess.run([OPSPROOF, "cadence", "monthly", "--only", "nope", "--no-pack"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_weekly_schedules_the_weekly_checks_and_the_drills(stack, stack_home, tmp_path, monkeypatch):
    """`opsproof cadence weekly` runs `pytest -m weekly` (7 days) and the drills through opsproof.runner, and records
    what it started (not their verdicts: those are in the runs' own files)."""
    from typer.testing import CliRunner

    from opsproof import runner
    from opsproof.levers.cadence_cli import app

    calls = []

    def fake_run_suite(kind, extra, with_plane=True):
        calls.append((kind, [a for a in extra if a.startswith("--opsproof-")]))
        return 0 if kind == "weekly" else 1

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    for k, v in _cli_env(stack_home, tmp_path).items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "evidence"
    res = CliRunner().invoke(app, ["weekly", "--evidence-dir", str(root), "--json"])
    assert calls == [("weekly", ["--opsproof-window=7d"]), ("drill", [])]
    assert res.exit_code == 1, res.output  # the drill run was not green: the cadence says so
    out, _ = json.JSONDecoder().raw_decode(res.output[res.output.index("{"):])  # stderr follows the JSON
    runs = json.loads((Path(out["pack"]) / "cadence/weekly/suite_runs.json").read_text())
    assert [(r["run"], r["exit_code"]) for r in runs] == [("weekly", 0), ("drill", 1)]


def test_weekly_reviews_are_checks_that_go_red(stack, stack_home, db, secrets, tmp_path):
    """CAD-005 (canary) and CAD-006 (secrets in the evidence) run in `pytest -m weekly` with SEC-003 (the portal
    audit); an overridden canary flag and a leaked secret turn exactly them red (the record names the file only)."""
    sys.path.insert(0, str(REPO / "tests"))
    from suite_runner import run_suite, verdicts

    evidence_dir = tmp_path / "evidence"
    (evidence_dir / "exports").mkdir(parents=True)
    (evidence_dir / "exports" / "leak.log").write_text(f"connecting with {secrets[0]}\n")
    oid = db.execute("""insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at)
                        values ('canary.rollout_percentage', '"RAMP_50"', 'test', 'test', 'test',
                                now() + interval '5 minutes') returning id""").fetchone()[0]
    try:
        proc, results = run_suite(stack_home, evidence_dir, "-m", "weekly", "checks/")
    finally:
        db.execute("delete from ops.flag_overrides where id = %s", (oid,))
    assert results is not None and results["suite"] == "weekly", proc.stdout[-3000:] + proc.stderr[-2000:]
    v = verdicts(results)
    assert (v.get("CAD-005"), v.get("CAD-006"), v.get("SEC-003")) == ("fail", "fail", "pass"), v
    cad6 = next(c for c in results["controls"] if c["id"] == "CAD-006")
    assert "exports/leak.log" in json.dumps(cad6) and secrets[0] not in json.dumps(results)

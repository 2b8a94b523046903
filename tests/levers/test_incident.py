"""Incident levers on the embedded stack with the reference plane running: each lever changes what it says,
is verified on the live processes, and `resume` restores ops.feature_flags / ops.budgets exactly (md5 of
every column). Bad input and bad resume ids: exit 2, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from opsproof import journal
from opsproof import policy as policy_mod
from opsproof.errors import UsageError
from opsproof.levers import incident as inc
from opsproof.measure import incident as mi
from opsproof.plane.supervisor import Supervisor

REPO = Path(__file__).resolve().parents[2]
OPSPROOF = str(Path(sys.executable).with_name("opsproof"))


@pytest.fixture(scope="module")
def plane(stack, stack_home, tmp_path_factory):
    """The plane against the session stack; a private OPSPROOF_HOME whose stack/ is the session stack's."""
    home = tmp_path_factory.mktemp("incident-home")
    (home / "stack").symlink_to(stack_home / "stack")
    sup = Supervisor(base_dir=home / "plane", stack_env=stack_home / "stack" / "env")
    sup.up(log=lambda m: None, wait_s=60)
    try:
        yield {"home": home, "sup": sup, "env": dict(l.split("=", 1) for l in (home / "plane" / "env").read_text().split("\n")
                                                    if "=" in l)}
    finally:
        sup.down(log=lambda m: None)


@pytest.fixture(scope="module")
def ctx(stack, plane):
    pol = policy_mod.load(REPO / "opsproof.toml")
    sink = plane["env"]["OPSPROOF_SINK_URL"]
    return inc.Context(dsn=stack.admin_dsn(), degrade_concurrency=pol.budgets.agent_concurrency_max // 4,
                       self_heal_url=f"{sink}/self-heal", alert_url=f"{sink}/slack", sink_url=sink)


@pytest.fixture
def db(stack):
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        yield conn


def state(conn) -> dict:
    md5 = mi.table_md5(conn).result
    md5["incidents"] = conn.execute(
        "select md5(coalesce(string_agg(i::text, '|' order by i.id), '')) from ops.incidents i").fetchone()[0]
    md5["incident_rows"] = conn.execute("select count(*) from ops.incidents").fetchone()[0]
    return md5


def cli(*args: str, home: Path, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO), "OPSPROOF_TARGET": "embedded"}
    return subprocess.run([OPSPROOF, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout,
                          input=input)


def flags(conn) -> dict:
    return dict(conn.execute("select key, value from ops.feature_flags").fetchall())


def budgets(conn) -> dict:
    return {k: float(v) for k, v in conn.execute("select key, value from ops.budgets").fetchall()}


def audit_actions(conn, iid: str) -> list[str]:
    return [r[0] for r in conn.execute("select action from ops.audit_log where incident_id = %s order by id", (iid,))]


# -- bad input -------------------------------------------------------------------------------------

BAD = [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"level": "urgent", "type": "emergency_stop", "description": "x"}', "unknown level 'urgent'"),
    ('{"level": "critical", "type": "meteor_strike", "description": "x"}', "unknown type 'meteor_strike'"),
    ('{"level": "critical", "type": "emergency_stop"}', "description: missing field"),
    ('{"level": "critical", "description": "x"}', "type: missing field"),
    ('{"level": "high", "type": "soft_degrade", "description": "   "}', "must not be blank"),
    ('{"level": "high", "type": "soft_degrade", "description": "x", "oops": 1}', "oops: unknown field"),
    ('{"level": 1, "type": "soft_degrade", "description": "x"}', "level"),
]


@pytest.mark.parametrize("raw,why", BAD)
def test_bad_input_is_refused_before_anything(raw, why):
    with pytest.raises(UsageError) as err:
        inc.parse_request(raw)
    assert why in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("raw,why", [BAD[0], BAD[2], BAD[3], BAD[4]])
def test_bad_input_cli_exit_2_changes_nothing(plane, db, raw, why):
    before = state(db)
    res = cli("incident", "handle", raw, home=plane["home"])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], res.stderr
    assert state(db) == before


def test_resume_unknown_or_malformed_id_exit_2(plane, db):
    before = state(db)
    for bad in (str(uuid.uuid4()), "not-a-uuid"):
        res = cli("incident", "resume", bad, home=plane["home"])
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert state(db) == before


# -- the levers, live -----------------------------------------------------------------------------

def wait_until(pred, timeout=15.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def test_emergency_stop_stops_the_live_plane_and_resume_restores_exactly(ctx, db):
    before = state(db)
    req = inc.IncidentRequest(level="critical", type="emergency_stop", description="test: big red button")
    doc = inc.handle(ctx, req)
    r = doc["response"]
    assert r["verified"], r["problems"]
    assert 0 < r["time_to_effect_s"] < 30 and not r["timed_out"]
    # every check names the statement that measured it (measure/incident.py)
    assert [c["what"] for c in r["checks"]][:2] == ["plane heartbeats reflect the flags",
                                                  "no task claimed and no outbox event published after the stop"]
    assert all("from ops." in c["query"] for c in r["checks"])
    f = flags(db)
    assert f["autonomy.emergencyStop"] is True and f["agents.autonomousEnabled"] is False
    assert f["outbox.relayEnabled"] is False and f["dlq.replayEnabled"] is False
    beats = {c: d for c, d in db.execute("select component, detail from ops.heartbeats where component like 'plane.%'")}
    assert beats["plane.worker"]["halted"] and beats["plane.relay"]["halted"] and beats["plane.replayer"]["halted"]
    # the worker really stopped: a task enqueued now stays queued
    tid = db.execute("insert into ops.agent_tasks (kind) values ('quote') returning id").fetchone()[0]
    time.sleep(2.5)
    assert db.execute("select status from ops.agent_tasks where id = %s", (tid,)).fetchone()[0] == "queued"
    assert {c["key"] for c in doc["changes"] if "before" in c} == set(inc.EMERGENCY_FLAGS)
    acts = audit_actions(db, doc["id"])
    assert acts[0] == "incident.open" and acts.count("incident.flag.set") == 4 and "incident.verify" in acts
    row = db.execute("select status, changes, response from ops.incidents where id = %s", (doc["id"],)).fetchone()
    assert row[0] == "open" and row[1] == doc["changes"] and row[2]["verified"] is True

    res = inc.resume_or_report(ctx, doc["id"])
    assert res["verification"]["verified"], res["verification"]
    after = state(db)
    assert {k: after[k] for k in ("feature_flags", "budgets")} == {k: before[k] for k in ("feature_flags", "budgets")}
    assert wait_until(lambda: db.execute("select status from ops.agent_tasks where id = %s", (tid,)).fetchone()[0]
                      == "succeeded"), "worker did not resume"
    assert "incident.resolve" in audit_actions(db, doc["id"])


def test_soft_degrade_lowers_concurrency_pauses_replay_and_resume_restores(ctx, db):
    before = state(db)
    doc = inc.handle(ctx, inc.IncidentRequest(level="high", type="soft_degrade", description="test: degrade"))
    r = doc["response"]
    assert r["verified"], r["problems"]
    assert r["time_to_effect_s"] < 60
    assert budgets(db)["agent.concurrency"] == ctx.degrade_concurrency
    f = flags(db)
    assert f["dlq.replayEnabled"] is False and f["autonomy.mode"] == "SAFE"
    assert all(f[k] == "SAFE" for k in inc.CANARY_FLAGS)
    worker = db.execute("select detail from ops.heartbeats where component = 'plane.worker'").fetchone()[0]
    assert worker["budget"] == ctx.degrade_concurrency and worker["mode"] == "SAFE"
    inc.resume_or_report(ctx, doc["id"])
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])


def test_rollback_without_known_good_snapshot_fails_clearly_and_changes_nothing(ctx, db):
    hidden = [r[0] for r in db.execute("update ops.flag_snapshots set known_good = false where known_good returning id")]
    try:
        before = state(db)
        with pytest.raises(inc.IncidentError, match="known-good snapshot"):
            inc.handle(ctx, inc.IncidentRequest(level="high", type="rollback", description="x"))
        assert state(db) == before  # no incident row, no write
    finally:
        db.execute("update ops.flag_snapshots set known_good = true where id = any(%s)", (hidden,))


def _save_rows(db):
    return (db.execute("select key, value, updated_at, updated_by from ops.feature_flags").fetchall(),
            db.execute("select key, value, updated_at, updated_by from ops.budgets").fetchall())


def _restore_rows(db, saved):
    from psycopg.types.json import Jsonb

    for k, v, at, by in saved[0]:
        db.execute("update ops.feature_flags set value = %s, updated_at = %s, updated_by = %s where key = %s",
                   (Jsonb(v), at, by, k))
    for k, v, at, by in saved[1]:
        db.execute("update ops.budgets set value = %s, updated_at = %s, updated_by = %s where key = %s", (v, at, by, k))


def test_rollback_reverts_to_known_good_posts_the_hook_and_resume_restores_the_bad_state(ctx, db, plane):
    saved = _save_rows(db)
    snap = inc.take_snapshot(ctx.dsn, "test: known good")
    try:
        # a bad deploy: a canary flag and a budget moved away from the known-good values
        db.execute("""update ops.feature_flags set value = '"RAMP_50"', updated_by = 'bad-deploy'
                       where key = 'canary.rollout_percentage'""")
        db.execute("update ops.budgets set value = 500, updated_by = 'bad-deploy' where key = 'replay.batch_items'")
        bad = state(db)
        doc = inc.handle(ctx, inc.IncidentRequest(level="high", type="rollback", description="test: rollback"))
        r = doc["response"]
        assert r["verified"], r["problems"]
        assert r["snapshot"]["id"] == snap["id"]
        assert flags(db)["canary.rollout_percentage"] == "SAFE" and budgets(db)["replay.batch_items"] == 50
        assert {c["key"] for c in doc["changes"] if "before" in c} == {"canary.rollout_percentage", "replay.batch_items"}
        got = httpx.get(f"{ctx.sink_url}/received", params={"path": "/self-heal"}).json()["items"]
        posted = [i["body"] for i in got if i["body"].get("incident_id") == doc["id"]]
        assert posted and posted[0]["audit_ids"] and "trace_links" in posted[0]
        inc.resume_or_report(ctx, doc["id"])
        after = state(db)
        assert (after["feature_flags"], after["budgets"]) == (bad["feature_flags"], bad["budgets"])
    finally:
        _restore_rows(db, saved)


def test_medium_incident_raises_an_alert_and_pages_resume_resolves_it(ctx, db):
    before = state(db)
    doc = inc.handle(ctx, inc.IncidentRequest(level="medium", type="performance_degradation",
                                              description="test: p95 creeping up"))
    assert doc["response"]["verified"], doc["response"]["problems"]
    alert = doc["changes"][0]["id"]
    assert db.execute("select severity, resolved_at from ops.alerts where id = %s", (alert,)).fetchone() == ("medium", None)
    got = httpx.get(f"{ctx.sink_url}/received", params={"path": "/slack"}).json()["items"]
    assert any(i["body"].get("incident_id") == doc["id"] for i in got)
    inc.resume_or_report(ctx, doc["id"])
    assert db.execute("select resolved_at is not null from ops.alerts where id = %s", (alert,)).fetchone()[0]
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])


def test_conflict_is_reported_not_clobbered_then_force(ctx, db):
    before = state(db)
    doc = inc.handle(ctx, inc.IncidentRequest(level="critical", type="emergency_stop", description="test: conflict"))
    saved = db.execute("select value, updated_at, updated_by from ops.feature_flags where key = 'dlq.replayEnabled'").fetchone()
    # someone else takes over the flag (keeps replay off, on their own authority): resume must not clobber it
    db.execute("update ops.feature_flags set value = 'false', updated_at = now(), updated_by = 'someone-else' "
               "where key = 'dlq.replayEnabled'")
    mid = state(db)
    with pytest.raises(inc.IncidentError, match="dlq.replayEnabled"):
        inc.resume_or_report(ctx, doc["id"])
    assert state(db)["feature_flags"] == mid["feature_flags"]  # nothing restored
    assert db.execute("select status from ops.incidents where id = %s", (doc["id"],)).fetchone()[0] == "open"
    assert "incident.resume.conflict" in audit_actions(db, doc["id"])
    res = inc.resume_or_report(ctx, doc["id"], force=True)
    assert any(r["forced"] for r in res["restored"])
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])
    assert saved  # (the forced restore put dlq.replayEnabled's original row back)


def test_two_open_stops_resuming_one_keeps_the_other(ctx, db):
    before = state(db)
    a = inc.handle(ctx, inc.IncidentRequest(level="critical", type="emergency_stop", description="test: A"))
    b = inc.handle(ctx, inc.IncidentRequest(level="critical", type="emergency_stop", description="test: B"))
    assert all(c.get("held") for c in b["changes"])
    res = inc.resume_or_report(ctx, a["id"])
    assert len(res["handed_over"]) == 4 and not res["restored"]
    assert flags(db)["autonomy.emergencyStop"] is True  # B still holds the stop
    inc.resume_or_report(ctx, b["id"])
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])


def test_exceeding_the_timeout_is_a_visible_failure(ctx, db, plane):
    import dataclasses

    before = state(db)
    tight = dataclasses.replace(ctx, timeouts={**ctx.timeouts, "critical": 0.001})
    doc = inc.handle(tight, inc.IncidentRequest(level="critical", type="emergency_stop", description="test: timeout"))
    r = doc["response"]
    assert r["timed_out"] and not r["verified"] and any("timeout" in p for p in r["problems"])
    res = cli("incident", "list", "--json", home=plane["home"])
    assert res.returncode == 0, res.stderr
    listed = {x["id"]: x for x in json.loads(res.stdout)}
    assert listed[doc["id"]]["status"] == "open" and listed[doc["id"]]["verified"] is False
    inc.resume_or_report(ctx, doc["id"])
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])
    res = cli("incident", "resume", doc["id"], home=plane["home"])
    assert res.returncode == 2 and "already resolved" in res.stderr


def test_cli_handle_resume_and_incident_test(plane, db):
    before = state(db)
    res = cli("incident", "handle", "-", home=plane["home"],
              input=json.dumps({"level": "critical", "type": "system_failure", "description": "cli: db on fire"}))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "VERIFIED" in res.stdout and "plan emergency_stop" in res.stdout
    iid = res.stdout.split()[1]
    res = cli("incident", "resume", iid, home=plane["home"])
    assert res.returncode == 0, res.stderr
    res = cli("incident", "test", "--json", home=plane["home"], timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)  # one journal entry of kind "rehearsal" per lever
    assert [e["title"] for e in out] == [f"incident lever {n} rehearsal"
                                         for n in ("emergency_stop", "soft_degrade", "rollback", "monitor")]
    assert all(e["kind"] == "rehearsal" and e["id"] is None and e["verdict"] == "pass" for e in out), out
    for e in out:
        journal.Entry.model_validate(e)
        assert [r["name"] for r in e["records"]] == ["time to effect", "resume verified", "tables restored byte-for-byte"]
        assert all(r["verdict"] == "pass" and r["query"] for r in e["records"]), e
        effect = e["records"][0]
        assert effect["unit"] == "s" and effect["measured"] <= effect["threshold"]
        restored = e["records"][2]
        assert restored["measured"] == restored["threshold"] and "md5" in restored["query"]
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])


def test_rehearsal_without_a_measured_effect_is_an_error_not_a_pass(ctx, db):
    """No false green: a lever whose effect nobody measured (verification off) is an error, whatever else held."""
    import dataclasses

    before = state(db)
    entry = inc.rehearse_lever(dataclasses.replace(ctx, verify=False), "emergency_stop", dict(inc.TEST_CASES)["emergency_stop"])
    assert entry.kind == "rehearsal" and entry.id is None and entry.verdict == "error", entry
    assert "not measured" in entry.message
    assert [r.name for r in entry.records] == ["resume verified", "tables restored byte-for-byte"]
    after = state(db)
    assert (after["feature_flags"], after["budgets"]) == (before["feature_flags"], before["budgets"])

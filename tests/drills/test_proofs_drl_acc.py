"""Every drill and acceptance control can go red: break the ONE thing it proves on the isolated stack + plane (a
plane component that does not obey, or a pipeline that drops what the step checks), run the real suite once, and
assert that exactly that control is red while the others of the run pass.

- DRL-003: a DLQ replayer that ignores its item rail (tests/drills/lax_replayer.py, loaded into the drill process);
- DRL-004: an ingest that accepts stale signatures (the real ingest restarted with a 24 h signature tolerance);
- ACC-001: the worker's execute span never reaches ops.spans (a trigger drops it: the trace is incomplete);
- ACC-002: a worker whose alert webhook is misrouted (the Slack message never reaches the channel);
- ACC-004: a worker that ignores the kill switch (tests/drills/rogue_worker.py, beside the real pool).

Acceptance runs deselect step 5 (ACC-005, today's daily pack: the isolated home has none; its own proofs are in
tests/test_acceptance_pack_step.py). Every break is undone in `finally` and the plane restored with `plane up`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from drill_helpers import REPO, DrillRun, wait_for

from opsproof.plane.supervisor import Supervisor

DRILL_IDS = ("DRL-001", "DRL-002", "DRL-003", "DRL-004")
ACC_IDS = ("ACC-001", "ACC-002", "ACC-003", "ACC-004")
HERE = Path(__file__).parent


def _rid(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:8]}"


def _results(evidence: Path) -> dict:
    found = sorted(evidence.glob("**/results*.json"), key=lambda f: f.stat().st_mtime)
    assert found, f"no results in {evidence}"
    return json.loads(found[-1].read_text())


def _verdicts(results: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in results["controls"]}


def _messages(results: dict) -> dict[str, str]:
    return {c["id"]: (c.get("message") or "")[:400] for c in results["controls"] if c["verdict"] != "pass"}


def _plane_env(dh) -> dict[str, str]:
    from opsproof.envfile import read_env

    return read_env(dh.home / "plane" / "env")


def _stop_component(dh, name: str) -> None:
    pid = Supervisor(dh.home / "plane").alive(name)
    assert pid, f"plane.{name} not running"
    os.killpg(pid, signal.SIGKILL)


def _spawn(dh, tmp: Path, argv: list[str], **env) -> subprocess.Popen:
    log = (tmp / f"{Path(argv[-1]).stem}.log").open("w")
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=dh.env(**env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _end(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _restore(dh) -> None:
    up = dh.cli("plane", "up")
    assert up.returncode == 0, up.stderr + up.stdout


def _worker_beat(dh, pid: int) -> bool:
    with dh.conn() as conn:
        return bool(conn.execute("select count(*) from ops.heartbeats where component = 'plane.worker' "
                                 "and detail->>'worker' like %s", (f"%:{pid}",)).fetchone()[0])


def _acceptance(dh, tmp: Path, run_id: str, timeout: float = 240) -> dict:
    evidence = tmp / f"evidence-{run_id}"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:randomly", "-m", "acceptance",
            "acceptance/", "-k", "not todays_pack", f"--opsproof-policy={dh.policy}",
            f"--opsproof-evidence-dir={evidence}"]
    proc = subprocess.run(argv, cwd=REPO, env=dh.env(OPSPROOF_RUN_ID=run_id), capture_output=True, text=True,
                          timeout=timeout)
    try:
        return _results(evidence)
    except AssertionError:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-2000:]) from None


def _assert_only(results: dict, ids: tuple[str, ...], red: str, verdict: str = "fail") -> dict[str, str]:
    got = _verdicts(results)
    msgs = _messages(results)
    assert {cid: got.get(cid) for cid in ids} == {cid: (verdict if cid == red else "pass") for cid in ids}, msgs
    assert msgs[red].strip(), f"{red}: a red verdict must say what it measured"
    return msgs


# -- drills --------------------------------------------------------------------------------------------------------

def test_drl003_a_replayer_that_ignores_the_item_rail_fails_replay_rails(drill_home, healthy, tmp_path):
    run = DrillRun(drill_home, tmp_path, "-p", "lax_replayer", run_id=_rid("lax"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    rc = run.wait(300)
    out = run.output()
    assert rc == 1, out[-3000:]
    msgs = _assert_only(_results(run.evidence), DRILL_IDS, "DRL-003")
    assert "the rail did NOT hold" in msgs["DRL-003"] and "items" in msgs["DRL-003"], msgs


def test_drl004_an_ingest_that_accepts_stale_signatures_fails_idempotency(drill_home, healthy, tmp_path):
    url = _plane_env(drill_home)["OPSPROOF_INGEST_URL"].rstrip("/")
    broken = None
    try:
        _stop_component(drill_home, "ingest")
        wait_for(lambda: _down(url), 15, "the plane's ingest to stop")
        broken = _spawn(drill_home, tmp_path, ["-m", "opsproof.plane.ingest"], OPSPROOF_SIGNATURE_TOLERANCE_S=86400)
        wait_for(lambda: _up(url), 30, "the lax ingest")
        run = DrillRun(drill_home, tmp_path, run_id=_rid("stale"))
        rc = run.wait(300)
    finally:
        _end(broken)
        _restore(drill_home)
    assert rc == 1, run.output()[-3000:]
    msgs = _assert_only(_results(run.evidence), DRILL_IDS, "DRL-004")
    assert "stale timestamp" in msgs["DRL-004"], msgs


def _down(url: str) -> bool:
    return not _up(url)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- acceptance ----------------------------------------------------------------------------------------------------

DROP_EXECUTE_SPANS = """
create or replace function ops.proof_drop_execute_span() returns trigger language plpgsql as $$
begin
  if new.name = 'agent.task.execute' then return null; end if;
  return new;
end $$;
create trigger proof_drop_execute_span before insert on ops.spans for each row
  execute function ops.proof_drop_execute_span();
"""
UNDO_DROP_EXECUTE_SPANS = ("drop trigger if exists proof_drop_execute_span on ops.spans; "
                           "drop function if exists ops.proof_drop_execute_span()")


def test_acc001_execute_spans_lost_fails_end_to_end(drill_home, healthy, tmp_path):
    with drill_home.conn() as conn:
        conn.execute(DROP_EXECUTE_SPANS)
        try:
            results = _acceptance(drill_home, tmp_path, _rid("nospan"))
        finally:
            conn.execute(UNDO_DROP_EXECUTE_SPANS)
        assert conn.execute("select count(*) from pg_trigger where tgname = 'proof_drop_execute_span'"
                            ).fetchone()[0] == 0
    msgs = _assert_only(results, ACC_IDS, "ACC-001")
    assert "span trace ids" in msgs["ACC-001"], msgs


def test_acc002_misrouted_alert_webhook_fails_forced_error(drill_home, healthy, tmp_path):
    sink = _plane_env(drill_home)["OPSPROOF_SINK_URL"].rstrip("/")
    worker = None
    try:
        _stop_component(drill_home, "worker")
        worker = _spawn(drill_home, tmp_path, ["-m", "opsproof.plane.worker"],
                        ALERT_WEBHOOK_URL=f"{sink}/misrouted")
        wait_for(lambda: _worker_beat(drill_home, worker.pid), 30, "the misrouted worker's heartbeat")
        results = _acceptance(drill_home, tmp_path, _rid("misroute"))
    finally:
        _end(worker)
        _restore(drill_home)
    msgs = _assert_only(results, ACC_IDS, "ACC-002")
    assert "no Slack-format message" in msgs["ACC-002"], msgs


def test_acc004_a_worker_that_ignores_the_kill_switch_fails_the_step(drill_home, healthy, tmp_path):
    rogue = None
    try:
        rogue = _spawn(drill_home, tmp_path, [str(HERE / "rogue_worker.py")])
        wait_for(lambda: _worker_beat(drill_home, rogue.pid), 30, "the rogue worker's heartbeat")
        results = _acceptance(drill_home, tmp_path, _rid("rogue"))
    finally:
        _end(rogue)
    msgs = _assert_only(results, ACC_IDS, "ACC-004")
    assert "emergency stop" in msgs["ACC-004"] or "halted" in msgs["ACC-004"], msgs

"""Every `opsproof levers` subcommand, through the real CLI against the isolated stack: list, list --all,
list --json, release --stale (overrides and a stale replica pause), release --run (the documented recovery
command: it crashed with an AttributeError once), release --id, and bad input (one line on stderr, exit 2,
nothing changed)."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest
from drill_helpers import audit_actions, effective, wait_for

from opsproof.levers import overrides, replica
from opsproof.plane.supervisor import Supervisor

KEY = "autonomy.emergencyStop"


def _run() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def _one_line_error(out, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("opsproof: ") or "Error" in lines[0], lines
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _audit_max(dh) -> int:
    with dh.conn() as conn:
        return conn.execute("select coalesce(max(id), 0) from ops.audit_log").fetchone()[0]


def _expired(dh, oid: int) -> bool:
    with dh.conn() as conn:
        return conn.execute("select expires_at <= now() from ops.flag_overrides where id = %s", (oid,)).fetchone()[0]


@pytest.fixture
def released_after(drill_home):
    """Whatever a test leaves held is released at the end (the next proof starts steady)."""
    runs: list[str] = []
    yield runs
    for r in runs:
        overrides.release_run(drill_home.dsn, r, "test cleanup")


def test_list_list_all_and_json(drill_home, healthy, released_after):
    run = _run()
    released_after.append(run)
    oid = overrides.take_override(drill_home.dsn, KEY, True, "tests", run, "cli list test", 60)
    out = drill_home.cli("levers", "list")
    assert out.returncode == 0, out.stderr
    assert str(oid) in out.stdout and "active" in out.stdout and run in out.stdout, out.stdout
    js = drill_home.cli("levers", "list", "--json")
    assert js.returncode == 0, js.stderr
    rows = {r["id"]: r for r in json.loads(js.stdout)}
    assert rows[oid]["state"] == "active" and rows[oid]["run_id"] == run and rows[oid]["key"] == KEY
    overrides.release(drill_home.dsn, [oid], run, "cli list test done")
    js = json.loads(drill_home.cli("levers", "list", "--json").stdout)
    assert oid not in [r["id"] for r in js], "released overrides are history: only with --all"
    full = drill_home.cli("levers", "list", "--all", "--json", "--limit", "10000")
    assert full.returncode == 0, full.stderr
    assert [r["state"] for r in json.loads(full.stdout) if r["id"] == oid] == ["released"]
    table = drill_home.cli("levers", "list", "--all")
    assert table.returncode == 0 and "released" in table.stdout, table.stdout


def test_release_run_releases_that_run_only_and_is_audited(drill_home, healthy, released_after):
    mine, other = _run(), _run()
    released_after += [mine, other]
    ids = [overrides.take_override(drill_home.dsn, KEY, True, "tests", mine, "cli release --run", 60),
           overrides.take_override(drill_home.dsn, "autonomy.mode", "SAFE", "tests", mine, "cli release --run", 60)]
    theirs = overrides.take_override(drill_home.dsn, KEY, True, "tests", other, "someone else's", 60)
    out = drill_home.cli("levers", "release", "--run", mine)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AttributeError" not in out.stderr
    assert f"released 2 override(s) of run {mine}" in out.stdout, out.stdout
    with drill_home.conn() as conn:
        held = conn.execute("select id from ops.flag_overrides where released_at is null and id = any(%s)",
                            (ids + [theirs],)).fetchall()
        assert held == [(theirs,)], "only that run's overrides are released"
        reason = conn.execute("select reason from ops.audit_log where run_id = %s and action = 'flag.override.release'",
                              (mine,)).fetchone()[0]
        assert "release --run" in reason
    again = drill_home.cli("levers", "release", "--run", mine)
    assert again.returncode == 0 and "released 0 override(s)" in again.stdout, again.stdout + again.stderr
    overrides.release_run(drill_home.dsn, other, "test cleanup")
    with drill_home.conn() as conn:
        assert effective(conn, KEY) == (False, False, False)


def test_release_run_resumes_a_replica_pause_that_run_holds(drill_home, healthy):
    run = _run()
    replica.pause_replay(drill_home.dsn, drill_home.replica_dsn, run, "tests", "cli release --run pause", 120)
    try:
        assert replica.is_paused(drill_home.replica_dsn)
        out = drill_home.cli("levers", "release", "--run", run)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"resumed WAL replay paused by run {run}" in out.stdout, out.stdout
        assert not replica.is_paused(drill_home.replica_dsn)
        with drill_home.conn() as conn:
            assert audit_actions(conn, run)[-1] == "replica.replay.resume"
    finally:
        if replica.is_paused(drill_home.replica_dsn):
            replica.resume_replay(drill_home.dsn, drill_home.replica_dsn, run, "test cleanup")


def test_release_stale_overrides_and_a_stale_replica_pause(drill_home, healthy):
    """`release --stale` by hand: for a target whose own services do not auto-heal (here: the gate is stopped,
    so it cannot resume the pause first)."""
    run = _run()
    oid = overrides.take_override(drill_home.dsn, KEY, True, "tests", run, "cli stale test", 1)
    gate = Supervisor(drill_home.home / "plane").alive("gate")
    assert gate, "the plane's gate is not running"
    os.killpg(gate, signal.SIGKILL)
    wait_for(lambda: Supervisor(drill_home.home / "plane").alive("gate") is None, 30, "the gate to be gone")
    try:
        replica.pause_replay(drill_home.dsn, drill_home.replica_dsn, run, "tests", "cli stale pause", 1)
        wait_for(lambda: _expired(drill_home, oid) and replica.pause_lease(drill_home.dsn)["expired"], 60,
                 "both leases to expire")
        listed = drill_home.cli("levers", "list")
        assert listed.returncode == 0 and "stale" in listed.stdout and run in listed.stdout, listed.stdout
        out = drill_home.cli("levers", "release", "--stale")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"released stale override #{oid}" in out.stdout, out.stdout
        assert f"resumed WAL replay left paused by tests (run {run})" in out.stdout, out.stdout
        assert not replica.is_paused(drill_home.replica_dsn)
        with drill_home.conn() as conn:
            assert conn.execute("select released_at is not null from ops.flag_overrides where id = %s",
                                (oid,)).fetchone()[0]
            assert "flag.override.release_stale" in [r[0] for r in conn.execute(
                "select action from ops.audit_log where detail->'runs' ? %s", (run,))]
        again = drill_home.cli("levers", "release", "--stale")
        assert again.returncode == 0 and again.stdout.strip() == "no stale overrides", again.stdout
    finally:
        if replica.is_paused(drill_home.replica_dsn):
            replica.resume_replay(drill_home.dsn, drill_home.replica_dsn, run, "test cleanup")
        up = drill_home.cli("plane", "up")
        assert up.returncode == 0, up.stderr


def test_release_id(drill_home, healthy, released_after):
    run = _run()
    released_after.append(run)
    oid = overrides.take_override(drill_home.dsn, KEY, True, "tests", run, "cli release --id", 60)
    out = drill_home.cli("levers", "release", "--id", str(oid))
    assert out.returncode == 0 and f"released 1 override(s): [{oid}]" in out.stdout, out.stdout + out.stderr
    with drill_home.conn() as conn:
        assert effective(conn, KEY) == (False, False, False)


@pytest.mark.parametrize("argv,needles", [
    (("levers", "release"), ("--stale", "--run", "--id")),
    (("levers", "release", "--run", ""), ("--run",)),
    (("levers", "release", "--run", "no such run; drop table x"), ("not a run id",)),
    (("levers", "release", "--id", "abc"), ("--id",)),
    (("levers", "release", "--id", "0"), ("--id",)),
    (("levers", "release", "--run", "never-ran-0000"), ("unknown run id", "never-ran-0000")),
    (("levers", "release", "--id", "987654321"), ("no override with id 987654321",)),
    (("levers", "list", "--limit", "0"), ("--limit",)),
    (("levers", "nosuch"), ()),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(drill_home, healthy, argv, needles):
    before = _audit_max(drill_home)
    fp = overrides.fingerprint(drill_home.dsn)
    out = drill_home.cli(*argv)
    _one_line_error(out, *needles)
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert _audit_max(drill_home) == before and overrides.fingerprint(drill_home.dsn) == fp


def test_bad_input_is_refused_before_anything_is_released(drill_home, healthy, released_after):
    """`--stale --run <unknown>`: the unknown run id is caught before the stale override is touched."""
    run = _run()
    released_after.append(run)
    oid = overrides.take_override(drill_home.dsn, KEY, True, "tests", run, "cli validate-first", 1)
    wait_for(lambda: _expired(drill_home, oid), 60, "the lease to expire")
    before = _audit_max(drill_home)
    out = drill_home.cli("levers", "release", "--stale", "--run", "never-ran-0001")
    _one_line_error(out, "unknown run id")
    assert _audit_max(drill_home) == before
    with drill_home.conn() as conn:
        assert conn.execute("select released_at is null from ops.flag_overrides where id = %s", (oid,)).fetchone()[0]
    overrides.release_stale(drill_home.dsn, run_id=run)

"""`opsproof stack`: up/down/up, idempotent up, status exit codes, reset, busy port, missing binaries, root/non-root."""

from __future__ import annotations

import os
import pwd
import re
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest

from helpers import run_cli
from opsproof.envfile import read_env


@pytest.fixture
def home():
    d = Path(tempfile.mkdtemp(prefix="opsproof-life-"))
    os.chmod(d, 0o755)
    yield d
    run_cli("stack", "down", home=d)
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def _pids(home: Path) -> list[int]:
    out = []
    for pidfile in home.glob("stack/data/*/postmaster.pid"):
        out.append(int(pidfile.read_text().splitlines()[0]))
    return out


def _alive(pid: int) -> bool:
    """Alive = exists and is not a zombie (containers' PID 1 may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_down_up_round_trip_keeps_data_and_leaves_no_process(home):
    up = run_cli("stack", "up", "--days", "0", home=home)
    assert up.returncode == 0, up.stderr
    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"], autocommit=True) as conn:
        conn.execute("insert into ops.ci_events (branch, kind) values ('main', 'roundtrip-marker')")
    pids = _pids(home)
    assert len(pids) == 2 and all(_alive(p) for p in pids)

    again = run_cli("stack", "up", home=home)
    assert again.returncode == 0 and "already running" in again.stderr

    down = run_cli("stack", "down", home=home)
    assert down.returncode == 0
    assert not any(_alive(p) for p in pids)
    status = run_cli("stack", "status", home=home)
    assert status.returncode == 1 and "primary not running" in status.stderr

    up2 = run_cli("stack", "up", home=home)
    assert up2.returncode == 0, up2.stderr
    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"]) as conn:
        assert conn.execute("select count(*) from ops.ci_events where kind = 'roundtrip-marker'").fetchone()[0] == 1
    st = run_cli("stack", "status", home=home)
    assert st.returncode == 0 and "streaming" in st.stdout


def test_status_and_env_never_print_secrets(home):
    assert run_cli("stack", "up", "--days", "0", home=home).returncode == 0
    env = read_env(home / "stack" / "env")
    secrets = [env[k] for k in ("POSTGRES_PASSWORD", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY")]
    for args in (("stack", "status"), ("stack", "status", "--json"), ("stack", "env")):
        out = run_cli(*args, home=home)
        assert out.returncode == 0
        assert not any(s in out.stdout + out.stderr for s in secrets), args
    shown = run_cli("stack", "env", "--show-secrets", home=home)
    assert env["SUPABASE_JWT_SECRET"] in shown.stdout
    assert oct((home / "stack" / "env").stat().st_mode & 0o777) == "0o600"


def test_reset_rebuilds_the_data(home):
    assert run_cli("stack", "up", "--days", "0", home=home).returncode == 0
    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"], autocommit=True) as conn:
        conn.execute("insert into ops.ci_events (branch, kind) values ('main', 'reset-marker')")
    assert run_cli("stack", "reset", "--days", "0", home=home).returncode == 0
    env2 = read_env(home / "stack" / "env")
    assert env2["SUPABASE_JWT_SECRET"] != env["SUPABASE_JWT_SECRET"], "secrets are generated per stack"
    with psycopg.connect(env2["SUPABASE_DB_URL"]) as conn:
        assert conn.execute("select count(*) from ops.ci_events where kind = 'reset-marker'").fetchone()[0] == 0
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] >= 1


def test_busy_port_asked_for_is_a_clear_error_and_creates_nothing(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        out = run_cli("stack", "up", "--port", str(busy), home=home)
    assert out.returncode == 2
    assert f"port {busy}" in out.stderr and "busy" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (home / "stack").exists()


def test_free_port_is_chosen_never_5432_by_assumption(home):
    assert run_cli("stack", "up", "--days", "0", home=home).returncode == 0
    url = read_env(home / "stack" / "env")["SUPABASE_DB_URL"]
    port = int(re.search(r":(\d+)/", url).group(1))
    assert port != 5432


def test_missing_binaries_is_one_line_exit_2_nothing_created(home, tmp_path):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    out = run_cli("stack", "up", home=home, env={"OPSPROOF_PG_BINDIR": str(empty)})
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "OPSPROOF_PG_BINDIR" in out.stderr
    assert not (home / "stack").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to prove the unprivileged-account path")
def test_as_root_the_cluster_runs_under_an_unprivileged_account(home):
    assert run_cli("stack", "up", "--days", "0", home=home).returncode == 0
    datadir = next(home.glob("stack/data/primary"))
    owner = datadir.stat().st_uid
    assert owner != 0
    pid = _pids(home)[0]
    assert os.stat(f"/proc/{pid}").st_uid == owner
    assert oct(datadir.stat().st_mode & 0o777) == "0o700"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to a non-root user")
def test_runs_as_a_non_root_user():
    """Fork, drop to an unprivileged account, and bring a stack up there: no account switching needed.

    The interpreter lives under /root here (unreadable to others), so the child is a fork of this
    process with every module it needs already imported, not a fresh `opsproof` process.
    """
    import hashlib  # noqa: F401  (pre-import what the child uses lazily)
    import json
    import urllib.parse  # noqa: F401

    from opsproof.stack.manager import Stack

    entry = pwd.getpwnam("postgres")
    home = Path(tempfile.mkdtemp(prefix="opsproof-nonroot-"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    result = home / "result.json"
    pid = os.fork()
    if pid == 0:  # child: become postgres, run the stack lifecycle, report
        code = 1
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.environ["HOME"] = str(home)
            st = Stack(home=home)
            st.up(seed_days=0, log=lambda m: None)
            status = st.status()
            st.down(log=lambda m: None)
            result.write_text(json.dumps({"healthy": status["healthy"], "problems": status["problems"],
                                          "runs_as": status["runs_as"], "uid": os.geteuid()}))
            code = 0
        except BaseException as exc:  # report, never return into pytest
            try:
                result.write_text(json.dumps({"error": repr(exc)}))
            except OSError:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        report = json.loads(result.read_text())
        assert report.get("healthy") is True, report
        assert report["runs_as"] == "postgres" and report["uid"] == entry.pw_uid
        assert (home / "stack" / "env").stat().st_uid == entry.pw_uid
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_up_tops_up_the_seeded_history_after_a_long_idle(home):
    """An embedded stack idle for days gets the gap seeded on `up`, so the daily window holds data."""
    import json
    from datetime import datetime, timedelta, timezone

    from opsproof.stack.manager import Stack

    st = Stack(home=home)
    st.up(seed_days=1, requests_per_day=2000, log=lambda m: None)
    state_file = home / "stack" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["seeded_until"]
    with psycopg.connect(st.admin_dsn()) as conn:
        before = conn.execute("select count(*) from ops.requests where ts > now() - interval '24 hours'").fetchone()[0]
        conn.execute("delete from ops.requests where ts > now() - interval '24 hours'")
    three_days_ago = datetime.now(timezone.utc) - timedelta(days=3)
    state["seeded_until"] = three_days_ago.isoformat()
    state_file.write_text(json.dumps(state))
    logs: list[str] = []
    st.up(log=logs.append)
    assert any("since the last seed" in m for m in logs), logs
    with psycopg.connect(st.admin_dsn()) as conn:
        after = conn.execute("select count(*) from ops.requests where ts > now() - interval '24 hours'").fetchone()[0]
    assert after >= before * 0.9
    assert json.loads(state_file.read_text())["seeded_until"] > three_days_ago.isoformat()
    logs.clear()
    st.up(log=logs.append)   # fresh again: nothing to top up
    assert not any("since the last seed" in m for m in logs)

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
    secrets = [env[k] for k in ("POSTGRES_PASSWORD", "SUPABASE_ADMIN_PASSWORD", "SUPABASE_JWT_SECRET",
                                "SUPABASE_SERVICE_ROLE_KEY")]
    assert "supabase_admin:" in env["OPSPROOF_SUPERUSER_DB_URL"] and "postgres:" in env["SUPABASE_DB_URL"]
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


def test_a_stack_made_before_the_superuser_split_uses_its_postgres_for_plumbing(tmp_path):
    """A stack whose env has no OPSPROOF_SUPERUSER_DB_URL (made when `postgres` was the superuser) keeps working."""
    from opsproof.envfile import write_env
    from opsproof.stack.manager import Stack

    st = Stack(home=tmp_path)
    st.dir.mkdir(parents=True)
    old = "postgresql://postgres:pw123456@127.0.0.1:5999/postgres"
    write_env(st.env_file, {"SUPABASE_DB_URL": old})
    assert st.admin_dsn() == old and st.superuser_dsn() == old
    write_env(st.env_file, {"SUPABASE_DB_URL": old,
                            "OPSPROOF_SUPERUSER_DB_URL": old.replace("postgres:", "supabase_admin:", 1)})
    assert st.admin_dsn() == old and st.superuser_dsn().startswith("postgresql://supabase_admin:")


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


def _readable_project(dest: Path, owner: pwd.struct_passwd) -> Path:
    """A project dir the unprivileged account can read: supabase/ (migrations, config) and the Supabase CLI
    binary, copied (hard-linked when possible) from the checkout, which may sit under a root-only directory."""
    import shutil

    from helpers import REPO

    shutil.copytree(REPO / "supabase", dest / "supabase")
    binaries = sorted(REPO.glob("node_modules/@supabase/cli-*/bin/supabase"))
    src = binaries[0] if binaries else Path(shutil.which("supabase") or "")
    if not src.is_file():
        pytest.skip("no Supabase CLI binary to give the unprivileged account")
    (dest / "node_modules" / ".bin").mkdir(parents=True)
    target = dest / "node_modules" / ".bin" / "supabase"
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)
    for path in [dest, *dest.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    return dest


# What the child imports lazily during a stack lifecycle: imported here first, since the interpreter and the
# checkout may live where the unprivileged account cannot read (under /root, or a root-only temp dir).
_CHILD_IMPORTS = ("hashlib", "json", "urllib.parse", "re", "secrets", "socket", "shutil", "opsproof.stack.seed",
                  "opsproof.stack.backup", "opsproof.stack.supabase_cli", "opsproof.stack.binaries",
                  "opsproof.stack.ports", "opsproof.stack.secrets", "opsproof.envfile", "opsproof.clock",
                  "psycopg", "psycopg.sql", "psycopg.rows", "psycopg.types.json", "encodings.idna")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to a non-root user")
def test_runs_as_a_non_root_user():
    """Fork, drop to an unprivileged account, and bring a stack up there: no account switching needed.

    The interpreter and the checkout may live where others cannot read (/root, a 0700 temp dir), so the
    child is a fork of this process with what it needs already imported, not a fresh `opsproof` process,
    and it gets its own readable copy of the project's supabase/ and CLI (a non-root user runs from a
    checkout they can read)."""
    import importlib
    import json
    import shutil
    import sys

    from opsproof.stack import manager
    from opsproof.stack.manager import Stack

    for name in _CHILD_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    entry = pwd.getpwnam("postgres")
    home = Path(tempfile.mkdtemp(prefix="opsproof-nonroot-"))
    os.chmod(home, 0o755)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    project = _readable_project(home / "project", entry)
    bootstrap = project / "bootstrap.sql"
    shutil.copy2(manager.BOOTSTRAP_SQL, bootstrap)
    os.chown(bootstrap, entry.pw_uid, entry.pw_gid)
    state_home = home / "state"
    state_home.mkdir()
    os.chown(state_home, entry.pw_uid, entry.pw_gid)
    result = home / "result.json"
    before = set(sys.modules)
    saved_bootstrap = manager.BOOTSTRAP_SQL
    pid = os.fork()
    if pid == 0:  # child: become postgres, run the stack lifecycle, report
        code = 1
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.environ.update(HOME=str(home), OPSPROOF_PROJECT_DIR=str(project))
            os.chdir(home)
            manager.BOOTSTRAP_SQL = bootstrap
            st = Stack(home=state_home)
            st.up(seed_days=0, log=lambda m: None)
            status = st.status()
            st.down(log=lambda m: None)
            result.write_text(json.dumps({"healthy": status["healthy"], "problems": status["problems"],
                                          "runs_as": status["runs_as"], "uid": os.geteuid(),
                                          "datadir": status["datadir"],
                                          "imported_late": sorted(set(sys.modules) - before)}))
            code = 0
        except BaseException as exc:  # report, never return into pytest
            try:
                result.write_text(json.dumps({"error": repr(exc), "imported_late": sorted(set(sys.modules) - before)}))
            except OSError:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        assert manager.BOOTSTRAP_SQL == saved_bootstrap
        report = json.loads(result.read_text())
        assert report.get("healthy") is True, report
        assert report["runs_as"] == "postgres" and report["uid"] == entry.pw_uid
        assert report["datadir"] == str(state_home / "stack" / "data"), "a reachable home keeps its own data"
        assert (state_home / "stack" / "env").stat().st_uid == entry.pw_uid
    finally:
        Stack(home=state_home).destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def root_only_home():
    """OPSPROOF_HOME inside a 0700 root-owned directory the server account (postgres) cannot enter, like a
    checkout under /root."""
    import shutil

    outer = Path(tempfile.mkdtemp(prefix="opsproof-rootonly-"))
    os.chmod(outer, 0o700)
    home = outer / "checkout" / ".opsproof"
    home.parent.mkdir()
    yield home
    from opsproof.stack.manager import Stack

    Stack(home=home).destroy()
    shutil.rmtree(outer, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster under another account")
def test_as_root_a_home_the_server_account_cannot_reach_still_works(root_only_home):
    """The cluster's files (data, logs) go to a per-home 0700 dir owned by the server account outside the
    home; up/status/down/up keep the data there, and reset/destroy remove it."""
    from opsproof.stack.manager import Stack

    home = root_only_home
    up = run_cli("stack", "up", "--days", "0", home=home)
    assert up.returncode == 0, up.stderr
    st = run_cli("stack", "status", home=home)
    assert st.returncode == 0 and "streaming" in st.stdout, st.stdout + st.stderr
    state = Stack(home=home).state()
    outside = Path(state.outside)
    assert home not in outside.parents and Path(state.datadir).parent == outside
    assert outside.stat().st_uid == pwd.getpwnam(state.runas).pw_uid and outside.stat().st_mode & 0o777 == 0o700
    assert (Path(state.logdir) / "primary.log").stat().st_size > 0, "the server writes its log"
    assert not (home / "stack" / "data").exists() and not (home / "stack" / "logs").exists()

    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"], autocommit=True) as conn:
        conn.execute("insert into ops.ci_events (branch, kind) values ('main', 'rootonly-marker')")
    assert run_cli("stack", "down", home=home).returncode == 0
    again = run_cli("stack", "up", home=home)
    assert again.returncode == 0, again.stderr
    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"]) as conn:
        assert conn.execute("select count(*) from ops.ci_events where kind = 'rootonly-marker'").fetchone()[0] == 1

    reset = run_cli("stack", "reset", "--days", "0", home=home)
    assert reset.returncode == 0, reset.stderr
    new_state = Stack(home=home).state()
    assert Path(new_state.outside) == outside and outside.is_dir()
    env = read_env(home / "stack" / "env")
    with psycopg.connect(env["SUPABASE_DB_URL"]) as conn:
        assert conn.execute("select count(*) from ops.ci_events where kind = 'rootonly-marker'").fetchone()[0] == 0
    Stack(home=home).destroy()
    assert not outside.exists(), "destroy removes the cluster's files outside the home"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster under another account")
def test_as_root_a_planted_outside_dir_is_refused(root_only_home):
    """/var/tmp is writable by everyone: a directory someone else made under the stack's name never gets the data."""
    from opsproof.stack.manager import Stack
    from opsproof.stack.osuser import resolve

    outside = Stack(home=root_only_home).outside_dir(resolve(os.environ.get("OPSPROOF_PG_USER")))
    outside.mkdir()
    try:
        nobody = pwd.getpwnam("nobody")
        os.chown(outside, nobody.pw_uid, nobody.pw_gid)
        out = run_cli("stack", "up", "--days", "0", home=root_only_home)
        assert out.returncode == 2, out.stderr
        assert "refusing" in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (root_only_home / "stack").exists()
        assert list(outside.iterdir()) == []
    finally:
        outside.rmdir()


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

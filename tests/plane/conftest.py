"""A scratch PostgreSQL primary + streaming replica for the plane's tests (one per session).

`plane_db` is the one fixture the lead swaps for the project's stack fixture later: it returns
PlaneDB(primary=<admin DSN>, replica=<replica DSN>, home=<tmp dir>).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
from plane_helpers import Component, plane_env

AUDIT_STANDIN = """
create table if not exists ops.audit_log (
  id bigserial primary key, at timestamptz not null default now(), actor text not null, action text not null,
  target text not null, reason text not null, run_id text, detail jsonb not null default '{}', incident_id uuid);
create or replace function ops.audit(p_actor text, p_action text, p_target text, p_reason text, p_run_id text,
                                     p_detail jsonb, p_incident_id uuid default null) returns bigint
language sql as $$
  insert into ops.audit_log (actor, action, target, reason, run_id, detail, incident_id)
  values (p_actor, p_action, p_target, p_reason, p_run_id, coalesce(p_detail, '{}'), p_incident_id) returning id
$$;
"""


@dataclass
class PlaneDB:
    primary: str
    replica: str
    home: Path


def _bindir() -> Path:
    explicit = os.environ.get("OPSPROOF_PG_BINDIR")
    if explicit:
        return Path(explicit)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        pytest.skip("no PostgreSQL server binaries")
    return versions[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a server binary as the unprivileged postgres account when we are root."""
    if os.geteuid() == 0:
        ent = pwd.getpwnam("postgres")

        def drop():
            os.setgroups([])
            os.setgid(ent.pw_gid)
            os.setuid(ent.pw_uid)

        kw["preexec_fn"] = drop
        kw["env"] = {**os.environ, "HOME": kw.pop("home", "/tmp")}
    else:
        kw.pop("home", None)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def _check(res: subprocess.CompletedProcess, what: str) -> None:
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed: {res.stderr[-2000:]}{res.stdout[-1000:]}")


def _start(bindir: Path, data: Path, port: int, sock: Path, log: Path) -> None:
    _check(_as_pg([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                   f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c wal_level=replica -c fsync=off "
                   f"-c max_connections=200 -c wal_receiver_status_interval=1s", "start"], home=str(sock)),
           f"pg_ctl start {data.name}")


def apply_sql(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((REPO / "src/opsproof/stack/sql/bootstrap.sql").read_text())
        for mig in sorted((REPO / "supabase/migrations").glob("*.sql")):
            conn.execute(mig.read_text())
        if conn.execute("select to_regprocedure('ops.audit(text,text,text,text,text,jsonb,uuid)')").fetchone()[0] is None:
            conn.execute(AUDIT_STANDIN)


@pytest.fixture(scope="session")
def plane_db():
    bindir = _bindir()
    home = Path(tempfile.mkdtemp(prefix="opsproof-plane-pg-"))
    os.chmod(home, 0o755)
    if os.geteuid() == 0:
        ent = pwd.getpwnam("postgres")
        os.chown(home, ent.pw_uid, ent.pw_gid)
    p_port, r_port = _free_port(), _free_port()
    data, replica = home / "data", home / "replica"
    started = []
    try:
        _check(_as_pg([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync", "-A", "trust"],
                      home=str(home)), "initdb")
        with (data / "pg_hba.conf").open("a") as fh:
            fh.write("host replication all 127.0.0.1/32 trust\n")
        _start(bindir, data, p_port, home, home / "primary.log")
        started.append(data)
        primary = f"postgresql://postgres@127.0.0.1:{p_port}/postgres"
        apply_sql(primary)
        _check(_as_pg([str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p_port), "-U", "postgres",
                       "-D", str(replica), "-R", "-X", "stream", "-C", "-S", "plane_test_slot", "--no-sync",
                       "--checkpoint=fast"], home=str(home)), "pg_basebackup")
        os.chmod(replica, 0o700)
        _start(bindir, replica, r_port, home, home / "replica.log")
        started.append(replica)
        replica_dsn = f"postgresql://postgres@127.0.0.1:{r_port}/postgres"
        deadline = time.time() + 30
        while time.time() < deadline:
            with psycopg.connect(replica_dsn, autocommit=True) as c:
                if c.execute("select status from pg_stat_wal_receiver").fetchone() == ("streaming",):
                    break
            time.sleep(0.2)
        yield PlaneDB(primary, replica_dsn, home)
    finally:
        for d in reversed(started):
            _as_pg([str(bindir / "pg_ctl"), "-D", str(d), "-m", "immediate", "-w", "stop"], home=str(home))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db(plane_db):
    with psycopg.connect(plane_db.primary, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clean(db):
    """Each test starts from empty work tables, default budgets, no overrides, routing on the replica."""
    db.execute("""truncate ops.agent_tasks, ops.dlq, ops.dlq_replays, ops.outbox, ops.alerts, ops.heartbeats,
                  ops.ingest_events, ops.idempotency_keys, ops.spans, ops.agent_logs, ops.requests, ops.health_probes restart identity cascade""")
    db.execute("delete from ops.flag_overrides")
    db.execute("update ops.budgets set value = case key when 'agent.concurrency' then 150 when 'replay.batch_items' "
               "then 50 when 'replay.max_bytes' then 2097152 when 'replay.fail_rate_pct' then 20 end")
    db.execute("update ops.read_routing set target = 'replica', consecutive_failures = 0")
    return db


@pytest.fixture
def spawn(plane_db, tmp_path):
    procs: list[Component] = []

    def _spawn(name: str, **extra) -> Component:
        c = Component(name, plane_env(plane_db, tmp_path, **extra), tmp_path / f"{name}.log")
        procs.append(c)
        return c

    yield _spawn
    for c in procs:
        c.stop()



"""Throughput of the reference plane on this machine: worker pool tasks/s and outbox relay events/s.

Runs the real components (`python -m opsproof.plane.worker|sink|relay`) against a loopback database
(refuses anything else): --dsn, or SUPABASE_DB_URL / the stack's env file. It adds its own rows
(tagged with a run id) and leaves them; run it on the embedded stack or a scratch cluster.

  .venv/bin/python bench/bench_plane.py --tasks 5000 --events 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from opsproof.plane.settings import layered_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(name: str, env: dict, logdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"opsproof.plane.{name}"], env=env, start_new_session=True,
                            stdout=(logdir / f"{name}.log").open("ab"), stderr=subprocess.STDOUT)


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, 15)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)


def _wait(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit("bench: timed out")


def bench_worker(dsn: str, env: dict, logdir: Path, n: int, budget: int | None) -> dict:
    run = uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as db:
        if budget is not None:
            old = db.execute("select value from ops.budgets where key = 'agent.concurrency'").fetchone()[0]
            db.execute("update ops.budgets set value = %s::int where key = 'agent.concurrency'", (budget,))
        db.execute("insert into ops.agent_tasks (kind, payload) select 'quote', jsonb_build_object('bench', %s::text) "
                   "from generate_series(1, %s::int)", (run, n))
        procs = [_spawn("worker", env, logdir)]
        try:
            _wait(lambda: db.execute("select count(*) from ops.agent_tasks where payload->>'bench' = %s "
                                     "and status = 'succeeded'", (run,)).fetchone()[0] == n, 600)
        finally:
            _stop(procs)
            if budget is not None:
                db.execute("update ops.budgets set value = %s where key = 'agent.concurrency'", (old,))
        first, last = db.execute("select min(started_at), max(finished_at) from ops.agent_tasks "
                                 "where payload->>'bench' = %s", (run,)).fetchone()
    secs = (last - first).total_seconds()
    return {"tasks": n, "seconds": round(secs, 2), "tasks_per_s": round(n / secs, 1)}


def bench_relay(dsn: str, env: dict, logdir: Path, n: int) -> dict:
    port = _free_port()
    env = {**env, "OPSPROOF_SINK_PORT": str(port), "OPSPROOF_RELAY_URL": f"http://127.0.0.1:{port}/outbox"}
    with psycopg.connect(dsn, autocommit=True) as db:
        procs = [_spawn("sink", env, logdir)]
        try:
            _wait(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), 30)
            _wait(lambda: db.execute("select count(*) from ops.outbox where published_at is null").fetchone()[0] == 0, 120)
            lo = db.execute("select coalesce(max(id), 0) from ops.outbox").fetchone()[0]
            db.execute("insert into ops.outbox (topic, payload) select 'bench.event', jsonb_build_object('n', g) "
                       "from generate_series(1, %s::int) g", (n,))
            t0 = time.monotonic()
            procs.append(_spawn("relay", env, logdir))
            _wait(lambda: db.execute("select count(*) from ops.outbox where id > %s and published_at is null",
                                     (lo,)).fetchone()[0] == 0, 600)
            wall = time.monotonic() - t0
        finally:
            _stop(procs)
        first, last, lag = db.execute(
            "select min(published_at), max(published_at), max(extract(epoch from published_at - created_at)) "
            "from ops.outbox where id > %s", (lo,)).fetchone()
    secs = max((last - first).total_seconds(), 1e-3)
    return {"events": n, "wall_s_incl_start": round(wall, 2), "publish_s": round(secs, 2),
            "events_per_s": round(n / secs, 1), "max_lag_s": round(float(lag), 2)}


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--budget", type=int, default=None, help="agent.concurrency during the worker run (default: as set)")
    args = ap.parse_args()
    layered = layered_env()
    dsn = args.dsn or layered.get("SUPABASE_DB_URL")
    if not dsn:
        raise SystemExit("bench: no database (--dsn or SUPABASE_DB_URL / .opsproof/stack/env)")
    if urlsplit(dsn).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench: refusing a non-loopback database (the bench writes rows)")
    logdir = Path(tempfile.mkdtemp(prefix="opsproof-bench-"))
    env = {**os.environ, **layered, "SUPABASE_DB_URL": dsn, "OPSPROOF_PLANE_DIR": str(logdir),
           "OPSPROOF_PLANE_CYCLE_S": "1", "N8N_SIGNING_KEY": layered.get("N8N_SIGNING_KEY", "bench")}
    env.pop("ALERT_WEBHOOK_URL", None)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with psycopg.connect(dsn) as c:
        print("server:", c.execute("select version()").fetchone()[0].split(",")[0])
    print("worker pool:", bench_worker(dsn, env, logdir, args.tasks, args.budget))
    print("outbox relay:", bench_relay(dsn, env, logdir, args.events))


if __name__ == "__main__":
    main()

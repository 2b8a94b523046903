"""Seeder throughput on this machine: ops.requests rows/s, and the whole 35-day seed's rows/s.

Works in a scratch database it creates on the given server (bootstrap + supabase/migrations applied) and
drops at the end, so the target's own data is never touched. The DSN must be a superuser on a cluster with
the Supabase roles (the embedded stack is): --dsn, else OPSPROOF_BENCH_DSN / OPSPROOF_TEST_DSN, else the
running embedded stack (`opsproof stack up`).

  .venv/bin/python bench/bench_seed.py --requests 700000
  .venv/bin/python bench/bench_seed.py postgresql://postgres@127.0.0.1:55433/postgres
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from opsproof.stack import seed as seeder

REPO = Path(__file__).resolve().parents[1]


def _dsn(arg: str | None) -> str:
    dsn = arg or os.environ.get("OPSPROOF_BENCH_DSN") or os.environ.get("OPSPROOF_TEST_DSN")
    if dsn:
        return dsn
    try:
        from opsproof.stack.manager import Stack

        return Stack().admin_dsn()
    except Exception as exc:  # noqa: BLE001 - any reason means "no DSN"
        raise SystemExit(f"bench_seed: no DSN (pass one, set OPSPROOF_BENCH_DSN, or `opsproof stack up`): {exc}")


def _scratch(admin: str) -> tuple[str, str]:
    name = f"bench_seed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = make_conninfo(admin, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((REPO / "src/opsproof/stack/sql/bootstrap.sql").read_text())
        for path in sorted((REPO / "supabase/migrations").glob("*.sql")):
            conn.execute(path.read_text())
    return name, dsn


def _requests_only(dsn: str, n: int, days: int, seed: int) -> float:
    """One transaction inserting n requests over `days` days (partitions made before the clock starts)."""
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    with psycopg.connect(dsn, autocommit=True) as conn:
        seeder.clear(conn)
        with seeder._tx(conn) as cur:
            seeder.ensure_partitions(cur, start, end)
        t0 = time.perf_counter()
        with seeder._tx(conn) as cur:
            cur.execute("set local synchronous_commit = off")
            done = seeder._requests(cur, seed, start, days * 86400.0, n)
        elapsed = time.perf_counter() - t0
    assert done == n, (done, n)
    return elapsed


def _full(dsn: str, days: int, per_day: int, seed: int) -> tuple[float, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        seeder.clear(conn)
        t0 = time.perf_counter()
        counts = seeder.seed(conn, days=days, requests_per_day=per_day, seed=seed)
        elapsed = time.perf_counter() - t0
    return elapsed, sum(v for v in counts.values() if isinstance(v, int))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dsn", nargs="?", help="superuser DSN of the server to make the scratch database on")
    ap.add_argument("--requests", type=int, default=700_000, help="requests to seed (default 35 days x 20,000)")
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=3, help="best of N")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args(argv)

    admin = _dsn(args.dsn)
    name, dsn = _scratch(admin)
    try:
        with psycopg.connect(dsn) as conn:
            server = conn.execute("show server_version").fetchone()[0]
        req = min(_requests_only(dsn, args.requests, args.days, args.seed) for _ in range(args.runs))
        full, rows = min(_full(dsn, args.days, max(1, args.requests // args.days), args.seed) for _ in range(args.runs))
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, PostgreSQL {server}, Python {platform.python_version()}")
    print(f"ops.requests: {args.requests} rows in {req:.2f} s = {args.requests / req:,.0f} rows/s (best of {args.runs})")
    print(f"full seed ({args.days} days, all tables): {rows} rows in {full:.2f} s = {rows / full:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

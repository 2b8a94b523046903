"""Rollups (issue 13): does an SLO reading cost the same at 1M, 10M (and 100M) requests a day?

For each size N the bench seeds ONE 24 h window of healthy telemetry holding N requests into its OWN embedded stack
(a throw-away OPSPROOF_HOME; the seeder also writes the window's rollup, one insert ... select per day) and reports
side by side:

  (a) the bare SQL aggregate over RAW rows through psql: the same ops.slo_snapshot with the rollup hidden
      (`begin; update ops.rollup_state set rolled_until = null; select ops.slo_snapshot(...); rollback`), i.e. the
      exact percentile_cont path every reading took before migration 20261203001100; best of --runs;
  (b) the rollup query through psql: `select ops.slo_snapshot(now() - interval '24 hours', now())`; best of --runs;
  (c) the whole `pytest -m daily` (wall time, pytest peak RSS), best of --pytest-runs;
  (d) one watch tick: `opsproof watch --once` (wall time);
  (e) rollup maintenance: throughput of re-rolling the whole day (raw rows read per second, ops.rollup_range) and of
      one steady-state `ops.rollup_refresh()`; with --plane-s S (default 90; 0 skips) the reference plane runs for S
      seconds after the last size and the bench samples the rollup's lag and the plane's request rate (the
      gate refreshes every 20 s), so the head-room is throughput / live request rate;
  and the p95 error of the histogram (b) against the exact percentile_cont (a) on the same rows (also p50/p99 and
  the outbox lag p95).

  .venv/bin/python bench/bench_rollups.py                          # 1M and 10M
  .venv/bin/python bench/bench_rollups.py --sizes 1000000 --pytest-runs 1
  OPSPROOF_BENCH_100M=1 .venv/bin/python bench/bench_rollups.py    # adds 100M (needs ~10+ GB of disk, ~30 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_daily as bd  # noqa: E402  (same directory: seeding, psql, pytest and machine helpers)

REPO = bd.REPO
ROLLUP_SQL = "select ops.slo_snapshot(now() - interval '24 hours', now())"
# (a): the bare aggregate the SLO snapshot needs, over raw rows (what ops.slo_snapshot computed before the rollup)
BARE_SQL = ("select jsonb_build_object('requests', count(*), 'ok', count(*) filter (where status < 500), "
            "'pct', percentile_cont(array[0.5, 0.95, 0.99]) within group (order by duration_ms), "
            "'n_1h', count(*) filter (where ts >= now() - interval '1 hour'), "
            "'n_6h', count(*) filter (where ts >= now() - interval '6 hours')) "
            "from ops.requests where ts >= now() - interval '24 hours' and ts < now()")
# (a'): the same function with the rollup hidden: the raw fallback a stale rollup falls back to
RAW_SQL = ("begin; update ops.rollup_state set rolled_until = null where id; "
           "select ops.slo_snapshot(now() - interval '24 hours', now()); rollback;")
OUTBOX_ROLLUP_SQL = "select ops.outbox_lag(now() - interval '24 hours', now())"
OUTBOX_RAW_SQL = ("begin; update ops.rollup_state set rolled_until = null where id; "
                  "select ops.outbox_lag(now() - interval '24 hours', now()); rollback;")


def log(msg: str) -> None:
    print(f"[bench_rollups {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def psql_best(psql: Path, admin: str, sql: str, runs: int) -> tuple[float, list[float], dict]:
    times, doc = [], {}
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        res = subprocess.run([str(psql), admin, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, env=bd._clean_env())
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise SystemExit(f"bench_rollups: psql failed: {res.stderr.strip()[-300:]}")
        line = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("{")]
        doc = json.loads(line[-1]) if line else {}
    return min(times), [round(t, 3) for t in times], doc


def rel_err_pct(est, exact) -> float | None:
    if est is None or exact in (None, 0):
        return None
    return round(100 * (est - exact) / exact, 4)


def reseed(admin: str, superuser: str, n: int) -> tuple[dict, float]:
    """bench_daily.reseed's steps (clear, seed one 24 h window, vacuum analyze, checkpoint), with the CHECKPOINT as
    the bootstrap superuser (`postgres` is not one, as on hosted Supabase). Returns counts, the seed's wall time
    (raw rows + the seeder's rollup)."""
    from opsproof.stack import seed as seeder

    t0 = time.perf_counter()
    with psycopg.connect(admin, autocommit=True) as conn:
        seeder.clear(conn)
        counts = seeder.seed(conn, days=1, requests_per_day=n)
    seeded_s = time.perf_counter() - t0
    with psycopg.connect(admin, autocommit=True) as conn:
        for table in ("ops.requests", "ops.health_probes", "ops.spans", "ops.agent_logs", "ops.agent_tasks",
                      "ops.outbox", "ops.dlq", "ops.dlq_replays", "ops.ci_events", "ops.rollup_minute",
                      "ops.rollup_hour"):
            conn.execute(f"vacuum (analyze) {table}")
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("checkpoint")
    return counts, seeded_s


PYTEST_WRAPPER = bd.PYTEST_WRAPPER


def run_pytest(home: Path, ev: Path, marker: str, out: Path) -> dict:
    """One suite run (bench_daily.run_pytest with today's prefixed option --opsproof-evidence-dir)."""
    if ev.exists():
        shutil.rmtree(ev)
    env = bd._clean_env({"OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO), "OPSPROOF_NO_ALLURE_HTML": "1"})
    rusage = out.with_suffix(".rusage.json")
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        res = subprocess.run([bd.PY, "-c", PYTEST_WRAPPER, str(rusage), "-p", "no:cacheprovider", "-m", marker, "-q",
                              f"--opsproof-evidence-dir={ev}"], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    ru = json.loads(rusage.read_text()) if rusage.exists() else {}
    results = bd._results(ev)
    counts: dict[str, int] = {}
    for c in results:
        counts[c.get("verdict", "?")] = counts.get(c.get("verdict", "?"), 0) + 1
    summary = ("GREEN " if res.returncode == 0 and set(counts) <= {"pass"} else "RED ") + \
        ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return {"wall": wall, "rc": res.returncode, "rss_kb": ru.get("self_kb"), "children_rss_kb": ru.get("children_kb"),
            "summary": summary, "results": results, "junit": bd._junit(ev), "log": str(out)}


def topup(admin: str, since: datetime, n: int) -> datetime:
    """Continue the seeded streams (probes, requests, tasks, ...) from `since` to now, then refresh the rollup: what
    the plane and the test harness do; without it the minutes after the seed go unprobed and SLO-001 rightly fails."""
    from opsproof.stack import seed as seeder

    now = datetime.now(timezone.utc)
    with psycopg.connect(admin) as conn:
        seeder.top_up(conn, since, now, requests_per_day=n)
        seeder.refresh_rollup(conn)
    return now


def refresh(admin: str) -> dict:
    with psycopg.connect(admin, autocommit=True) as conn:
        return conn.execute("select ops.rollup_refresh(100000)").fetchone()[0]


def maintenance(admin: str) -> dict:
    """Re-roll the whole seeded day (what a catch-up after a day of downtime costs) and one steady-state refresh."""
    with psycopg.connect(admin, autocommit=True) as conn:
        lo, hi = conn.execute("select rolled_from, rolled_until from ops.rollup_state").fetchone()
        t0 = time.perf_counter()
        rows = conn.execute("select ops.rollup_range(%s, %s)", (lo, hi)).fetchone()[0]
        full_s = time.perf_counter() - t0
        conn.execute("select ops.rollup_refresh(100000)")
        t0 = time.perf_counter()
        tick = conn.execute("select ops.rollup_refresh(100000)").fetchone()[0]
        tick_s = time.perf_counter() - t0
    return {"reroll_day_rows": rows, "reroll_day_s": round(full_s, 3), "rows_per_s": round(rows / full_s),
            "refresh_tick_s": round(tick_s, 4), "refresh_tick_raw_rows": tick.get("raw_rows")}


def watch_tick(home: Path) -> dict:
    env = bd._clean_env({"OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO)})
    t0 = time.perf_counter()
    res = subprocess.run([str(Path(sys.executable).parent / "opsproof"), "watch", "--once"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    return {"wall": round(time.perf_counter() - t0, 3), "rc": res.returncode, "tail": res.stdout.strip()[-300:]}


def plane_lag(home: Path, admin: str, seconds: float) -> dict:
    """Run the reference plane for `seconds`; sample the rollup watermark's lag and the live request rate."""
    env = bd._clean_env({"OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO)})
    cli = str(Path(sys.executable).parent / "opsproof")
    up = subprocess.run([cli, "plane", "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        return {"error": f"plane up failed: {(up.stdout + up.stderr).strip()[-300:]}"}
    samples = []
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            n0 = conn.execute("select count(*) from ops.requests where source = 'plane'").fetchone()[0]
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                lag, run = conn.execute("select extract(epoch from now() - rolled_until)::float8, last_run "
                                        "from ops.rollup_state").fetchone()
                samples.append({"t": round(time.monotonic() - t0, 1), "lag_s": round(lag, 1),
                                "refresh_ms": (run or {}).get("duration_ms"), "raw_rows": (run or {}).get("raw_rows")})
                time.sleep(5)
            n1 = conn.execute("select count(*) from ops.requests where source = 'plane'").fetchone()[0]
            elapsed = time.monotonic() - t0
    finally:
        subprocess.run([cli, "plane", "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    refresh_ms = [s["refresh_ms"] for s in samples if s["refresh_ms"] is not None]
    return {"seconds": round(elapsed, 1), "plane_requests": n1 - n0, "plane_requests_per_s": round((n1 - n0) / elapsed, 2),
            "lag_max_s": max(s["lag_s"] for s in samples), "lag_min_s": min(s["lag_s"] for s in samples),
            "refresh_ms_max": max(refresh_ms) if refresh_ms else None, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated request counts")
    ap.add_argument("--runs", type=int, default=3, help="psql runs per query (best reported)")
    ap.add_argument("--pytest-runs", type=int, default=2, help="daily-suite runs per size (best wall time)")
    ap.add_argument("--plane-s", type=float, default=90.0, help="seconds of live plane traffic for (e); 0 skips")
    ap.add_argument("--json", default=None, help="also write the raw numbers to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, packs); the stack is destroyed")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if os.environ.get("OPSPROOF_BENCH_100M") == "1" and 100_000_000 not in sizes:
        sizes.append(100_000_000)

    from opsproof.stack.binaries import find_bindir
    from opsproof.stack.manager import Stack

    tmp = Path(tempfile.mkdtemp(prefix="opsproof-bench-rollups-"))
    home = tmp / "home"
    home.mkdir()
    os.chmod(tmp, 0o755)
    os.chmod(home, 0o755)
    stack = Stack(home=home)
    rows: list[dict] = []
    plane = None
    try:
        stack.up(seed_days=0, log=lambda m: log(f"stack: {m}"))
        admin = stack.admin_dsn()
        psql = Path(find_bindir()) / "psql"
        mach = bd.machine(admin)
        log(f"machine: {mach}")
        for n in sizes:
            log(f"--- {n:,} requests: seeding one 24 h window (raw rows + its rollup)")
            counts, seed_s = reseed(admin, stack.superuser_dsn(), n)
            log(f"seeded in {seed_s:.1f} s")
            refresh(admin)
            a, a_runs, bare = psql_best(psql, admin, BARE_SQL, args.runs)
            a2, a2_runs, raw = psql_best(psql, admin, RAW_SQL, args.runs)
            b, b_runs, rol = psql_best(psql, admin, ROLLUP_SQL, args.runs)
            _, _, oraw = psql_best(psql, admin, OUTBOX_RAW_SQL, 1)
            _, _, orol = psql_best(psql, admin, OUTBOX_ROLLUP_SQL, 1)
            # the same rows: the raw fallback (a') and the rollup (b) read [now - 24 h, now) of one clock; the
            # histogram's error is against (a')'s exact percentile_cont
            errs = {k: rel_err_pct(rol.get(k), raw.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms")}
            errs["outbox_p95_s"] = rel_err_pct(orol.get("p95_s"), oraw.get("p95_s"))
            log(f"(a) bare aggregate {a:.3f} s {a_runs}; (a') raw fallback {a2:.3f} s {a2_runs} [{raw.get('source')}]; (b) rollup {b:.3f} s {b_runs} [{rol.get('source')}, "
                f"{rol.get('rollup_hours')} h + {rol.get('rollup_minutes')} min, raw {rol.get('raw_s')} s]; "
                f"requests {raw.get('requests')} vs {rol.get('requests')}; errors % {errs}")
            m = maintenance(admin)
            log(f"(e) maintenance {m}")
            since = topup(admin, datetime.fromisoformat(counts["window"]["to"]), n)
            c = bd.best_of(args.pytest_runs, lambda i: run_pytest(home, tmp / "ev", "daily", tmp / f"c-{n}-{i}.log"))
            log(f"(c) daily: {c['wall']:.2f} s {c['walls']} rc={c['rc']} rss={c['rss_kb']} kB  {c['summary']}")
            for f in bd.failures(c):
                log(f"    (c) not green: {f}")
            since = topup(admin, since, n)
            d = watch_tick(home)
            log(f"(d) watch --once: {d['wall']:.2f} s rc={d['rc']}")
            slo_junit = {k.split("::")[-1]: round(v, 3) for k, v in c["junit"].items() if "test_slo" in k or "rollup" in k}
            rows.append({"n": n, "requests": raw.get("requests"), "requests_rollup": rol.get("requests"),
                         "seed_s": round(seed_s, 2), "a": a, "a_runs": a_runs, "a_fallback": a2,
                         "a_fallback_runs": a2_runs, "bare": bare, "b": b, "b_runs": b_runs,
                         "source": rol.get("source"), "rollup_hours": rol.get("rollup_hours"),
                         "rollup_minutes": rol.get("rollup_minutes"), "raw_s": rol.get("raw_s"),
                         "p95_exact": raw.get("p95_ms"), "p95_hist": rol.get("p95_ms"), "errors_pct": errs,
                         "c": c["wall"], "c_runs": c["walls"], "c_rss_mb": round((c["rss_kb"] or 0) / 1024),
                         "c_summary": c["summary"], "c_failures": bd.failures(c), "slo_junit_s": slo_junit,
                         "slowest_c": sorted(c["junit"].items(), key=lambda kv: -kv[1])[:5],
                         "d": d, "maintenance": m})
        if args.plane_s > 0:
            refresh(admin)
            log(f"(e) live plane for {args.plane_s:.0f} s")
            plane = plane_lag(home, admin, args.plane_s)
            log(f"(e) plane: { {k: v for k, v in plane.items() if k != 'samples'} }")
        print(f"\nMachine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, PostgreSQL {mach['pg']} "
              f"({', '.join(f'{k} {v}' for k, v in mach['pg_settings'].items())}), Python {mach['python']}\n")
        print("| requests in 24 h | seed (raw + rollup) | (a) bare aggregate psql | (a') raw fallback psql | "
              "(b) rollup psql | a/b | (c) daily | (d) watch tick | (e) re-roll day | (e) refresh tick | "
              "p95 exact / hist (err) | p50, p99 err | pytest RSS | (c) controls |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            m, e = r["maintenance"], r["errors_pct"]
            print(f"| {r['requests']:,} | {r['seed_s']:.1f} s | {r['a']:.3f} s | {r['a_fallback']:.3f} s | {r['b']:.3f} s | "
                  f"{r['a'] / r['b']:.0f}x | "
                  f"{r['c']:.2f} s | {r['d']['wall']:.2f} s | {m['reroll_day_s']:.1f} s ({m['rows_per_s']:,} rows/s) | "
                  f"{m['refresh_tick_s'] * 1000:.0f} ms | {r['p95_exact']:.1f} / {r['p95_hist']:.1f} ms "
                  f"({e['p95_ms']:+.3f}%) | {e['p50_ms']:+.3f}%, {e['p99_ms']:+.3f}% | {r['c_rss_mb']} MB | {r['c_summary']} |")
        if plane:
            print(f"\nLive plane ({plane.get('seconds')} s): {plane}")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": mach, "rows": rows, "plane": plane,
                                                   "at": datetime.now(timezone.utc).isoformat()}, indent=2, default=str))
        return 0
    finally:
        try:
            stack.destroy()
            log("own stack destroyed")
        except Exception as exc:  # noqa: BLE001
            log(f"could not destroy the bench stack under {home}: {exc}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

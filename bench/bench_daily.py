"""The daily suite at scale: is measuring in the database as cheap as the bare SQL aggregate?

For each size N (default 100k, 1M, 10M) the bench seeds ONE 24 h window of healthy telemetry holding N
requests (plus the day's probes, tasks + spans + logs, outbox, DLQ replays, CI events: everything the daily
checks read) into its OWN embedded stack (a throw-away OPSPROOF_HOME; the project's .opsproof is never
touched) and times:

  (a) the bare SQL aggregate through psql:
        psql <dsn> -c "select ops.slo_snapshot(now() - interval '24 hours', now())"
      wall time of the psql process (connect included), best of 3;
  (b) `pytest -m "daily and slo"` as a subprocess (wall time);
  (c) the whole `pytest -m daily` the same way;
  and peak RSS: pytest runs via pytest.main() in a fresh child python that reports getrusage(RUSAGE_SELF)
  (the pytest process itself) and RUSAGE_CHILDREN (the largest process it spawned, e.g. the Supabase CLI
  for the advisors scan); GNU `/usr/bin/time -v` around it, when present, gives the whole tree's max.
(b) and (c) are run --pytest-runs times (default 2), best wall time reported.

b and c include pytest start-up (interpreter, plugins, connecting, writing the evidence pack), so next to
b/a and c/a the bench reports b-a (fixed overhead) and the in-process ratio: the SLO snapshot measurement as
pytest pays for it (junit time of the SLO-00x test cases, setup included: the module-scoped snapshot
fixture is charged to the first; results.json's duration_s counts only the call phase, so it reads ~0) and
the same call timed directly through opsproof's Target + measure.slo_snapshot, vs psql.

  .venv/bin/python bench/bench_daily.py                       # 100k, 1M, 10M
  .venv/bin/python bench/bench_daily.py --sizes 100000,1000000
  .venv/bin/python bench/bench_daily.py --sizes 1000000 --json /tmp/bench_daily.json --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
GNU_TIME = "/usr/bin/time"
SNAPSHOT_SQL = "select ops.slo_snapshot(now() - interval '24 hours', now())"
# environment that would point pytest somewhere else than the bench's own stack
FOREIGN_ENV = ("SUPABASE_", "OPSPROOF_", "ALERT_", "TRACE_", "PG")


def log(msg: str) -> None:
    print(f"[bench_daily {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- machine ------------------------------------------------------------------------------------

def machine(admin: str) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem_gb = round(kb / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    with psycopg.connect(admin, autocommit=True) as conn:
        pg = conn.execute("show server_version").fetchone()[0]
        settings = {k: conn.execute(f"show {k}").fetchone()[0]
                    for k in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")}
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": mem_gb, "arch": platform.machine(),
            "python": platform.python_version(), "pg": pg, "pg_settings": settings}


# -- seeding ------------------------------------------------------------------------------------

def reseed(admin: str, n: int) -> tuple[dict, float]:
    """Clear telemetry, seed one 24 h window with n requests, then vacuum analyze (steady state, not timed)."""
    from opsproof.stack import seed as seeder

    t0 = time.perf_counter()
    with psycopg.connect(admin, autocommit=True) as conn:
        seeder.clear(conn)
        counts = seeder.seed(conn, days=1, requests_per_day=n)
    seeded_s = time.perf_counter() - t0
    # A fresh bulk load has no statistics and no hint bits / visibility map: the first reader would pay for
    # setting them and autovacuum would kick in mid-measurement. Settle it before the clock starts.
    with psycopg.connect(admin, autocommit=True) as conn:
        for table in ("ops.requests", "ops.health_probes", "ops.spans", "ops.agent_logs", "ops.agent_tasks",
                      "ops.outbox", "ops.dlq", "ops.dlq_replays", "ops.ci_events"):
            conn.execute(f"vacuum (analyze) {table}")
        try:
            conn.execute("checkpoint")  # superuser (or pg_checkpoint) only: skipped as the hosted-shaped postgres
        except psycopg.errors.InsufficientPrivilege:
            pass
    return counts, seeded_s


# -- (a) psql -----------------------------------------------------------------------------------

def time_psql(psql: Path, admin: str, runs: int = 3) -> tuple[float, list[float], dict]:
    times = []
    doc: dict = {}
    for _ in range(runs):
        t0 = time.perf_counter()
        res = subprocess.run([str(psql), admin, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", SNAPSHOT_SQL],
                             capture_output=True, text=True, env=_clean_env())
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise SystemExit(f"bench_daily: psql failed: {res.stderr.strip()[-300:]}")
        doc = json.loads(res.stdout.strip())
    return min(times), times, doc


def time_inprocess(admin: str, runs: int = 3) -> float:
    """The check's measurement call as the suite makes it (pooled psycopg, bound params, pydantic model)."""
    from opsproof.measure import ops as measure
    from opsproof.target.db import Target

    target = Target(admin)
    try:
        best = float("inf")
        for _ in range(runs):
            end = datetime.now(timezone.utc)
            t0 = time.perf_counter()
            measure.slo_snapshot(target, end - timedelta(hours=24), end, 98.0, 99.95)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        target.close()


# -- (b), (c) pytest ----------------------------------------------------------------------------

def _clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update(extra or {})
    return env


# pytest runs in-process in a fresh python, so RUSAGE_SELF is the pytest process itself and RUSAGE_CHILDREN
# the largest process it spawned (the Supabase CLI for the advisors scan, pg tools).
PYTEST_WRAPPER = r"""
import json, resource, sys
import pytest
rc = pytest.main(sys.argv[2:])
open(sys.argv[1], "w").write(json.dumps({"rc": int(rc),
    "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
sys.exit(int(rc))
"""


def run_pytest(home: Path, ev: Path, marker: str, out: Path) -> dict:
    """One pytest run: wall time, exit code, peak RSS (kB), and the pack's results/junit."""
    if ev.exists():
        shutil.rmtree(ev)
    env = _clean_env({"OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO),
                      "OPSPROOF_NO_ALLURE_HTML": "1"})
    rusage = out.with_suffix(".rusage.json")
    gnu = out.with_suffix(".time")
    cmd = [PY, "-c", PYTEST_WRAPPER, str(rusage), "-m", marker, "-q", f"--opsproof-evidence-dir={ev}"]
    if os.access(GNU_TIME, os.X_OK):  # cross-check: max RSS over the whole process tree
        cmd = [GNU_TIME, "-v", "-o", str(gnu)] + cmd
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        res = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    ru = json.loads(rusage.read_text()) if rusage.exists() else {}
    tree_kb = None
    if gnu.exists():
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", gnu.read_text())
        tree_kb = int(m.group(1)) if m else None
    results = _results(ev)
    counts: dict[str, int] = {}
    for c in results:
        counts[c.get("verdict", "?")] = counts.get(c.get("verdict", "?"), 0) + 1
    summary = ("GREEN " if res.returncode == 0 and set(counts) <= {"pass"} else "RED ") + \
        ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return {"wall": wall, "rc": res.returncode, "rss_kb": ru.get("self_kb"), "children_rss_kb": ru.get("children_kb"),
            "tree_rss_kb": tree_kb, "summary": summary, "results": results, "junit": _junit(ev), "log": str(out)}


def best_of(runs: int, one) -> dict:
    """The fastest of `runs` runs (its RSS too); every run's wall time kept; a red run wins so it is reported."""
    all_runs = [one(i) for i in range(max(1, runs))]
    red = [r for r in all_runs if r["rc"] != 0]
    best = dict(red[0] if red else min(all_runs, key=lambda r: r["wall"]))
    best["walls"] = [round(r["wall"], 3) for r in all_runs]
    best["rss_max_kb"] = max(r["rss_kb"] or 0 for r in all_runs)
    return best


def _results(ev: Path) -> list[dict]:
    out = []
    for path in sorted(ev.rglob("results*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        out.extend(c for c in (doc.get("controls") or []) if isinstance(c, dict))
    return out


def _junit(ev: Path) -> dict[str, float]:
    """name -> time (setup + call + teardown, pytest's default junit_duration_report=total)."""
    times: dict[str, float] = {}
    for path in sorted(ev.rglob("junit*.xml")):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            continue
        for tc in root.iter("testcase"):
            key = f"{tc.get('classname')}::{tc.get('name')}"
            times[key] = times.get(key, 0.0) + float(tc.get("time") or 0)
    return times


def slo_junit_s(run: dict) -> float | None:
    vals = [t for k, t in run["junit"].items() if "test_slo" in k]
    return sum(vals) if vals else None


def failures(run: dict) -> list[str]:
    return [f"{c.get('id')}: {c.get('verdict')} {str(c.get('message', ''))[:160]}" for c in run["results"]
            if c.get("verdict") not in ("pass", None)]


# -- report -------------------------------------------------------------------------------------

def fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n % 1000 == 0 else str(n))


def table(rows: list[dict]) -> str:
    head = ("| requests in 24 h | seed | (a) psql | (b) `daily and slo` | (c) `daily` | b/a | c/a | b−a | "
            "SLO in pytest (junit) | in-process call | in-proc/a | pytest peak RSS b | pytest peak RSS c | "
            "largest child RSS c | (c) controls |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        a, b, c = r["a"], r["b"]["wall"], r["c"]["wall"]
        sj = r["slo_junit_s"]
        lines.append(
            f"| {r['requests_in_window']:,} ({fmt_n(r['n'])}) | {r['seed_s']:.1f} s | {a:.3f} s | {b:.2f} s | {c:.2f} s | "
            f"{b / a:.2f} | {c / a:.2f} | {b - a:.2f} s | {'%.3f s' % sj if sj is not None else 'n/a'} | "
            f"{r['inproc']:.3f} s | {r['inproc'] / a:.2f} | {r['b']['rss_kb'] / 1024:.0f} MB | "
            f"{r['c']['rss_kb'] / 1024:.0f} MB | {(r['c']['children_rss_kb'] or 0) / 1024:.0f} MB | {r['c']['summary']} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated request counts")
    ap.add_argument("--runs", type=int, default=3, help="psql runs per size (best is reported)")
    ap.add_argument("--pytest-runs", type=int, default=2, help="pytest runs per size and marker (best wall time)")
    ap.add_argument("--json", default=None, help="also write the raw numbers to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, packs); the stack is destroyed")
    args = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    from opsproof.stack.binaries import find_bindir
    from opsproof.stack.manager import Stack

    tmp = Path(tempfile.mkdtemp(prefix="opsproof-bench-daily-"))
    home = tmp / "home"
    home.mkdir()
    # the server may run as another OS user (e.g. postgres when we are root): it must reach <home>/stack/logs
    os.chmod(tmp, 0o755)
    os.chmod(home, 0o755)
    stack = Stack(home=home)
    rows: list[dict] = []
    try:
        t0 = time.perf_counter()
        stack.up(seed_days=0, log=lambda m: log(f"stack: {m}"))
        log(f"own stack up in {time.perf_counter() - t0:.1f} s under {home}")
        admin = stack.admin_dsn()
        psql = Path(find_bindir()) / "psql"
        mach = machine(admin)
        log(f"machine: {mach}")
        for n in sizes:
            log(f"--- {n:,} requests: seeding one 24 h window")
            counts, seed_s = reseed(admin, n)
            log(f"seeded in {seed_s:.1f} s: { {k: v for k, v in counts.items() if k != 'window'} }")
            a, a_all, doc = time_psql(psql, admin, args.runs)
            log(f"(a) psql best {a:.3f} s of {[round(x, 3) for x in a_all]}; window holds {doc.get('requests'):,} "
                f"requests, success {doc.get('success_pct')} %, p95 {doc.get('p95_ms')} ms")
            inproc = time_inprocess(admin, args.runs)
            log(f"    in-process measure.slo_snapshot best {inproc:.3f} s")
            b = best_of(args.pytest_runs, lambda i: run_pytest(home, tmp / "ev", "daily and slo", tmp / f"b-{n}-{i}.log"))
            log(f"(b) daily and slo: {b['wall']:.2f} s rc={b['rc']} rss={b['rss_kb']} kB (children {b['children_rss_kb']}, tree {b['tree_rss_kb']})  {b['summary']}")
            c = best_of(args.pytest_runs, lambda i: run_pytest(home, tmp / "ev", "daily", tmp / f"c-{n}-{i}.log"))
            log(f"(c) daily: {c['wall']:.2f} s rc={c['rc']} rss={c['rss_kb']} kB (children {c['children_rss_kb']}, tree {c['tree_rss_kb']})  {c['summary']}")
            for name, run in (("b", b), ("c", c)):
                for f in failures(run):
                    log(f"    {name} not green: {f}")
            rows.append({"n": n, "requests_in_window": doc.get("requests"), "seed_s": seed_s, "counts": counts,
                         "a": a, "a_runs": a_all, "inproc": inproc,
                         "slo_junit_s": slo_junit_s(c) if slo_junit_s(c) is not None else slo_junit_s(b),
                         "slo_junit_b_s": slo_junit_s(b),
                         "slo_durations_b": {r.get("id"): r.get("duration_s") for r in b["results"]
                                             if str(r.get("id", "")).startswith("SLO")},
                         "b": {k: v for k, v in b.items() if k not in ("results", "junit")},
                         "c": {k: v for k, v in c.items() if k not in ("results", "junit")},
                         "failures_b": failures(b), "failures_c": failures(c),
                         "slowest_c": sorted(c["junit"].items(), key=lambda kv: -kv[1])[:5]})
        print(f"\nMachine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, PostgreSQL {mach['pg']} "
              f"({', '.join(f'{k} {v}' for k, v in mach['pg_settings'].items())}), Python {mach['python']}\n")
        print(table(rows))
        for r in rows:
            print(f"{fmt_n(r['n'])}: slowest in (c): "
                  + ", ".join(f"{k.split('::')[-1]} {v:.2f} s" for k, v in r["slowest_c"]))
            for f in r["failures_c"]:
                print(f"{fmt_n(r['n'])}: (c) not green: {f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": mach, "rows": rows,
                                                   "at": datetime.now(timezone.utc).isoformat()}, indent=2,
                                                  default=str))
        return 0
    finally:
        try:
            stack.destroy()
            log("own stack destroyed")
        except Exception as exc:  # noqa: BLE001 - report, don't mask the real outcome
            log(f"could not destroy the bench stack under {home}: {exc}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

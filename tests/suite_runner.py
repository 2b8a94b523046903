"""Run the real suite (`pytest -m ...` in a subprocess) against the test session's stack and read its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# The tables top_up() writes: their row counts change with every suite run by design (a stack fingerprint that a
# case's undo must restore should treat `rows <table>` of these as volatile, or count rows before the top-up).
TOPPED_UP_TABLES = ("ops.requests", "ops.health_probes", "ops.agent_tasks", "ops.spans", "ops.agent_logs",
                    "ops.outbox", "ops.dlq_replays", "ops.dlq", "ops.ci_events",
                    # the rollup of the above, refreshed after every top-up (ops.rollup_refresh)
                    "ops.rollup_minute", "ops.rollup_hour", "ops.rollup_dirty", "ops.rollup_state")
NO_TOP_UP = "OPSPROOF_TEST_TOP_UP"  # env={NO_TOP_UP: "0"}: run on the telemetry exactly as it is (a stopped stream)


def top_up(home: Path) -> dict | None:
    """Continue the seeded history of the stack at `home` up to now (the test session's stack has no plane: without
    this, its telemetry goes stale minutes after seeding and the freshness controls rightly turn red). Minute-to-
    second granular (opsproof.stack.seed.top_up); serialised by a file lock so parallel suite runs do not write the
    same range twice. Returns the counts, or None for a home without a seeded stack."""
    import fcntl

    from opsproof import clock
    from opsproof.stack.manager import Stack, StackState
    from opsproof.stack.seed import refresh_rollup
    from opsproof.stack.seed import top_up as seed_top_up

    st = Stack(home=Path(home))
    if not st.state_file.exists():
        return None
    with open(st.dir / ".top-up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = StackState.load(st.state_file)
        if state is None or not state.seeded_until:
            return None
        start = datetime.fromisoformat(state.seeded_until)
        end = clock.now()
        if end - start < timedelta(seconds=1):
            return {}
        import psycopg

        with psycopg.connect(st.admin_dsn()) as conn:
            counts = seed_top_up(conn, start, end, seed=state.seed, requests_per_day=state.requests_per_day)
            # what the plane's gate does every 20 s on a live stack: roll the closed minutes (and the late rows)
            counts["rollup"] = refresh_rollup(conn)
        state.seeded_until = end.isoformat()
        state.save(st.state_file)
        return counts


def run_suite(home: Path, evidence_dir: Path, *args: str, env: dict | None = None, timeout: float = 600):
    """Returns (completed process, results dict or None). The suite writes its pack under evidence_dir.

    Tops the stack's seeded telemetry up to now first (see top_up), unless env sets OPSPROOF_TEST_TOP_UP=0."""
    if (env or {}).get(NO_TOP_UP, "1") != "0":
        top_up(home)
    full = dict(os.environ, OPSPROOF_HOME=str(home), OPSPROOF_PROJECT_DIR=str(REPO), OPSPROOF_NO_ALLURE_HTML="1")
    full.pop("PYTEST_XDIST_WORKER", None)
    full.pop("PYTEST_CURRENT_TEST", None)
    full.update(env or {})
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--opsproof-evidence-dir={evidence_dir}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full, cwd=REPO)
    results = None
    packs = sorted(p for p in evidence_dir.glob("????-??-??") if p.is_dir())
    if packs:
        # the run's own results: the newest results file of the pack (an adhoc run writes adhoc/<run id>/)
        files = sorted([*packs[-1].glob("results*.json"), *packs[-1].glob("adhoc/*/results.json")],
                       key=lambda f: f.stat().st_mtime)[-1:]
        if files:
            results = json.loads(files[0].read_text())
    return proc, results


def verdicts(results: dict) -> dict[str, str]:
    """nodeid -> verdict, plus control id -> worst verdict."""
    out: dict[str, str] = {}
    rank = {"pass": 0, "waived": 1, "skipped": 1, "fail": 2, "error": 3, "pending": 3, "interrupted": 3}
    for c in results["controls"]:
        out[c["nodeid"]] = c["verdict"]
        cid = c.get("id")
        if cid and rank[c["verdict"]] >= rank.get(out.get(cid, "pass"), 0):
            out[cid] = c["verdict"]
    return out

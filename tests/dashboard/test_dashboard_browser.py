"""The health dashboard in a REAL browser: the Debian chromium package driven by Playwright's Python package
(`executable_path`, no browser download), from file:// and from `opsproof dashboard serve`.

Two days, both from real suite runs against the test session's stack:
- green: a whole daily run (its pack's dashboard.html), two real `opsproof watch --once` ticks, and three earlier
  days laid down as copies of the run's results.json (score: opsproof.health over its real entries when the
  pack carries none) -- the trend has points to count;
- red:   the violation case FLG-001/zero-is-not-false injected, a whole daily run and one watch tick, undone;
  an open incident inserted for the page's live reading (deleted after).

What a person sees is asserted: the score, the trend's point count, the incident count, a red control's
finding. Screenshots go under the test's tmp dir and, when OPSPROOF_TEST_ARTIFACTS is set, there
(dashboard/*.png). OPSPROOF_UPDATE_DOCS_SCREENSHOT=1 also refreshes docs/img/dashboard.png from the green day.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import OPSPROOF, REPO, run_cli
from suite_runner import run_suite, top_up

from opsproof.dashboard.render import fmt_score

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RED_CASE = "FLG-001/zero-is-not-false"


# -- helpers ---------------------------------------------------------------------------------------------------------

def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("OPSPROOF_TEST_ARTIFACTS")
    if extra:
        (Path(extra) / "dashboard").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / "dashboard" / name)
    return path


def _samples(ev: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((ev / "watch").glob("*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


def _watch_once(stack_home: Path, ev: Path) -> None:
    """One real watch tick. Its alert state (stack home) is put back as it was: other tests share the stack."""
    state = stack_home / "watch" / "embedded" / "alerts.json"
    before = state.read_bytes() if state.exists() else None
    top_up(stack_home)  # the session stack has no plane: its telemetry is continued up to now, as for a suite run
    try:
        proc = run_cli("watch", "--once", "--evidence-dir", str(ev), home=stack_home, timeout=120)
        assert proc.returncode in (0, 1), proc.stdout[-1500:] + proc.stderr[-1500:]
    finally:
        if before is None:
            state.unlink(missing_ok=True)
        else:
            state.write_bytes(before)


def _build(stack_home: Path, ev: Path, out: Path) -> Path:
    proc = run_cli("dashboard", "build", "--evidence-dir", str(ev), "--out", str(out), home=stack_home, timeout=120)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    return out


def _step(step, stack) -> None:
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute(step)


def _lay_down_history(ev: Path, results: dict, days: int = 3) -> int:
    """Earlier days as copies of the real run's results.json; returns how many daily points carry a score."""
    from opsproof import health

    today = date.fromisoformat(results["date"])
    h = results.get("health") or health.score(results["controls"])
    to = datetime.fromisoformat(results["window"]["to"])
    for i in range(1, days + 1):
        d = today - timedelta(days=i)
        doc = dict(results, date=d.isoformat(), health=h,
                   window=dict(results["window"], to=(to - timedelta(days=i)).isoformat()))
        (ev / d.isoformat()).mkdir()
        (ev / d.isoformat() / "results.json").write_text(json.dumps(doc))
    return days + (1 if results.get("health") else 0)


def _score_text(results: dict) -> str:
    return fmt_score((results.get("health") or {}).get("score"))


# -- fixtures --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no system chromium (`.ci/run` installs the Debian package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    pg.errors = errors
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def green_day(stack, stack_home, tmp_path_factory):
    ev = tmp_path_factory.mktemp("dash-green") / "evidence"
    proc, results = run_suite(stack_home, ev, "-m", "daily")
    assert results is not None and results["suite"] == "daily", proc.stdout[-3000:] + proc.stderr[-2000:]
    assert results["green"], proc.stdout[-3000:]
    pack = ev / results["date"]
    assert (pack / "dashboard.html").is_file() and (ev.parent / "index.html").is_file()  # the pack writer's
    _watch_once(stack_home, ev)
    _watch_once(stack_home, ev)
    n_scored = _lay_down_history(ev, results)
    index = _build(stack_home, ev, ev.parent / "built.html")
    return {"ev": ev, "pack": pack, "results": results, "index": index, "n_scored": n_scored}


@pytest.fixture(scope="module")
def red_day(stack, stack_home, tmp_path_factory):
    from violation_cases import all_cases

    case = next(c for c in all_cases() if c.name == RED_CASE)
    ev = tmp_path_factory.mktemp("dash-red") / "evidence"
    try:
        _step(case.inject, stack)
        proc, results = run_suite(stack_home, ev, "-m", "daily")
        _watch_once(stack_home, ev)
    finally:
        _step(case.undo, stack)
    assert results is not None and not results["green"], proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (ev / results["date"] / "dashboard.html").is_file()
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        inc = conn.execute("insert into ops.incidents (level, type, description) values ('high', 'dashboard-test', "
                           "'the dashboard test''s open incident') returning id").fetchone()[0]
        try:
            index = _build(stack_home, ev, ev.parent / "built.html")
        finally:
            conn.execute("delete from ops.incidents where id = %s", (inc,))
    return {"ev": ev, "pack": ev / results["date"], "results": results, "index": index}


# -- green ------------------------------------------------------------------------------------------------------------

def test_green_day_from_file(green_day, page, tmp_path):
    ev, results = green_day["ev"], green_day["results"]
    samples = _samples(ev)
    assert len(samples) == 2
    page.goto(green_day["index"].as_uri())
    assert page.inner_text("#score").split()[0] == fmt_score(samples[-1]["score"])  # the newest reading
    n = green_day["n_scored"]
    caption = page.inner_text("#trend-points")
    assert caption.startswith(f"{n} daily scores · 2 watch samples"), caption
    trend = page.evaluate("window.opsproofTrend")
    assert trend["drawn"] and trend["xPoints"] == n + 2, trend
    assert page.locator("#trend canvas").count() >= 1
    assert page.inner_text("#incident-count") == "0 open"
    assert page.is_visible("#failing-none")
    assert "PASS" in page.inner_text("#by-framework") and "SOC2" in page.inner_text("#by-framework")
    assert page.locator("#agents").count() == 1 and page.locator("#resources").count() == 1
    assert page.errors == []
    _shot(page, tmp_path, "dashboard-green.png")
    if os.environ.get("OPSPROOF_UPDATE_DOCS_SCREENSHOT") == "1":
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(REPO / "docs" / "img" / "dashboard.png"), full_page=True)

    # the pack's own page (written by the pack writer at the end of the run): no network, its own verdict
    page.goto((green_day["pack"] / "dashboard.html").as_uri())
    assert page.inner_text("#score").split(" / ")[0] == _score_text(results)
    assert page.is_visible("#failing-none")
    assert page.errors == []
    html = (green_day["pack"] / "dashboard.html").read_text()
    assert "<script src" not in html and "<link" not in html and "uPlot" in html  # everything inlined


def test_green_day_served_live(green_day, page, stack_home, tmp_path):
    ev = green_day["ev"]
    env = dict(os.environ, OPSPROOF_HOME=str(stack_home), OPSPROOF_PROJECT_DIR=str(REPO))
    proc = subprocess.Popen([OPSPROOF, "dashboard", "serve", "--port", "0", "--refresh", "2", "--evidence-dir",
                             str(ev)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert "dashboard at http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        page.goto(url)
        assert page.inner_text("#score").split()[0] == fmt_score(_samples(ev)[-1]["score"])
        assert page.inner_text("#trend-points").startswith(f"{green_day['n_scored']} daily scores · 2 watch")
        assert page.inner_text("#incident-count") == "0 open"
        # live: a new watch tick shows up on the page's own automatic reload
        _watch_once(stack_home, ev)
        deadline, caption = time.monotonic() + 30, ""
        while "3 watch samples" not in caption and time.monotonic() < deadline:
            page.wait_for_event("load", timeout=15000)  # the page's own reload (--refresh 2)
            caption = page.inner_text("#trend-points")
        assert "3 watch samples" in caption, caption
        _shot(page, tmp_path, "dashboard-served.png")

        # a second server on the same port: one line, exit 2
        port = url.rsplit(":", 1)[1].strip("/")
        busy = run_cli("dashboard", "serve", "--port", port, "--evidence-dir", str(ev), home=stack_home, timeout=60)
        assert busy.returncode == 2 and "busy" in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- red --------------------------------------------------------------------------------------------------------------

def test_red_day(red_day, page, tmp_path):
    from opsproof.evidence.findings import finding, finding_text

    results, ev = red_day["results"], red_day["ev"]
    sample = _samples(ev)[-1]
    assert sample["score"] <= 49  # the kill switch is a critical control: the score is capped
    entry = next(e for e in results["controls"] if e["id"] == "FLG-001" and e["verdict"] == "fail")
    expected = [ln for ln in finding_text(finding(entry)).splitlines() if ln.startswith("- ")][0]

    page.goto(red_day["index"].as_uri())
    assert page.inner_text("#score").split()[0] == fmt_score(sample["score"])
    assert page.inner_text("#incident-count") == "1 open"
    assert "the dashboard test's open incident" in page.inner_text("#incidents")
    assert page.inner_text("#trend-points").startswith(f"{1 if results.get('health') else 0} daily score")
    red = page.locator(".finding[data-control='FLG-001']")
    assert red.count() == 1 and expected in red.inner_text(), (expected, red.inner_text() if red.count() else "")
    assert "FAIL" in page.inner_text("#watch-controls")
    assert page.errors == []
    _shot(page, tmp_path, "dashboard-red.png")

    page.goto((red_day["pack"] / "dashboard.html").as_uri())
    assert page.inner_text("#score").split(" / ")[0] == _score_text(results)
    assert expected in page.locator(".finding[data-control='FLG-001']").inner_text()
    assert page.errors == []


# -- without a browser ------------------------------------------------------------------------------------------------

def test_no_score_recorded_is_never_a_number(tmp_path):
    from opsproof.dashboard import build, index_path

    day = tmp_path / "evidence" / "2026-11-20"
    day.mkdir(parents=True)
    (day / "results.json").write_text(json.dumps({"suite": "daily", "date": "2026-11-20", "verdict": "GREEN",
                                                  "green": True, "summary": {"pass": 1}, "controls": []}))
    html = build(tmp_path / "evidence")
    assert '<div class="score none" id="score"' in html and ">no score recorded<" in html
    assert "0</b> daily scores" in html
    assert index_path(tmp_path / "reports" / "evidence") == tmp_path / "reports" / "index.html"
    assert index_path(tmp_path / "ev") == tmp_path / "ev" / "index.html"
    assert index_path(tmp_path / "reports" / "evidence", "staging") == tmp_path / "reports" / "index-staging.html"


def test_serve_on_a_busy_port_is_one_line_exit_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        proc = run_cli("dashboard", "serve", "--port", str(port), "--no-live", home=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"opsproof: port {port} on 127.0.0.1 is busy (choose another with "
                                                "--port)"]
    assert time.monotonic() - t0 < 30


def test_task_latency_reports_the_query_that_ran(stack):
    """The dashboard's task latency (measure/agent_latency.py): its rendered query, run by hand, gives its result."""
    from opsproof import clock
    from opsproof.measure.agent_latency import task_latency
    from opsproof.target.db import Target

    target = Target(stack.admin_dsn())
    try:
        end = clock.now()
        m = task_latency(target, end - timedelta(days=1), end)
        again = target.rows(m.query)[0]
    finally:
        target.close()
    assert m.result["finished"] > 0 and m.result["run_p95_s"] >= m.result["run_p50_s"] >= 0
    assert dict(again) == m.result


def test_compressed_packs_count_in_the_trend(tmp_path):
    """Packs older than 7 days are tarballs (retention): their scores are read without extracting them."""
    import tarfile

    from opsproof.dashboard.data import build_model

    root = tmp_path / "evidence"
    root.mkdir()
    for day, score in (("2026-11-10", 93), ("2026-11-20", 71)):
        src = tmp_path / "src" / day
        src.mkdir(parents=True)
        (src / "results.json").write_text(json.dumps({
            "suite": "daily", "date": day, "verdict": "GREEN", "green": True, "summary": {"pass": 1}, "controls": [],
            "window": {"to": f"{day}T06:00:00+00:00"}, "health": {"score": score, "components": {}, "caps": []}}))
        with tarfile.open(root / f"{day}.tar.gz", "w:gz") as tar:
            tar.add(src, arcname=day)
    (root / "watch").mkdir()
    (root / "watch" / "2026-11-21.jsonl").write_text('{"at": "2026-11-21T00:00:00Z", "score": 88}\nnot json\n')
    m = build_model(root, today=date(2026, 11, 21))
    assert [p["score"] for p in m["trend"]["packs"]] == [93.0, 71.0]
    assert m["trend"]["samples_count"] == 1 and m["trend"]["samples_unreadable"] == 1
    assert m["now"]["score"] == 88.0 and m["now"]["source"] == "watch sample"

"""The opsproof pytest plugin: strict markers, options, control metadata, evidence recording and the pack.

A run is a *suite run* when it collects from checks/, drills/ or acceptance/ (e.g. `pytest -m daily`);
only suite runs connect to a target and write an evidence pack. The project's own tests (tests/) see
the markers and nothing else.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from opsproof import __version__, clock
from opsproof.errors import OpsproofError
from opsproof.recorder import ARTIFACT_KEY, CONTROL_KEY, RECORD_KEY, MeasurementError

SUITE_DIRS = ("checks", "drills", "acceptance")
SUITE_KINDS = ("daily", "gate", "drill", "acceptance", "monthly")
AREAS = ("flags", "budgets", "slo", "watchlist", "security", "cadence", "telemetry")

MARKERS = {
    "daily": "daily guardrail/SLO/security controls (cron)",
    "gate": "the CI deploy gate subset (flags, budgets, SLO gates)",
    "drill": "weekly resilience drills (change the live system on purpose, restore it)",
    "acceptance": "done-done acceptance steps",
    "monthly": "monthly cadence controls",
    "flags": "area: guardrail feature flags",
    "budgets": "area: budgets",
    "slo": "area: SLO gates",
    "watchlist": "area: watchlist",
    "security": "area: security",
    "cadence": "area: operational cadence",
    "telemetry": "area: telemetry freshness (the streams the other controls read keep arriving)",
    "control(id, title, severity, frameworks)": "control metadata of a check",
}


def pytest_addoption(parser):
    g = parser.getgroup("opsproof")
    g.addoption("--target", choices=("embedded", "env"), default=None,
                help="embedded (the private stack, default) or env (SUPABASE_* settings)")
    g.addoption("--policy", default=None, help="posture policy file (default: opsproof.toml)")
    g.addoption("--window", default="24h", help="measurement window ending now (e.g. 24h, 6h, 7d)")
    g.addoption("--evidence-dir", default=None, help="evidence root (default: reports/evidence)")
    g.addoption("--date", default=None, help="evidence date YYYY-MM-DD (default: today UTC)")
    g.addoption("--no-evidence", action="store_true", help="do not write an evidence pack")
    g.addoption("--allow-drills-on-production", action="store_true",
                help="let drills run on a target marked production (the policy must allow it too)")
    g.addoption("--dry-run", action="store_true", help="drills print what they would change and change nothing")


# -- configuration ---------------------------------------------------------------

def _is_suite(config) -> bool:
    root = Path(str(config.rootpath))
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = path if path.is_absolute() else (Path(config.invocation_params.dir) / path)
        path = path.resolve()
        for d in SUITE_DIRS:
            base = (root / d).resolve()
            if path == base or base in path.parents:
                return True
    return False


def _suite_kind(config) -> str:
    expr = config.getoption("markexpr") or ""
    for kind in SUITE_KINDS:
        if kind in expr.replace("(", " ").replace(")", " ").split():
            return kind
    return "daily"


_ACTIVE: "SuiteState | None" = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    global _ACTIVE
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    config._opsproof = None
    if not _is_suite(config):
        return
    from opsproof import policy as policy_mod
    from opsproof.config import resolve_settings

    try:
        policy_path = Path(config.getoption("policy") or (Path(str(config.rootpath)) / "opsproof.toml"))
        pol = policy_mod.load(policy_path)
        window = clock.parse_window(config.getoption("window"))
        day = clock.parse_date(config.getoption("date"))
        settings = resolve_settings(config.getoption("target"))  # environment > .env > embedded stack files
    except OpsproofError as exc:
        pytest.exit(f"opsproof: {exc}", returncode=exc.exit_code)
    state = SuiteState(config=config, policy=pol, settings=settings, window=window, day=day,
                       kind=_suite_kind(config))
    config._opsproof = state
    _ACTIVE = state
    os.environ["OPSPROOF_RUN_ID"] = state.run_id  # xdist workers (spawned later) share the controller's run id
    if _is_worker(config):
        return
    if not (config.getoption("no_evidence") or config.getoption("dry_run")):  # a dry run changes and proves nothing
        state.open_pack()
    _stop_on_signals(state)


def _stop_on_signals(st: "SuiteState") -> None:
    """SIGINT/SIGTERM stop a suite run whatever the inherited disposition (cron, nohup and `&` jobs start
    with SIGINT ignored; SIGTERM would end the process without a pack): each becomes a KeyboardInterrupt,
    so pytest ends the session as interrupted and the pack says so (never green)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum, frame):
        from opsproof.levers.signals import Interrupted

        raise Interrupted(signum)

    try:
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            st.saved_signals[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        st.saved_signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo):
    """Ctrl-C, SIGTERM, a drill's signal guard, pytest.exit(): the run did not finish; the pack says so."""
    st = _ACTIVE
    if st is None or st.interrupted:
        return
    v = excinfo.value
    st.interrupted = (getattr(v, "signame", None) or (f"pytest.exit: {getattr(v, 'msg', '')}"[:300]
                      if hasattr(v, "returncode") else "SIGINT" if type(v) is KeyboardInterrupt
                      else f"{type(v).__name__}" + (f": {v}" if str(v) else "")))


def pytest_sessionfinish(session, exitstatus):
    st = _state(session.config)
    if st is None:
        return
    if int(exitstatus) == int(pytest.ExitCode.INTERRUPTED) and not st.interrupted:
        st.interrupted = "interrupted"
    st.planned = [c for c in (control_of(i) for i in session.items) if c]  # to name the controls that never ran


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


class SuiteState:
    """Everything a suite run shares: policy, settings, window, the pack being written."""

    def __init__(self, *, config, policy, settings, window, day, kind):
        self.config = config
        self.policy = policy
        self.settings = settings
        self.window = window
        self.day = day
        self.kind = kind
        self.run_id = os.environ.get("OPSPROOF_RUN_ID") or uuid.uuid4().hex[:12]
        self.started = clock.now()
        self.results: list[dict] = []
        self.artifacts: dict[str, object] = {}
        self.pack = None
        self.target = None
        self.pack_path: Path | None = None
        self.interrupted: str | None = None  # what stopped the run early (SIGINT, SIGTERM, ...)
        self.planned: list[dict] = []
        self.saved_signals: dict = {}
        self.root = Path(config.getoption("evidence_dir") or (Path(str(config.rootpath)) / "reports" / "evidence"))

    # file names inside the day's pack; the daily run owns the un-suffixed ones
    def name(self, base: str, ext: str | None = None) -> str:
        stem = base if self.kind == "daily" else f"{base}-{self.kind}"
        return f"{stem}.{ext}" if ext else stem

    def entry(self, nodeid: str, ctl: dict) -> dict:
        """This run's result entry for a control (created on first sight)."""
        for e in self.results:
            if e["nodeid"] == nodeid:
                return e
        e = dict(ctl, records=[], verdict="pending")
        self.results.append(e)
        return e

    def open_pack(self) -> None:
        from opsproof.evidence.pack import PackWriter

        self.pack = PackWriter(self.root, self.day)
        staging = Path(self.pack.staging)
        self._carry_over(staging)
        opt = self.config.option
        # reports the user asked for go where they asked; the pack gets a copy at commit
        self.user_reports = {}
        for attr, name in (("htmlpath", self.name("report", "html")), ("xmlpath", self.name("junit", "xml"))):
            if getattr(opt, attr, None):
                self.user_reports[name] = Path(getattr(opt, attr))
            else:
                setattr(opt, attr, str(staging / name))
        opt.self_contained_html = True
        if hasattr(opt, "allure_report_dir"):
            if opt.allure_report_dir:
                self.user_reports[self.name("allure-results")] = Path(opt.allure_report_dir)
            else:
                opt.allure_report_dir = str(staging / (self.name("allure-results")))
                opt.clean_alluredir = True

    def _carry_over(self, staging: Path) -> None:
        """Keep what other run kinds wrote into today's pack (drills/, acceptance.json, the daily results...)."""
        import shutil

        current = self.root / self.day.isoformat()
        if not current.is_dir():
            return
        mine = {self.name("results", "json"), self.name("report", "html"), self.name("junit", "xml"), "manifest.json"}
        mine_dirs = {self.name("allure-results"), self.name("allure-report")}
        if self.kind == "daily":
            mine |= {"flags.json", "slo_snapshot.json", "outbox_lag.json", "alerts.sql.out", "trace-sample.txt",
                     "audit_digest.json", "advisors.json"}
        for src in current.rglob("*"):
            rel = src.relative_to(current)
            if src.is_dir() or str(rel) in mine or rel.parts[0] in mine_dirs:
                continue
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


CONTRACT_TABLES = ("ops.feature_flags", "ops.flag_overrides", "ops.budgets", "ops.requests", "ops.health_probes",
                   "ops.outbox", "ops.agent_tasks", "ops.dlq", "ops.dlq_replays", "ops.spans", "ops.ci_events",
                   "ops.alerts", "ops.backups", "ops.service_accounts")


def pytest_sessionstart(session):
    """Suite runs: reach the target before any check runs; unreachable/wrong credentials/no contract = exit 2."""
    st = _state(session.config)
    if st is None:
        return
    from opsproof.target.db import Target

    if st.settings.db_url is None:
        hint = ("the embedded stack is not up: run `opsproof stack up` (or `make daily`)"
                if st.settings.target == "embedded" else "SUPABASE_DB_URL is not set")
        pytest.exit(f"opsproof: no target: {hint}", returncode=2)
    try:
        st.target = Target(st.settings.db_url.get_secret_value())
    except OpsproofError as exc:
        pytest.exit(f"opsproof: {exc} [{st.settings.describe_line()}]", returncode=exc.exit_code)
    missing = [t for t in CONTRACT_TABLES if st.target.value("select to_regclass(%s) is null", (t,))]
    if missing:
        st.target.close()
        pytest.exit(f"opsproof: the ops contract is missing on the target: {', '.join(missing)} "
                    "(apply supabase/migrations with `supabase db push`)", returncode=2)


def _state(config) -> SuiteState | None:
    return getattr(config, "_opsproof", None)


# -- collection: every check is a control -------------------------------------------

def pytest_collection_modifyitems(config, items):
    st = _state(config)
    if st is None:
        return
    for item in items:
        in_suite = any(part in SUITE_DIRS for part in Path(str(item.path)).parts[-3:])
        if in_suite and item.get_closest_marker("control") is None:
            raise pytest.UsageError(f"{item.nodeid}: every check needs @pytest.mark.control(id=..., title=...)")


def control_of(item) -> dict | None:
    marker = item.get_closest_marker("control")
    if marker is None:
        return None
    kw = dict(marker.kwargs)
    area = next((a for a in AREAS if item.get_closest_marker(a)), None) or ("drill" if item.get_closest_marker("drill") else "acceptance" if item.get_closest_marker("acceptance") else None)
    return {"id": kw.get("id"), "title": kw.get("title", item.name), "severity": kw.get("severity", "normal"),
            "frameworks": kw.get("frameworks", {}), "area": area, "nodeid": item.nodeid}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    ctl = control_of(item)
    if ctl is None or _state(item.config) is None:
        return
    item.user_properties.append((CONTROL_KEY, ctl))
    try:
        import allure

        allure.dynamic.epic(ctl["area"] or "opsproof")
        allure.dynamic.feature(ctl["id"])
        allure.dynamic.title(f"{ctl['id']} {ctl['title']}")
        allure.dynamic.severity(_allure_severity(ctl["severity"]))
        allure.dynamic.tag(*[f"{fw}:{c}" for fw, cs in ctl["frameworks"].items() for c in cs])
    except Exception:
        pass


def _allure_severity(sev: str):
    import allure

    return {"critical": allure.severity_level.CRITICAL, "high": allure.severity_level.CRITICAL,
            "blocker": allure.severity_level.BLOCKER, "medium": allure.severity_level.NORMAL,
            "low": allure.severity_level.MINOR}.get(sev, allure.severity_level.NORMAL)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance((MeasurementError, OpsproofError)):
        # cannot measure: one clear line, verdict "error" (never a pass, never a skip)
        report.longrepr = f"CANNOT MEASURE: {call.excinfo.value}"
        report.user_properties.append(("opsproof_error", str(call.excinfo.value)))


# -- results (controller side; xdist ships user_properties from the workers) ----------

def pytest_runtest_logreport(report):
    st = _ACTIVE
    if st is None or _is_worker(st.config):
        return None
    props = dict((k, v) for k, v in report.user_properties if k in (CONTROL_KEY,))
    ctl = props.get(CONTROL_KEY)
    if ctl is None:
        return None
    entry = st.entry(report.nodeid, ctl)
    entry["duration_s"] = round(entry.get("duration_s", 0) + report.duration, 3)  # setup + call + teardown
    for k, v in report.user_properties:  # every phase: fixtures finish records in teardown
        if k == ARTIFACT_KEY:
            st.artifacts[v["name"]] = v["content"]
    if report.when == "call" or (report.failed and report.when != "call") or report.skipped:
        entry["records"].extend(v for k, v in report.user_properties if k == RECORD_KEY and v not in entry["records"])
        errors = [v for k, v in report.user_properties if k == "opsproof_error"]
        if errors or (report.failed and report.when != "call"):
            entry["verdict"] = "error"
            entry["message"] = errors[0] if errors else _short(report)
        elif report.failed:
            entry["verdict"] = "fail"
            entry["message"] = _short(report)
        elif report.skipped:
            entry["verdict"] = "skipped"
            entry["message"] = _short(report)
        elif entry.get("verdict") not in ("fail", "error"):
            entry["verdict"] = "pass"
    if report.when == "teardown" and entry["verdict"] == "pass":
        _no_silent_pass(entry)
    return None


def _no_silent_pass(entry: dict) -> None:
    """A pass must show its measurement: no record is an error, a record that failed is a fail."""
    if not entry["records"]:
        entry["verdict"] = "error"
        entry["message"] = "CANNOT MEASURE: the check passed without recording a measurement"
    elif any(r.get("verdict") != "pass" for r in entry["records"]):
        bad = next(r for r in entry["records"] if r.get("verdict") != "pass")
        entry["verdict"] = "fail"
        entry["message"] = f"{bad.get('name')}: measured {bad.get('measured')}, required {bad.get('threshold')}"


def _short(report) -> str:
    text = str(report.longrepr) if report.longrepr else ""
    if hasattr(report, "longreprtext"):
        text = report.longreprtext or text
    lines = [ln for ln in text.splitlines() if ln.startswith("E ") or ln.startswith("CANNOT")]
    if lines:
        return lines[0].lstrip("E").strip()[:500]
    return text.strip().splitlines()[-1][:500] if text.strip() else ""




# -- pytest-html columns -----------------------------------------------------------

def pytest_html_results_table_header(cells):
    cells.insert(1, "<th>Control</th>")
    cells.insert(2, "<th>Measured</th>")
    cells.insert(3, "<th>Threshold</th>")


def pytest_html_results_table_row(report, cells):
    ctl = next((v for k, v in report.user_properties if k == CONTROL_KEY), {}) or {}
    recs = [v for k, v in report.user_properties if k == RECORD_KEY]
    measured = "; ".join(f"{r['name']}={r['measured']}" for r in recs)
    threshold = "; ".join(f"{r['threshold']}" for r in recs)
    from html import escape

    cells.insert(1, f"<td>{escape(str(ctl.get('id', '')))}</td>")
    cells.insert(2, f"<td>{escape(measured[:300])}</td>")
    cells.insert(3, f"<td>{escape(threshold[:200])}</td>")


def pytest_html_report_title(report):
    report.title = "opsproof evidence report"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix, summary, postfix, session):
    """The report names the target that was measured and where its settings came from (never a secret)."""
    st = _state(session.config)
    if st is None:
        return
    from html import escape

    d = st.settings.describe()
    src = ", ".join(f"{k} from {v}" for k, v in d["sources"].items())
    prefix.append(f"<p><b>Target measured:</b> {escape(str(d['kind']))} {escape(str(d['host']))}:"
                  f"{escape(str(d['port']))}/{escape(str(d['database']))}"
                  f" &mdash; settings: {escape(src)}"
                  + (f" (.env: {escape(d['env_file'])})" if d.get("env_file") else "") + "</p>")


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata, config):
    """pytest-html's Environment table: the target measured."""
    st = _state(config)
    if st is not None:
        metadata["opsproof target"] = st.settings.describe_line()


# -- the pack ------------------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    st = _state(config)
    if st is None or _is_worker(config) or st.pack is None:
        _restore_signals(st)
        return
    try:
        if not st.results:
            st.pack.abort()
            return
        _write_pack(st)
    finally:
        _restore_signals(st)


def _restore_signals(st) -> None:
    import signal

    for sig, prev in (getattr(st, "saved_signals", None) or {}).items():
        try:
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):
            pass


def _write_pack(st: SuiteState) -> None:
    from opsproof.evidence import allure as allure_mod
    from opsproof.evidence.retention import prune

    pack = st.pack
    staging = Path(pack.staging)
    for name, content in sorted(st.artifacts.items()):
        if isinstance(content, (dict, list)):
            pack.add_json(name, content)
        else:
            pack.add_text(name, str(content))
    interrupted = st.interrupted
    for r in st.results:  # started but never finished: proved nothing
        if r["verdict"] == "pending":
            r["verdict"] = "interrupted" if interrupted else "error"
            r["message"] = (f"run interrupted ({interrupted}) before this control finished" if interrupted
                            else "CANNOT MEASURE: the control never finished")
    ran = {r["nodeid"] for r in st.results}
    not_run = [{"id": c["id"], "nodeid": c["nodeid"]} for c in st.planned if c["nodeid"] not in ran]
    summary = {k: sum(1 for r in st.results if r["verdict"] == k) for k in ("pass", "fail", "error", "skipped")}
    if interrupted:
        summary["interrupted"] = sum(1 for r in st.results if r["verdict"] == "interrupted")
    results = {
        "suite": st.kind, "run_id": st.run_id, "date": st.day.isoformat(),
        "window": {"length_s": st.window.total_seconds(), "to": st.started.isoformat(),
                   "from": (st.started - st.window).isoformat()},
        # skipped controls proved nothing: a run with any is not green; nor is an interrupted or incomplete run
        "green": (summary["fail"] == 0 and summary["error"] == 0 and summary["skipped"] == 0 and summary["pass"] > 0
                  and not interrupted and not not_run),
        "interrupted": bool(interrupted), "interrupted_by": interrupted, "not_run": not_run,
        "summary": summary, "controls": sorted(st.results, key=lambda r: (r.get("id") or "", r["nodeid"])),
        "target": st.settings.describe(),  # what was measured (host, database, where each setting came from)
    }
    pack.add_json(st.name("results", "json"), results)
    for name, src in getattr(st, "user_reports", {}).items():
        if src.exists():
            pack.add_file(name, src)
    allure_dir = staging / st.name("allure-results")
    if allure_dir.is_dir() and any(allure_dir.iterdir()) and os.environ.get("OPSPROOF_NO_ALLURE_HTML") != "1":
        allure_mod.generate(allure_dir, staging / st.name("allure-report"))
    metadata = {"target": st.settings.target, "host": st.settings.host(), "target_detail": st.settings.describe(),
                "opsproof_version": __version__,
                "policy": st.policy.source, "policy_sha256": st.policy.sha256, "run_id": st.run_id,
                "suite": st.kind, "runner_host": socket.gethostname(), "started": st.started.isoformat(),
                "finished": clock.now().isoformat(), "green": results["green"], "interrupted": bool(interrupted)}
    try:
        import fcntl

        st.root.mkdir(parents=True, exist_ok=True)
        with open(st.root / ".amend.lock", "w") as lock:  # the same lock `opsproof cadence` amends under
            fcntl.flock(lock, fcntl.LOCK_EX)
            from opsproof.evidence.signing import signer_for  # OPSPROOF_SIGNING_KEY, or the stack home's key

            path = pack.commit(metadata, secrets=st.settings.secret_values(), signer=signer_for(st.settings))
    except OpsproofError as exc:
        pack.abort()
        print(f"\nopsproof: evidence pack NOT written: {exc}")
        return
    st.pack_path = Path(path)
    prune(st.root, st.day, keep_days=st.policy.evidence.retention_days,
          compress_after_days=st.policy.evidence.compress_after_days)
    verdict = f"INTERRUPTED by {interrupted}, {len(not_run)} control(s) never ran" if interrupted else (
        "GREEN" if results["green"] else "RED")
    print(f"\nopsproof: evidence pack {path} ({verdict}: {summary})")
    report = Path(path) / st.name("report", "html")
    if report.exists():
        print(f"opsproof: report {report}")
    if not results["green"]:
        from opsproof.alerting import post_run_failure

        post_run_failure(st.settings, results, report)

"""The state of one suite run (kept in `config.stash[STATE_KEY]`) and the hooks that need it, as a plugin object
registered only for suite runs: collection against the catalog, control metadata, verdicts, waivers."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from opsproof import clock
from opsproof.errors import OpsproofError
from opsproof.recorder import ARTIFACT_KEY, CONTROL_KEY, RECORD_KEY, MeasurementError
from opsproof.suite_options import SUITE_DIRS, SuiteOptions

STATE_KEY = pytest.StashKey["SuiteState"]()
WAIVED_KEY = "opsproof_waived"


class SuiteState:
    """Everything a suite run shares: options, policy, catalog, waivers, settings, the target, the results."""

    def __init__(self, *, config, options: SuiteOptions, policy, catalog, waivers, settings, window, day):
        self.config = config
        self.options = options
        self.kind = options.kind
        self.policy = policy
        self.catalog = catalog
        self.waivers = waivers
        self.settings = settings
        self.window = window
        self.window_label = options.window
        self.day = day
        self.run_id = os.environ.get("OPSPROOF_RUN_ID") or uuid.uuid4().hex[:12]
        self.started = clock.now()
        self.results: list[dict] = []
        self.artifacts: dict[str, object] = {}
        self.pack = None
        self.target = None
        self.pack_path: Path | None = None
        self.interrupted: str | None = None  # what stopped the run early (SIGINT, SIGTERM, ...)
        self.planned: list[dict] = []
        self.missing_from_run: list[dict] = []  # catalog controls of this kind that were not collected
        self.saved_signals: dict = {}
        self.user_reports: dict[str, Path] = {}
        from opsproof.targets import evidence_root

        self.root = evidence_root(options.evidence_dir, settings.name)  # a named target: its own chain

    def name(self, base: str, ext: str | None = None) -> str:
        """This run's file names in the day's pack (evidence/daypack.py decides who owns what): the daily owns the
        un-suffixed ones, gate/drill/... `<base>-<kind>`, adhoc runs `adhoc/<run id>/`."""
        from opsproof.evidence.daypack import kind_name

        return kind_name(self.kind, self.run_id, base, ext)

    def artifact_name(self, name: str) -> str:
        """Where a check's artifact goes: the daily owns the top level; other kinds their own folder, so a gate or
        adhoc run never replaces the daily's slo_snapshot.json (drill and acceptance records keep their names)."""
        from opsproof.evidence.daypack import kind_artifact_name

        return kind_artifact_name(self.kind, self.run_id, name)

    def entry(self, nodeid: str, ctl: dict) -> dict:
        """This run's result entry for a control (created on first sight)."""
        for e in self.results:
            if e["nodeid"] == nodeid:
                return e
        e = dict(ctl, records=[], verdict="pending", message="")
        self.results.append(e)
        return e


def state_of(config) -> SuiteState | None:
    return config.stash.get(STATE_KEY, None)


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def control_of(item) -> dict | None:
    """A check's control: the marker names the id; title, severity, area and frameworks come from the catalog."""
    marker = item.get_closest_marker("control")
    if marker is None:
        return None
    cid = marker.args[0] if marker.args else marker.kwargs.get("id")
    st = state_of(item.config)
    row = st.catalog.controls.get(cid) if (st is not None and st.catalog is not None and cid) else None
    kind = ("drill" if item.get_closest_marker("drill") else
            "acceptance" if item.get_closest_marker("acceptance") else "check")
    if row is None:  # collection refuses ids the catalog does not know; this is a run without a suite state
        return {"id": cid, "title": item.name, "severity": "medium", "frameworks": {}, "area": None, "kind": kind,
                "nodeid": item.nodeid}
    return {"id": cid, "title": row.title, "severity": row.severity, "frameworks": _frameworks(row),
            "area": row.area, "kind": kind, "nodeid": item.nodeid}


def _frameworks(row) -> dict[str, list[str]]:
    return {k: list(v) for k, v in row.frameworks.as_dict().items() if v}


class SuiteRun:
    """The hooks of a suite run (registered as a plugin object only when a suite runs)."""

    def __init__(self, state: SuiteState):
        self.st = state

    # -- collection: every check is a control of the catalog -------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config, items):
        st = self.st
        unknown = []
        for item in items:
            in_suite = any(part in SUITE_DIRS for part in Path(str(item.path)).parts[-3:])
            marker = item.get_closest_marker("control")
            if in_suite and marker is None:
                raise pytest.UsageError(f"{item.nodeid}: every check needs @pytest.mark.control(\"<ID>\")")
            cid = (marker.args[0] if marker.args else marker.kwargs.get("id")) if marker else None
            if marker is not None and st.catalog is not None and cid not in st.catalog:
                unknown.append(f"{cid} ({item.nodeid})")
        if unknown:
            raise pytest.UsageError(f"control id(s) not in the catalog {st.options.catalog.name}: "
                                    + ", ".join(sorted(set(unknown))[:10]))
        if st.options.selected:
            wanted = st.catalog.select(ids=list(st.options.controls) or None,
                                       severities=list(st.options.severities) or None,
                                       requirements=list(st.options.requirements) or None)
            keep, drop = [], []
            for item in items:
                c = control_of(item)
                (keep if c is not None and c["id"] in wanted else drop).append(item)
            if drop:
                config.hook.pytest_deselected(items=drop)
                items[:] = keep

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session):
        st = self.st
        st.planned = [c for c in (control_of(i) for i in session.items) if c]
        if st.catalog is not None and st.kind not in ("adhoc",):
            have = {c["id"] for c in st.planned}
            st.missing_from_run = [{"id": cid, "reason": f"in the catalog for the {st.kind} suite, not collected"}
                                   for cid in sorted(st.catalog.select(suites=[st.kind])) if cid not in have]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        ctl = control_of(item)
        if ctl is not None:
            item.user_properties.append((CONTROL_KEY, ctl))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and call.excinfo.errisinstance((MeasurementError, OpsproofError)):
            # cannot measure: one clear line, verdict "error" (never a pass, never a skip, never waived)
            report.longrepr = f"CANNOT MEASURE: {call.excinfo.value}"
            report.user_properties.append(("opsproof_error", str(call.excinfo.value)))
            return
        if (call.excinfo is not None and report.failed
                and not call.excinfo.errisinstance((AssertionError, pytest.fail.Exception))):
            # the check crashed (a bug, a driver error): it measured nothing -- an error, never a fail or a pass
            v = call.excinfo.value
            report.user_properties.append(("opsproof_error", f"check crashed: {type(v).__name__}: {v}"[:500]))
            return
        if call.when == "call" and report.failed and self.st.waivers is not None:
            ctl = control_of(item)
            w = self.st.waivers.for_entry(ctl["id"], item.nodeid, self.st.day) if ctl else None
            if w is not None:
                # an accepted, expiring exception: reported as waived (an xfail to pytest, JUnit and the HTML
                # report; "waived" in results.json), never as a pass
                why = (f"WAIVED {ctl['id']}: {w.justification} (approved by {w.approver}, "
                       f"expires {w.expires})")
                report.user_properties.append((WAIVED_KEY, {"justification": w.justification,
                                                            "approver": w.approver,
                                                            "expires": str(w.expires),
                                                            "control": ctl["id"],
                                                            "parameter": getattr(w, "parameter", None),
                                                            "finding": _short(report)}))
                report.outcome = "skipped"
                report.wasxfail = why

    # -- results (controller side; xdist ships user_properties from the workers) ----------------------------
    def pytest_runtest_logreport(self, report):
        st = self.st
        if is_worker(st.config):
            return
        ctl = next((v for k, v in report.user_properties if k == CONTROL_KEY), None)
        if ctl is None:
            return
        entry = st.entry(report.nodeid, ctl)
        entry["duration_s"] = round(entry.get("duration_s", 0) + report.duration, 3)  # setup + call + teardown
        for k, v in report.user_properties:  # every phase: fixtures finish records in teardown
            if k == ARTIFACT_KEY:
                st.artifacts[v["name"]] = v["content"]
        if report.when == "call" or (report.failed and report.when != "call") or report.skipped:
            entry["records"].extend(v for k, v in report.user_properties
                                    if k == RECORD_KEY and v not in entry["records"])
            errors = [v for k, v in report.user_properties if k == "opsproof_error"]
            waived = next((v for k, v in report.user_properties if k == WAIVED_KEY), None)
            if errors or (report.failed and report.when != "call"):
                entry["verdict"] = "error"
                entry["message"] = errors[0] if errors else _short(report)
            elif report.failed:
                entry["verdict"] = "fail"
                entry["message"] = _short(report)
            elif waived is not None and report.when == "call":
                entry["verdict"] = "waived"
                entry["message"] = f"WAIVED: {waived['finding']}"
                entry["waiver"] = {k: waived[k] for k in ("control", "parameter", "justification", "approver",
                                                          "expires")}
            elif report.skipped:
                entry["verdict"] = "skipped"
                entry["message"] = _short(report)
            elif entry.get("verdict") not in ("fail", "error"):
                entry["verdict"] = "pass"
        if report.when == "teardown" and entry["verdict"] == "pass":
            _no_silent_pass(entry)

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo):
        """Ctrl-C, SIGTERM, a drill's signal guard, pytest.exit(): the run did not finish; the pack says so."""
        st = self.st
        if st.interrupted:
            return
        v = excinfo.value
        st.interrupted = (getattr(v, "signame", None) or (f"pytest.exit: {getattr(v, 'msg', '')}"[:300]
                          if hasattr(v, "returncode") else "SIGINT" if type(v) is KeyboardInterrupt
                          else f"{type(v).__name__}" + (f": {v}" if str(v) else "")))

    def pytest_sessionfinish(self, session, exitstatus):
        st = self.st
        if int(exitstatus) == int(pytest.ExitCode.INTERRUPTED) and not st.interrupted:
            st.interrupted = "interrupted"
        if not st.planned:
            st.planned = [c for c in (control_of(i) for i in session.items) if c]


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

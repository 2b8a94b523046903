"""The reports of a suite run an auditor reads: pytest-html, Allure, JUnit, and the pack's compliance report.

`ReportsPlugin(state)` holds every reporting hook; the plugin registers it for suite runs only (controller AND
xdist workers: Allure results are written by the workers):

    config.pluginmanager.register(ReportsPlugin(state), "opsproof-reports")

`write_reports(state, staging, results)` runs at pack-write time (controller) and returns the names it wrote:
compliance[-<kind>].json/.html and the single-file Allure report allure-report[-<kind>].html (with the kind's
history kept in the evidence root, so trends show across days), and the health dashboard (opsproof.dashboard).
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any

import pytest

from opsproof.evidence.findings import catalog_row, finding, finding_html, finding_text, record_line
from opsproof.recorder import CONTROL_KEY, RECORD_KEY

# Allure's severity scale has five steps; ours four, in the same order (today 22 of 35 results disagreed)
ALLURE_SEVERITY = {"critical": "blocker", "high": "critical", "medium": "normal", "low": "minor"}
SEVERITIES = ("critical", "high", "medium", "low")
VERDICTS = ("pass", "fail", "error", "waived", "skipped", "interrupted")
WORKER_ALLURE_DIR = "opsproof_allure_dir"  # xdist workerinput key: the controller's allure-results dir
RED_VERDICTS = ("fail", "error")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _control(report_or_item) -> dict | None:
    return next((v for k, v in getattr(report_or_item, "user_properties", ()) if k == CONTROL_KEY), None)


def _records(report_or_item) -> list[dict]:
    return [v for k, v in getattr(report_or_item, "user_properties", ()) if k == RECORD_KEY]


def _to_json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


class ReportsPlugin:
    """pytest-html header/columns/findings, Allure titles/labels/history ids, JUnit JSON properties."""

    def __init__(self, state):
        self.st = state
        self._junit_wrapped = False

    # -- small views of the state -----------------------------------------------------------------------------
    @property
    def config(self):
        return self.st.config

    def _window_text(self) -> str:
        st = self.st
        label = getattr(st, "window_label", None) or ""
        try:
            start = (st.started - st.window).strftime("%Y-%m-%d %H:%M")
            end = st.started.strftime("%Y-%m-%d %H:%M UTC")
            return f"{label} ({start} → {end})".strip()
        except Exception:
            return str(label)

    def _entry(self, nodeid: str) -> dict | None:
        return next((e for e in self.st.results if e.get("nodeid") == nodeid), None)

    def _entry_for_report(self, report) -> dict | None:
        """The run's entry for this report (controller), else one built from what the report carries."""
        e = self._entry(report.nodeid)
        if e is not None:
            return e
        ctl = _control(report)
        if ctl is None:
            return None
        return dict(ctl, records=_records(report), verdict="fail" if report.failed else "pass", message="")

    # -- xdist: workers write the Allure results into the controller's dir --------------------------------------
    def pytest_configure(self, config):
        """Runs as the plugin registers (inside the opsproof plugin's tryfirst pytest_configure), i.e. before
        allure-pytest's pytest_configure reads --alluredir: a worker gets the controller's staging dir."""
        if _is_worker(config):
            d = config.workerinput.get(WORKER_ALLURE_DIR)
            if d and hasattr(config.option, "allure_report_dir"):
                config.option.allure_report_dir = d
                config.option.clean_alluredir = False  # the controller cleaned it once; workers only add

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        d = getattr(self.config.option, "allure_report_dir", None)
        if d:
            node.workerinput[WORKER_ALLURE_DIR] = str(Path(d).resolve())

    # -- Allure: title, severity, behaviors; no <lambda> fixtures; stable history ids -------------------------
    def _allure_test(self):
        listener = self.config.pluginmanager.getplugin("allure_listener")
        if listener is None:
            return None
        try:
            return listener.allure_logger.get_test(None)
        except Exception:
            return None

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        yield  # allure-pytest names the test (function name) after setup: ours runs after it
        from opsproof.suite_state import control_of

        tr = self._allure_test()
        ctl = control_of(item)
        if tr is None or ctl is None:
            return
        from allure_commons.model2 import Label

        tr.name = f"{ctl['id']} {ctl['title']}"
        have = {lab.name for lab in tr.labels}
        labels = [("severity", ALLURE_SEVERITY.get(str(ctl.get("severity")), "normal")),
                  ("epic", ctl.get("area") or ctl.get("kind") or "opsproof"), ("feature", str(ctl["id"])),
                  ("story", str(ctl["title"]))]
        labels += [("tag", f"{fw}:{req}") for fw, reqs in (ctl.get("frameworks") or {}).items() for req in reqs]
        for name, value in labels:
            if name in ("severity", "epic", "feature", "story") and name in have:
                tr.labels = [lab for lab in tr.labels if lab.name != name]
            tr.labels.append(Label(name=name, value=value))
        row = catalog_row(self.st.catalog, ctl["id"])
        desc = getattr(row, "rationale", None) if row is not None else None
        if desc:
            tr.description = str(desc)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        yield
        # allure-pytest wraps every finalizer as "<fixture>::<finalizer name>": pytest's own post-finalizer
        # lambda shows as "<fixture>::<lambda>" on every fixture. Unwrap it; name the yield teardowns.
        try:
            from allure_commons._allure import fixture as allure_fixture
        except ImportError:
            return
        fins = getattr(fixturedef, "_finalizers", None)
        if not fins:
            return
        for i, fin in enumerate(fins):
            if not isinstance(fin, allure_fixture):
                continue
            inner = getattr(fin, "_fixture_function", None)
            if getattr(inner, "__name__", None) == "<lambda>":
                fins[i] = inner
            elif not hasattr(inner, "__name__"):
                fin._name = f"{fixturedef.argname} teardown"

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when != "call" or not report.failed:
            return
        ctl = _control(item) or _control(report)
        recs = _records(item)
        if ctl is None or not any(r.get("verdict") == "fail" for r in recs):
            return  # not a measured failure: the traceback is what helps
        f = finding(dict(ctl, records=recs, verdict="fail", message=""), catalog=self.st.catalog,
                    window=self._window_text())
        tr = self._allure_test()
        if tr is not None and tr.statusDetails is not None:
            text = finding_text(f)
            tr.statusDetails.message = text.splitlines()[0] + "\n" + "\n".join(
                ln for ln in text.splitlines()[2:] if ln.startswith("- "))
            tr.statusDetails.trace = text

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item):
        yield
        tr = self._allure_test()
        if tr is None or _control(item) is None:
            return
        # the recorder adds "<name> measured/threshold" parameters: show them rounded with units, and keep them
        # out of the history id (a measured value that changes daily would break the history and the trends)
        recs = {f"{r.get('name')} measured": r for r in _records(item)}
        recs.update({f"{r.get('name')} threshold": r for r in _records(item)})
        params = item.callspec.params if hasattr(item, "callspec") else {}
        changed = False
        for p in tr.parameters:
            if isinstance(params.get(p.name), str):
                p.value = params[p.name]  # the flag key, not its Python repr
            r = recs.get(p.name)
            if r is None:
                continue
            measured, required = record_line(r)
            p.value = measured if p.name.endswith(" measured") else required
            p.excluded = True
            changed = True
        if changed:
            from allure_pytest.utils import get_history_id

            tr.historyId = get_history_id(tr.fullName, tr.parameters, original_values=params)

    # -- JUnit: JSON properties, suite-level run facts; pytest-metadata ---------------------------------------
    def pytest_sessionstart(self, session):
        config = session.config
        if _is_worker(config):
            return
        st = self.st
        try:
            from _pytest.junitxml import xml_key
        except ImportError:  # pragma: no cover
            xml_key = None
        xml = config.stash.get(xml_key, None) if xml_key is not None else None
        if xml is not None:
            for name, value in (("opsproof_run_id", st.run_id), ("opsproof_suite", st.kind),
                                ("opsproof_target", st.settings.describe_line()),
                                ("opsproof_policy", str(st.policy.source)),
                                ("opsproof_policy_sha256", st.policy.sha256),
                                ("opsproof_window", self._window_text())):
                xml.add_global_property(name, value)
            self._wrap_junit(xml)
        try:
            from pytest_metadata.plugin import metadata_key

            md = config.stash[metadata_key]
            md["opsproof target"] = st.settings.describe_line()
            md["opsproof run id"] = st.run_id
            md["opsproof policy sha256"] = st.policy.sha256
        except (ImportError, KeyError):
            pass

    def _wrap_junit(self, xml) -> None:
        """junitxml writes `str(value)` of each user property (a Python repr for our dicts): hand it JSON text.
        Only junitxml's view changes; the report keeps the decoded values for everyone else."""
        orig = getattr(xml, "finalize", None)
        if orig is None or self._junit_wrapped:
            return

        def finalize(report):
            saved = report.user_properties
            report.user_properties = [(k, _to_json_text(v)) for k, v in saved]
            try:
                return orig(report)
            finally:
                report.user_properties = saved

        xml.finalize = finalize
        self._junit_wrapped = True

    # -- pytest-html ---------------------------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report):
        st = self.st
        report.title = f"opsproof {st.kind} evidence report — {st.day.isoformat()}"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells):
        for i, name in enumerate(("Control id", "Title", "Severity", "Frameworks", "Measured", "Required"), 1):
            cells.insert(i, f'<th class="opsproof-{name.lower().replace(" ", "-")}">{name}</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report, cells):
        e = self._entry_for_report(report) or {}
        recs = e.get("records") or []
        lines = [(r.get("name") or "", *record_line(r)) for r in recs]
        many = len(lines) > 1
        measured = "; ".join((f"{n}: {m}" if many else m) for n, m, _ in lines)
        required = "; ".join((f"{n}: {q}" if many else q) for n, _, q in lines)
        fw = "; ".join(f"{k} {', '.join(v)}" for k, v in (e.get("frameworks") or {}).items() if v)
        values = (e.get("id") or "", e.get("title") or "", e.get("severity") or "", fw, measured, required)
        for i, v in enumerate(values, 1):
            cells.insert(i, f"<td>{escape(str(v)[:400])}</td>")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_html(self, report, data):
        """A red control shows its FINDING, not a pytest traceback full of object reprs."""
        e = self._entry(report.nodeid)
        if e is None:
            return
        verdict = e.get("verdict")
        measured_fail = verdict == "fail" and any(r.get("verdict") == "fail" for r in e.get("records") or [])
        if measured_fail or verdict == "waived":
            f = finding(e, catalog=self.st.catalog, window=self._window_text())
            data[:] = [finding_html(f)]
        elif verdict == "error" or (verdict == "fail" and report.failed):
            # cannot measure, or the check itself broke: the one-line reason and where (the full traceback is in
            # junit.xml and the terminal; not here, where it would show object reprs to an auditor)
            crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
            where = f" ({crash.path}:{crash.lineno})" if crash is not None and not str(
                e.get("message", "")).startswith("CANNOT MEASURE") else ""
            data[:] = [f'<div class="opsproof-finding"><b>{escape(verdict.upper())} {escape(str(e.get("id")))}</b> '
                       f'{escape(str(e.get("title") or ""))}: {escape(str(e.get("message") or ""))}'
                       f'{escape(where)}</div>']

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix, summary, postfix, session):
        prefix.append(self.header_html())

    def preview(self) -> dict:
        """The run's verdict and counts as the pack will say (pytest-html renders at session end, before the
        pack is written); nothing in the state is changed."""
        from opsproof import journal

        st = self.st
        entries = [dict(e, verdict=("interrupted" if st.interrupted else "error") if e.get("verdict") == "pending"
                        else e.get("verdict")) for e in st.results]
        ran = {e.get("nodeid") for e in entries}
        not_run = [c for c in (getattr(st, "planned", None) or []) if c.get("nodeid") not in ran]
        not_run += [m for m in (getattr(st, "missing_from_run", None) or [])
                    if m.get("id") not in {e.get("id") for e in entries}]
        verdict, green = journal.run_verdict(entries, interrupted=bool(st.interrupted), not_run=not_run)
        counts = {s: {v: 0 for v in VERDICTS} for s in SEVERITIES}
        for e in entries:
            sev = e.get("severity") if e.get("severity") in counts else "medium"
            if e.get("verdict") in counts[sev]:
                counts[sev][e["verdict"]] += 1
        return {"verdict": verdict, "green": green, "counts": counts, "not_run": not_run,
                "summary": journal.summarize(entries)}

    def header_html(self) -> str:
        st = self.st
        p = self.preview()
        d = st.settings.describe()
        colour = {"GREEN": "#1a7f37", "RED": "#cf222e"}.get(p["verdict"], "#9a6700")
        verdict = p["verdict"] + (f" by {st.interrupted}" if st.interrupted else "")
        sources = ", ".join(f"{k} from {v}" for k, v in sorted((d.get("sources") or {}).items()))
        target = f"{d.get('kind')} {d.get('host')}:{d.get('port')}/{d.get('database')}"
        rows = [("Verdict", f'<b style="color:{colour}">{escape(verdict)}</b>'),
                ("Suite", escape(st.kind)), ("Run id", f"<code>{escape(st.run_id)}</code>"),
                ("Evidence date", escape(st.day.isoformat())),
                ("Target measured", escape(target) + (f" &mdash; settings: {escape(sources)}" if sources else "")),
                ("Window", escape(self._window_text())),
                ("Policy", f"{escape(str(st.policy.source))} &mdash; sha256 <code>{escape(st.policy.sha256)}</code>")]
        if p["not_run"]:
            rows.append(("Not run", escape(", ".join(sorted({str(c.get("id")) for c in p["not_run"]})))))
        facts = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>"
                        for k, v in rows)
        head = "".join(f"<th>{v}</th>" for v in VERDICTS)
        body = "".join(f"<tr><th style='text-align:left'>{s}</th>"
                       + "".join(f"<td style='text-align:right'>{p['counts'][s][v]}</td>" for v in VERDICTS)
                       + "</tr>" for s in SEVERITIES)
        totals = "".join(f"<td style='text-align:right'><b>{sum(p['counts'][s][v] for s in SEVERITIES)}</b></td>"
                         for v in VERDICTS)
        return (f'<div class="opsproof-header"><table class="opsproof-facts">{facts}</table>'
                f'<table class="opsproof-counts" style="margin-top:.5em"><tr><th>severity</th>{head}</tr>{body}'
                f"<tr><th style='text-align:left'>total</th>{totals}</tr></table></div>")

    # -- the paths printed are the final ones ---------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        """pytest-html and junitxml print the staging paths (the pack is committed after the terminal summary):
        print where the files will be once the pack is committed."""
        st = self.st
        if _is_worker(self.config) or st.pack is None:
            return
        staging = Path(st.pack.staging).resolve()
        final = Path(st.root) / st.day.isoformat()

        def moved(path) -> Path | None:
            try:
                rel = Path(path).resolve().relative_to(staging)
            except (ValueError, OSError, TypeError):
                return None
            return final / rel

        for plugin in self.config.pluginmanager.get_plugins():
            if type(plugin).__module__.startswith("pytest_html") and hasattr(plugin, "_report_path"):
                new = moved(plugin._report_path)
                if new is not None:
                    plugin._report_path = new
        try:
            from _pytest.junitxml import xml_key

            xml = self.config.stash.get(xml_key, None)
            if xml is not None:
                new = moved(xml.logfile)
                if new is not None:
                    xml.logfile = str(new)  # written at sessionfinish already; only the message reads it now
        except ImportError:  # pragma: no cover
            pass


# -- pack-write time -------------------------------------------------------------------------------------------------

def write_reports(state, staging: Path, results: dict) -> list[str]:
    """Write the compliance report and the single-file Allure report into the staging pack; the names written.
    Never raises for a missing tool (the Allure CLI): that report is left out, the rest is written."""
    from opsproof.evidence import compliance

    staging = Path(staging)
    written: list[str] = []
    doc = compliance.compliance_report(results, state.catalog)
    for name, text in ((state.name("compliance", "json"), json.dumps(doc, indent=2, sort_keys=False) + "\n"),
                       (state.name("compliance", "html"), compliance.render_html(doc))):
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(name)
    allure_results = staging / state.name("allure-results")
    if (os.environ.get("OPSPROOF_NO_ALLURE_HTML") != "1" and allure_results.is_dir()
            and any(allure_results.glob("*-result.json"))):
        from opsproof.evidence import allure as allure_mod

        name = state.name("allure-report", "html")
        history = None
        if state.kind != "adhoc":
            history = Path(state.root) / ("allure-history.jsonl" if state.kind == "daily"
                                          else f"allure-history-{state.kind}.jsonl")
        res = allure_mod.single_file(allure_results, staging / name, history=history,
                                     title=f"opsproof {state.kind} {state.day.isoformat()}")
        if res:
            written.append(name)
        else:
            print(f"\nopsproof: allure report not generated: {res.reason}")
    try:  # the health dashboard (opsproof.dashboard): dashboard[-<kind>].html, and the evidence tree's index.html
        from opsproof.dashboard import write_dashboard

        written += write_dashboard(state, staging, results)
    except Exception as exc:  # a view of the pack: failing to draw it never loses the pack itself
        print(f"\nopsproof: dashboard not written: {type(exc).__name__}: {str(exc)[:200]}")
    return written

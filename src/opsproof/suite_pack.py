"""A suite run's part of the day's evidence pack: the results journal, the artifacts, the reports.

The pack itself is written by evidence/ (one writer); this module only assembles what the run proved."""

from __future__ import annotations

import socket
from pathlib import Path

from opsproof import __version__, clock, journal
from opsproof.errors import OpsproofError
from opsproof.suite_state import SuiteState


def open_pack(st: SuiteState) -> None:
    """This run's part of today's pack (evidence/daypack.py: the one writer; nothing of the pack is touched until
    commit). pytest-html, junitxml and allure write straight into its staging dir."""
    from opsproof.evidence.daypack import open_day

    st.pack = open_day(st.root, st.day, st.kind, st.run_id)
    opt = st.config.option
    # reports the user asked for go where they asked; the pack gets a copy at commit
    for attr, name in (("htmlpath", st.name("report", "html")), ("xmlpath", st.name("junit", "xml"))):
        if getattr(opt, attr, None):
            st.user_reports[name] = Path(getattr(opt, attr))
        else:
            setattr(opt, attr, str(st.pack.path(name)))
    opt.self_contained_html = True
    if hasattr(opt, "allure_report_dir"):
        if opt.allure_report_dir:
            st.user_reports[st.name("allure-results")] = Path(opt.allure_report_dir)
        else:
            opt.allure_report_dir = str(st.pack.staging / st.name("allure-results"))
            opt.clean_alluredir = True


def results_document(st: SuiteState) -> dict:
    """The run's journal (journal.RunJournal): every entry, what never ran, the verdict."""
    interrupted = st.interrupted
    for r in st.results:  # started but never finished: proved nothing
        if r["verdict"] == "pending":
            r["verdict"] = "interrupted" if interrupted else "error"
            r["message"] = (f"run interrupted ({interrupted}) before this control finished" if interrupted
                            else "CANNOT MEASURE: the control never finished")
    ran = {r["nodeid"] for r in st.results}
    not_run = [{"id": c["id"], "nodeid": c["nodeid"], "reason": "collected, never ran"}
               for c in st.planned if c["nodeid"] not in ran]
    not_run += [m for m in st.missing_from_run if m["id"] not in {r.get("id") for r in st.results}]
    verdict, green = journal.run_verdict(st.results, interrupted=bool(interrupted), not_run=not_run)
    expired = []
    if st.waivers is not None:
        expired = [{"control": w.control, "parameter": getattr(w, "parameter", None), "expires": str(w.expires),
                    "approver": w.approver} for w in st.waivers.expired(st.day)]
    doc = {
        "suite": st.kind, "run_id": st.run_id, "date": st.day.isoformat(), "verdict": verdict, "green": green,
        "window": {"label": st.window_label, "length_s": st.window.total_seconds(), "to": st.started.isoformat(),
                   "from": (st.started - st.window).isoformat()},
        "interrupted": bool(interrupted), "interrupted_by": interrupted, "not_run": not_run,
        "summary": journal.summarize(st.results),
        "controls": sorted(st.results, key=lambda r: (r.get("id") or "", r["nodeid"])),
        "waivers_expired": expired,
        "target": st.settings.describe(),  # what was measured (host, database, where each setting came from)
        "policy": {"source": str(st.policy.source), "sha256": st.policy.sha256},
    }
    if interrupted:
        doc["summary"]["interrupted"] = sum(1 for r in st.results if r["verdict"] == "interrupted")
    doc["health"] = _health(st, not_run)
    return journal.validate(doc)


def _health(st: SuiteState, not_run: list[dict]) -> dict:
    """The health score of this run (opsproof.health): its entries, what never ran (unmeasured), the open incidents
    (None when they cannot be read: capped, never credited)."""
    from opsproof import health
    from opsproof.measure import incident as measure_incident

    entries = list(st.results)
    if st.catalog is not None:
        for m in not_run:
            row = st.catalog.controls.get(m.get("id"))
            if row is not None:
                entries.append({"id": row.id, "area": row.area, "severity": row.severity, "verdict": "not_run"})
    try:
        open_incidents = measure_incident.open_incidents(st.target).result if st.target is not None else None
    except Exception:  # noqa: BLE001 - unknown is not zero
        open_incidents = None
    return health.score(entries, st.policy, open_incidents=open_incidents)


def write(st: SuiteState) -> None:
    from opsproof.evidence.retention import prune

    pack = st.pack
    staging = Path(pack.staging)
    for name, content in sorted((st.artifact_name(n), c) for n, c in st.artifacts.items()):
        if isinstance(content, (dict, list)):
            pack.add_json(name, content)
        else:
            pack.add_text(name, str(content))
    results = results_document(st)
    pack.add_json(st.name("results", "json"), results)
    if st.options.waivers is not None and st.options.waivers.is_file():  # the exceptions in force: signed too
        pack.add_file(st.name("waivers", "toml"), st.options.waivers)
    for name, src in st.user_reports.items():
        if src.exists():
            pack.add_file(name, src)
    try:
        from opsproof.evidence import reports as reports_mod

        reports_mod.write_reports(st, staging, results)
    except ImportError:
        pass
    metadata = {"target": st.settings.target, "target_name": st.settings.name, "host": st.settings.host(), "target_detail": st.settings.describe(),
                "opsproof_version": __version__,
                "policy": st.policy.source, "policy_sha256": st.policy.sha256, "run_id": st.run_id,
                "suite": st.kind, "runner_host": socket.gethostname(), "started": st.started.isoformat(),
                "finished": clock.now().isoformat(), "green": results["green"], "verdict": results["verdict"],
                "interrupted": results["interrupted"]}
    from opsproof.evidence.signing import signer_for  # OPSPROOF_SIGNING_KEY, or the stack home's key

    try:  # commit takes the evidence root's lock and merges into the pack as it is now
        path = pack.commit(metadata, secrets=st.settings.secret_values(), signer=signer_for(st.settings))
    except OpsproofError as exc:
        print(f"\nopsproof: evidence pack NOT written: {exc}")
        return
    st.pack_path = Path(path)
    prune(st.root, st.day, keep_days=st.policy.evidence.retention_days,
          compress_after_days=st.policy.evidence.compress_after_days)
    summary = results["summary"]
    verdict = (f"INTERRUPTED by {st.interrupted}, {len(results['not_run'])} control(s) never ran" if st.interrupted
               else results["verdict"] + (f" ({summary['waived']} waived)" if summary.get("waived") else "")
               + (f", {len(results['not_run'])} catalog control(s) not run" if results["not_run"] else ""))
    label = "" if st.kind == "daily" else f" [{st.kind}]"
    verdict += f", health {results['health']['score']}/100"
    print(f"\nopsproof: evidence pack {path}{label} ({verdict}: {summary})")
    report = Path(path) / st.name("report", "html")
    if report.exists():
        print(f"opsproof: report {report}")
    if not results["green"]:
        from opsproof.alerting import post_run_failure

        post_run_failure(st.settings, results, report)

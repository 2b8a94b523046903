"""A suite run's part of the day's evidence pack: the results journal, the artifacts, the reports.

The pack itself is written by evidence/ (one writer); this module only assembles what the run proved."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from opsproof import __version__, clock, journal
from opsproof.errors import OpsproofError
from opsproof.suite_state import SuiteState


def open_pack(st: SuiteState) -> None:
    from opsproof.evidence.pack import PackWriter

    st.pack = PackWriter(st.root, st.day)
    staging = Path(st.pack.staging)
    _carry_over(st, staging)
    opt = st.config.option
    # reports the user asked for go where they asked; the pack gets a copy at commit
    for attr, name in (("htmlpath", st.name("report", "html")), ("xmlpath", st.name("junit", "xml"))):
        if getattr(opt, attr, None):
            st.user_reports[name] = Path(getattr(opt, attr))
        else:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            setattr(opt, attr, str(staging / name))
    opt.self_contained_html = True
    if hasattr(opt, "allure_report_dir"):
        if opt.allure_report_dir:
            st.user_reports[st.name("allure-results")] = Path(opt.allure_report_dir)
        else:
            opt.allure_report_dir = str(staging / st.name("allure-results"))
            opt.clean_alluredir = True


DAILY_OWNS = ("flags.json", "slo_snapshot.json", "outbox_lag.json", "alerts.sql.out", "trace-sample.txt",
              "audit_digest.json", "audit_anchor.json", "advisors.json")


def _carry_over(st: SuiteState, staging: Path) -> None:
    """Keep what other run kinds wrote into today's pack (drills/, acceptance.json, the daily results...)."""
    import shutil

    current = st.root / st.day.isoformat()
    if not current.is_dir():
        return
    mine = {st.name("results", "json"), st.name("report", "html"), st.name("junit", "xml"), "manifest.json"}
    mine_dirs = {st.name("allure-results"), st.name("allure-report"),
                 f"adhoc/{st.run_id}" if st.kind == "adhoc" else st.kind}
    if st.kind == "daily":
        mine |= set(DAILY_OWNS)
    for src in current.rglob("*"):
        rel = src.relative_to(current)
        if src.is_dir() or str(rel) in mine or any(str(rel).startswith(d + "/") for d in mine_dirs):
            continue
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


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
    return journal.validate(doc)


def write(st: SuiteState) -> None:
    from opsproof.evidence import allure as allure_mod
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
    for name, src in st.user_reports.items():
        if src.exists():
            pack.add_file(name, src)
    try:
        from opsproof.evidence import reports as reports_mod

        reports_mod.write_reports(st, staging, results)
    except ImportError:
        pass
    allure_dir = staging / st.name("allure-results")
    if allure_dir.is_dir() and any(allure_dir.iterdir()) and os.environ.get("OPSPROOF_NO_ALLURE_HTML") != "1":
        allure_mod.generate(allure_dir, staging / st.name("allure-report"))
    metadata = {"target": st.settings.target, "host": st.settings.host(), "target_detail": st.settings.describe(),
                "opsproof_version": __version__,
                "policy": st.policy.source, "policy_sha256": st.policy.sha256, "run_id": st.run_id,
                "suite": st.kind, "runner_host": socket.gethostname(), "started": st.started.isoformat(),
                "finished": clock.now().isoformat(), "green": results["green"], "verdict": results["verdict"],
                "interrupted": results["interrupted"]}
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
    summary = results["summary"]
    verdict = (f"INTERRUPTED by {st.interrupted}, {len(results['not_run'])} control(s) never ran" if st.interrupted
               else results["verdict"] + (f" ({summary['waived']} waived)" if summary.get("waived") else "")
               + (f", {len(results['not_run'])} catalog control(s) not run" if results["not_run"] else ""))
    label = "" if st.kind == "daily" else f" [{st.kind}]"
    print(f"\nopsproof: evidence pack {path}{label} ({verdict}: {summary})")
    report = Path(path) / st.name("report", "html")
    if report.exists():
        print(f"opsproof: report {report}")
    if not results["green"]:
        from opsproof.alerting import post_run_failure

        post_run_failure(st.settings, results, report)

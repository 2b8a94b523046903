"""The pack's per-framework compliance report: framework -> requirement -> controls -> status.

    doc = compliance_report(results, catalog)    # results: a run's results document (journal.RunJournal)
    render_html(doc) / render_markdown(doc)

A control's status is its verdict in the run (pass, fail, error, waived, skipped, interrupted), or "not run" for
a control of this suite that the catalog maps to the requirement but the run never finished. A requirement is
as bad as its worst control; a waived control keeps its waiver (justification, approver, expiry) next to it and
never counts as a pass.
"""

from __future__ import annotations

from html import escape
from typing import Any

# worst first: a requirement takes the first of these any of its controls has
ORDER = ("fail", "error", "interrupted", "not run", "skipped", "waived", "pass")
RED = frozenset({"fail", "error", "interrupted", "not run", "skipped"})
COLOUR = {"pass": "#1a7f37", "waived": "#9a6700", "fail": "#cf222e", "error": "#cf222e",
          "interrupted": "#9a6700", "not run": "#6e7781", "skipped": "#6e7781"}


def _frameworks(fw: Any) -> dict[str, list[str]]:
    if fw is None:
        return {}
    if hasattr(fw, "model_dump"):
        fw = fw.model_dump()
    return {str(k): [str(x) for x in v] for k, v in dict(fw).items() if v}


def _worst(statuses) -> str:
    statuses = list(statuses)
    return next((s for s in ORDER if s in statuses), "not run")


def _catalog_controls(catalog: Any, suite: str) -> dict[str, dict]:
    """id -> {title, severity, frameworks} of the catalog's controls of this suite (none without a catalog)."""
    if catalog is None:
        return {}
    try:
        ids = catalog.select(suites=[suite]) if suite and suite != "adhoc" else []
    except Exception:
        return {}
    out = {}
    for cid in ids:
        row = catalog.get(cid)
        if row is None:
            continue
        out[cid] = {"title": getattr(row, "title", "") or "", "severity": getattr(row, "severity", "") or "",
                    "frameworks": _frameworks(getattr(row, "frameworks", None))}
    return out


def compliance_report(results: dict, catalog: Any = None) -> dict:
    """framework -> requirement -> controls (with status and waiver) -> the requirement's status."""
    by_id: dict[str, dict] = {}
    for e in results.get("controls") or []:
        cid = e.get("id")
        if not cid:
            continue
        c = by_id.setdefault(cid, {"id": cid, "title": e.get("title") or "", "severity": e.get("severity") or "",
                                   "frameworks": _frameworks(e.get("frameworks")), "verdicts": [],
                                   "messages": [], "waivers": []})
        c["verdicts"].append(e.get("verdict") or "error")
        if e.get("verdict") in RED | {"waived"} and e.get("message"):
            c["messages"].append(str(e["message"])[:300])
        if e.get("waiver"):
            c["waivers"].append({k: e["waiver"].get(k) for k in ("justification", "approver", "expires",
                                                                  "parameter")})
    for cid, row in _catalog_controls(catalog, results.get("suite") or "").items():
        by_id.setdefault(cid, {"id": cid, "title": row["title"], "severity": row["severity"],
                               "frameworks": row["frameworks"], "verdicts": [], "messages": [], "waivers": []})
    for nr in results.get("not_run") or []:
        c = by_id.get(nr.get("id") or "")
        if c is not None:
            c["verdicts"].append("not run")
    frameworks: dict[str, dict[str, dict]] = {}
    for cid in sorted(by_id):
        c = by_id[cid]
        v = c["verdicts"]
        status = "waived" if v and set(v) <= {"pass", "waived"} and "waived" in v else _worst(v) if v else "not run"
        control = {"id": cid, "title": c["title"], "severity": c["severity"], "status": status,
                   "message": c["messages"][0] if c["messages"] else "", "waivers": c["waivers"]}
        for fw, reqs in c["frameworks"].items():
            for req in reqs:
                frameworks.setdefault(fw, {}).setdefault(req, {"requirement": req, "controls": []})[
                    "controls"].append(control)
    out_fw = []
    for fw in sorted(frameworks):
        reqs = []
        for req in sorted(frameworks[fw]):
            r = frameworks[fw][req]
            r["status"] = _worst(c["status"] for c in r["controls"])
            reqs.append(r)
        counts = {s: sum(1 for r in reqs if r["status"] == s) for s in ORDER}
        out_fw.append({"framework": fw, "status": _worst(r["status"] for r in reqs),
                       "counts": {k: v for k, v in counts.items() if v}, "requirements": reqs})
    return {"suite": results.get("suite"), "run_id": results.get("run_id"), "date": results.get("date"),
            "verdict": results.get("verdict"), "window": (results.get("window") or {}).get("label"),
            "policy_sha256": (results.get("policy") or {}).get("sha256"), "frameworks": out_fw}


def _badge(status: str) -> str:
    return (f'<span class="st" style="background:{COLOUR.get(status, "#6e7781")}">'
            f"{escape(status.upper())}</span>")


def render_html(doc: dict) -> str:
    e = escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>opsproof compliance — "
             f"{e(str(doc.get('suite')))} {e(str(doc.get('date')))}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}table{border-collapse:collapse;"
             "width:100%;margin-bottom:1.5em}td,th{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;"
             "text-align:left}.st{color:#fff;border-radius:4px;padding:1px 6px;font-size:.85em;font-weight:600}"
             ".waiver{font-size:.9em;color:#57606a}</style></head><body>",
             f"<h1>Compliance by framework</h1><p>Suite <b>{e(str(doc.get('suite')))}</b>, run "
             f"<code>{e(str(doc.get('run_id')))}</code>, {e(str(doc.get('date')))}, window "
             f"{e(str(doc.get('window')))}, run verdict <b>{e(str(doc.get('verdict')))}</b>, policy sha256 "
             f"<code>{e(str(doc.get('policy_sha256')))}</code></p>"]
    if not doc["frameworks"]:
        parts.append("<p>No control of this run maps to a framework requirement.</p>")
    for fw in doc["frameworks"]:
        counts = ", ".join(f"{n} {s}" for s, n in fw["counts"].items())
        parts.append(f"<h2>{e(fw['framework'])} {_badge(fw['status'])}</h2><p>Requirements: {e(counts)}</p>"
                     "<table><tr><th>Requirement</th><th>Status</th><th>Controls</th></tr>")
        for r in fw["requirements"]:
            ctls = []
            for c in r["controls"]:
                line = (f"{_badge(c['status'])} <b>{e(c['id'])}</b> {e(c['title'])} "
                        f"<small>({e(str(c['severity']))})</small>")
                if c["message"] and c["status"] != "pass":
                    line += f"<div class='waiver'>{e(c['message'])}</div>"
                for w in c["waivers"]:
                    line += (f"<div class='waiver'>Waiver: {e(str(w.get('justification')))} — approved by "
                             f"{e(str(w.get('approver')))}, expires {e(str(w.get('expires')))}</div>")
                ctls.append(f"<div>{line}</div>")
            parts.append(f"<tr><td>{e(r['requirement'])}</td><td>{_badge(r['status'])}</td>"
                         f"<td>{''.join(ctls)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(doc: dict) -> str:
    lines = [f"# Compliance by framework — {doc.get('suite')} {doc.get('date')} ({doc.get('verdict')})", ""]
    for fw in doc["frameworks"]:
        lines += [f"## {fw['framework']}: {fw['status'].upper()}", "", "| Requirement | Status | Controls |",
                  "|---|---|---|"]
        for r in fw["requirements"]:
            ctls = "<br>".join(
                f"{c['id']} {c['title']}: {c['status']}"
                + "".join(f" (waived: {w.get('justification')}; {w.get('approver')}; expires {w.get('expires')})"
                          for w in c["waivers"])
                for c in r["controls"])
            lines.append(f"| {r['requirement']} | {r['status']} | {ctls.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)

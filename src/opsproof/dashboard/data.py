"""What the dashboard shows, gathered into one JSON-able document (the page builder gets data; it never queries).

    live = collect_live(target, settings, policy)          # incidents, agents, resources, traces (measure/ only)
    model = build_model(root, live=live, current=results)  # + packs (results*.json, compliance, resources) + samples
    html = render.render_html(model)

Sources, and what is shown when one is missing (never a made-up number):
- the packs `<root>/YYYY-MM-DD[.tar.gz]` of the retained days: results.json (its `health` key: the score; the
  verdict, the failing controls and their findings), compliance.json, resources.json, trace-sample.txt;
  results-drill.json / results-acceptance.json of the last 7 packs. A pack without `health` has "no score
  recorded"; a day without a daily run has no point in the trend.
- the watch samples `<root>/watch/YYYY-MM-DD.jsonl` (one JSON object a line: at, target, score, components,
  controls [{id, verdict, measured, required}], alerts, actions). An unreadable line is counted, not guessed.
- live (optional): measure.incident.recent_incidents, measure.ops.agent_health, measure.agent_latency,
  measure.resources, measure.ops.active_alerts / measure.incident.recent_failed_traces. A part that cannot be
  measured carries its reason ("not measured: ...").
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from opsproof import clock

TREND_DAYS = 35
WEEK_DAYS = 7
SAMPLES_MAX = 2000  # points of the watch series kept in the page (newest); the count shown is the real one
RED = ("fail", "error", "interrupted", "skipped")
READ_NAMES = ("results.json", "compliance.json", "resources.json", "trace-sample.txt", "results-drill.json",
              "results-acceptance.json")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        return float(value)  # Decimal
    except (TypeError, ValueError):
        return str(value)


# -- the packs ---------------------------------------------------------------------------------------------------

def read_pack(path: Path, names: tuple[str, ...] = READ_NAMES) -> dict[str, Any]:
    """{name: parsed JSON (or text for .txt)} of the files present in one pack (a dir or a tarball; never
    extracted). A file that does not parse is left out and named under "_unreadable"."""
    from opsproof.evidence.common import is_tar_pack, open_tar, tar_member_name

    raw: dict[str, bytes] = {}
    path = Path(path)
    try:
        if is_tar_pack(path):
            prefix = path.name.split(".", 1)[0]
            with open_tar(path) as tar:
                for member in tar:
                    rel = tar_member_name(prefix, member.name)
                    if rel in names and member.isfile():
                        fh = tar.extractfile(member)
                        if fh is not None:
                            raw[rel] = fh.read()
        else:
            for name in names:
                p = path / name
                if p.is_file():
                    raw[name] = p.read_bytes()
    except (OSError, Exception) as exc:  # a damaged tarball: the pack is shown as unreadable
        return {"_unreadable": [f"{path.name}: {type(exc).__name__}"]}
    out: dict[str, Any] = {}
    for name, data in raw.items():
        try:
            out[name] = data.decode("utf-8") if name.endswith(".txt") else json.loads(data)
        except (UnicodeDecodeError, ValueError):
            out.setdefault("_unreadable", []).append(name)
    return out


def list_packs(root: Path, *, days: int, today: date) -> dict[date, Path]:
    from opsproof.evidence.common import list_packs as _list

    first = today - timedelta(days=days - 1)
    return {d: p for d, p in _list(root).items() if first <= d <= today}


# -- the watch samples -------------------------------------------------------------------------------------------

def read_samples(root: Path, *, days: int, today: date) -> dict[str, Any]:
    """{"points": [...], "count", "unreadable", "last"}: the watch's posture samples of the retained days."""
    folder = Path(root) / "watch"
    points: list[dict] = []
    unreadable = 0
    first = today - timedelta(days=days - 1)
    if folder.is_dir():
        for f in sorted(folder.glob("*.jsonl")):
            try:
                day = date.fromisoformat(f.stem)
            except ValueError:
                continue
            if not first <= day <= today:
                continue
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    at = _parse_time(doc["at"])
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
                    continue
                points.append(dict(doc, _t=at.timestamp()))
    points.sort(key=lambda p: p["_t"])
    return {"points": points, "count": len(points), "unreadable": unreadable, "last": points[-1] if points else None}


def _parse_time(text: Any) -> datetime:
    t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _health_of(results: dict | None) -> dict | None:
    h = (results or {}).get("health")
    return h if isinstance(h, dict) and _score(h.get("score")) is not None else None


def _run_time(results: dict, day: date) -> float:
    to = (results.get("window") or {}).get("to")
    try:
        return _parse_time(to).timestamp()
    except (ValueError, TypeError):
        return datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()


# -- live: measure/ only -------------------------------------------------------------------------------------------

def _part(fn: Callable[[], dict]) -> dict:
    try:
        out = fn()
        return dict(out, measured=True)
    except Exception as exc:  # a part that cannot be measured says why; nothing is assumed
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return {"measured": False, "error": text}


def collect_live(target, settings=None, policy=None, *, window_s: float = 86400.0) -> dict[str, Any]:
    """Incidents, agent performance, resources, alerts and failed-task traces, read now from the target."""
    from opsproof.measure import agent_latency, incident, ops, resources

    end = clock.now()
    start = end - timedelta(seconds=window_s)

    def incidents() -> dict:
        m = incident.recent_incidents(target, limit=20, days=7)
        rows = m.result
        return {"open": [r for r in rows if r.get("status") == "open"],
                "recent": [r for r in rows if r.get("status") != "open"], "query": m.query}

    def agents() -> dict:
        h = ops.agent_health(target, start, end)
        lat = agent_latency.task_latency(target, start, end)
        return {"window": {"from": start.isoformat(), "to": end.isoformat()},
                "health": h.result.model_dump(mode="json"), "latency": lat.result,
                "queries": [h.query, lat.query]}

    def res() -> dict:
        budget = getattr(getattr(policy, "resources", None), "disk_budget_bytes", None) or 8 * 1024 ** 3
        m = resources.measure(target, settings, budget) if settings is not None else \
            resources.from_postgres(target, budget)
        return {"doc": m.result, "query": m.query, "source": "live"}

    def traces() -> dict:
        alerts = ops.active_alerts(target)
        failed = incident.recent_failed_traces(target, limit=5)
        return {"alerts": alerts.result, "failed_task_traces": failed.result,
                "queries": [alerts.query, failed.query]}

    return _jsonable({"at": end.isoformat(), "incidents": _part(incidents), "agents": _part(agents),
                      "resources": _part(res), "traces": _part(traces)})


# -- the model ------------------------------------------------------------------------------------------------------

def _area_rows(results: dict) -> list[dict]:
    from opsproof.evidence.compliance import ORDER

    areas: dict[str, list[str]] = {}
    for e in results.get("controls") or []:
        areas.setdefault(str(e.get("area") or e.get("kind") or "other"), []).append(str(e.get("verdict")))
    for nr in results.get("not_run") or []:
        areas.setdefault("not run", []).append("not run")
    out = []
    for area, verdicts in sorted(areas.items()):
        counts = {v: verdicts.count(v) for v in ORDER if verdicts.count(v)}
        status = next((s for s in ORDER if s in verdicts), "not run")
        out.append({"area": area, "status": status, "counts": counts, "controls": len(verdicts)})
    return out


def _findings(results: dict, catalog: Any) -> list[dict]:
    from opsproof.evidence.findings import finding, finding_text

    out = []
    for e in results.get("controls") or []:
        if e.get("verdict") not in RED:
            continue
        f = finding(e, catalog=catalog, window=(results.get("window") or {}).get("label"))
        out.append(dict(f, text=finding_text(f)))
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    return sorted(out, key=lambda f: (order.get(str(f.get("severity")), 4), str(f.get("id"))))


def _run_summary(kind: str, day: date, doc: dict) -> dict:
    return {"day": day.isoformat(), "kind": kind, "verdict": doc.get("verdict"), "green": doc.get("green"),
            "summary": doc.get("summary") or {}, "run_id": doc.get("run_id"),
            "entries": [{"id": e.get("id"), "title": e.get("title"), "verdict": e.get("verdict"),
                         "message": (e.get("message") or "")[:300]} for e in doc.get("controls") or []]}


def _trace_lines(text: str, template: str | None) -> list[dict]:
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or len(parts[0]) < 8 or not all(c in "0123456789abcdefABCDEF-" for c in parts[0]):
            continue
        url = parts[1] if len(parts) > 1 and parts[1].startswith(("http://", "https://")) else None
        if url is None and template:
            url = template.format(trace_id=parts[0])
        out.append({"trace_id": parts[0], "url": url, "what": "sampled trace (daily pack)"})
    return out


def build_model(root: Path, *, current: dict[str, Any] | None = None, current_day: date | None = None,
                live: dict | None = None, catalog: Any = None,
                trace_link_template: str | None = None, mode: str = "file", refresh_s: int = 0,
                today: date | None = None, days: int = TREND_DAYS) -> dict[str, Any]:
    """The dashboard's document. `current` holds files of `current_day`'s pack not committed yet (the run being
    written: {"results.json": ..., "compliance.json": ...} or {"results-drill.json": ...}); they replace the
    committed ones."""
    root = Path(root)
    today = today or clock.today()
    if current_day is not None and current_day > today:
        today = current_day
    packs = list_packs(root, days=days, today=today)
    read: dict[date, dict] = {d: read_pack(p) for d, p in packs.items()}
    if current and current_day is not None:
        read[current_day] = dict(read.get(current_day, {}), **current)
    days_sorted = sorted(read)
    unreadable = [n for d in days_sorted for n in read[d].get("_unreadable", [])]

    # the trend: one point per daily pack with a recorded score; the watch samples as a second series
    pack_points, no_score_days = [], []
    for d in days_sorted:
        res = read[d].get("results.json")
        if not isinstance(res, dict):
            continue
        h = _health_of(res)
        if h is None:
            no_score_days.append(d.isoformat())
            continue
        pack_points.append({"day": d.isoformat(), "t": _run_time(res, d), "score": _score(h["score"]),
                            "verdict": res.get("verdict")})
    samples = read_samples(root, days=days, today=today)
    sample_points = [{"t": p["_t"], "score": _score(p.get("score")), "at": p.get("at")}
                     for p in samples["points"]]
    scored_samples = [p for p in sample_points if p["score"] is not None]

    # the latest daily run
    latest_day = next((d for d in reversed(days_sorted) if isinstance(read[d].get("results.json"), dict)), None)
    latest = read[latest_day]["results.json"] if latest_day else None
    latest_health = _health_of(latest)

    # the score now: the newest of the last scored watch sample and the latest daily's score
    now: dict[str, Any] = {"score": None, "source": None, "at": None, "components": None, "caps": None,
                           "formula": None}
    last_sample = samples["last"]
    cand = []
    if latest_health is not None and latest_day is not None:
        cand.append((_run_time(latest, latest_day), {"score": _score(latest_health["score"]),
                                                     "source": f"daily pack {latest_day.isoformat()}",
                                                     "at": (latest.get("window") or {}).get("to"),
                                                     "components": latest_health.get("components"),
                                                     "caps": latest_health.get("caps"),
                                                     "formula": latest_health.get("formula")}))
    if scored_samples:
        s = next(p for p in reversed(samples["points"]) if _score(p.get("score")) is not None)
        cand.append((s["_t"], {"score": _score(s["score"]), "source": "watch sample", "at": s.get("at"),
                               "components": s.get("components"), "caps": s.get("caps"),
                               "formula": s.get("formula") or (latest_health or {}).get("formula")}))
    if cand:
        now.update(max(cand, key=lambda c: c[0])[1])

    # compliance: by area from the latest daily's controls; by framework from its compliance report
    compliance = {"day": latest_day.isoformat() if latest_day else None, "areas": [], "frameworks": []}
    if latest is not None:
        compliance["areas"] = _area_rows(latest)
        doc = read[latest_day].get("compliance.json")
        if not isinstance(doc, dict):
            from opsproof.evidence.compliance import compliance_report

            doc = compliance_report(latest, catalog)
        compliance["frameworks"] = [{"framework": fw.get("framework"), "status": fw.get("status"),
                                     "counts": fw.get("counts") or {},
                                     "requirements": len(fw.get("requirements") or [])}
                                    for fw in doc.get("frameworks") or []]

    # the week's drills and acceptance
    week = []
    for d in days_sorted:
        if d <= today - timedelta(days=WEEK_DAYS):
            continue
        for kind in ("drill", "acceptance"):
            doc = read[d].get(f"results-{kind}.json")
            if isinstance(doc, dict):
                week.append(_run_summary(kind, d, doc))

    # resources: live when measured, else the latest pack's resources.json
    live = live or {}
    resources = live.get("resources")
    if not (resources or {}).get("measured"):
        for d in reversed(days_sorted):
            doc = read[d].get("resources.json")
            if isinstance(doc, dict):
                resources = {"measured": True, "doc": doc, "query": doc.get("query"),
                             "source": f"daily pack {d.isoformat()}",
                             "live_error": (live.get("resources") or {}).get("error")}
                break
    traces = []
    tr_live = live.get("traces") or {}
    if tr_live.get("measured"):
        for a in tr_live.get("alerts") or []:
            if a.get("trace_id"):
                traces.append({"trace_id": a["trace_id"], "what": f"open alert: {a.get('title')}",
                               "url": trace_link_template.format(trace_id=a["trace_id"])
                               if trace_link_template else None})
        for t in tr_live.get("failed_task_traces") or []:
            traces.append({"trace_id": t, "what": "failed/quarantined agent task (last day)",
                           "url": trace_link_template.format(trace_id=t) if trace_link_template else None})
    if latest_day is not None:
        traces += _trace_lines(read[latest_day].get("trace-sample.txt") or "", trace_link_template)

    watch = None
    if last_sample is not None:
        watch = {k: last_sample.get(k) for k in ("at", "target", "score", "controls", "alerts", "actions")}

    model = {
        "generated_at": clock.now().isoformat(timespec="seconds"),
        "mode": mode, "refresh_s": refresh_s,
        "root": str(root),
        "target": (latest or {}).get("target") and {k: (latest or {})["target"].get(k)
                                                     for k in ("name", "kind", "host", "port", "database")},
        "latest": None if latest is None else {
            "day": latest_day.isoformat(), "verdict": latest.get("verdict"), "green": latest.get("green"),
            "summary": latest.get("summary") or {}, "run_id": latest.get("run_id"),
            "window": (latest.get("window") or {}).get("label"), "not_run": len(latest.get("not_run") or []),
            "health_recorded": latest_health is not None},
        "now": now,
        "trend": {"packs": pack_points, "samples": scored_samples[-SAMPLES_MAX:],
                  "samples_count": len(scored_samples), "samples_unscored": len(sample_points) - len(scored_samples),
                  "samples_unreadable": samples["unreadable"], "days_without_score": no_score_days,
                  "days": days, "packs_read": len(days_sorted)},
        "incidents": live.get("incidents") or {"measured": False, "error": "no live target (built from the packs)"},
        "agents": live.get("agents") or {"measured": False, "error": "no live target (built from the packs)"},
        "resources": resources or {"measured": False, "error": "no live target and no resources.json in a pack"},
        "compliance": compliance,
        "failing": _findings(latest, catalog) if latest is not None else [],
        "week": week,
        "traces": traces[:25],
        "trace_link_template": trace_link_template,
        "watch": watch,
        "unreadable": unreadable,
        "live_at": live.get("at"),
    }
    return _jsonable(model)

"""The dashboard as ONE self-contained HTML file: the model inlined as JSON, uPlot (npm, pinned in package.json)
inlined from node_modules, no network, no CDN -- it opens from file:// as well as from `opsproof dashboard serve`.

Everything a person reads (the score, counts, incidents, findings) is rendered here, server-side, as HTML; the
script only draws the trend chart from the same numbers (without the chart library the trend table remains).
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from opsproof.evidence.findings import fmt_value

UPLOT_JS = Path("node_modules") / "uplot" / "dist" / "uPlot.iife.min.js"
UPLOT_CSS = Path("node_modules") / "uplot" / "dist" / "uPlot.min.css"
GREEN, AMBER, RED_C, GREY = "#1a7f37", "#9a6700", "#cf222e", "#6e7781"
STATUS_COLOUR = {"pass": GREEN, "waived": AMBER, "fail": RED_C, "error": RED_C, "interrupted": AMBER,
                 "not run": GREY, "skipped": GREY, "GREEN": GREEN, "RED": RED_C, "INTERRUPTED": AMBER}


def chart_library() -> tuple[str, str] | None:
    """(js, css) of uPlot from the project's node_modules (`npm ci`), or None when it is not installed."""
    from opsproof.paths import project_dir

    for base in (project_dir(), Path(__file__).resolve().parents[3]):
        js, css = base / UPLOT_JS, base / UPLOT_CSS
        if js.is_file() and css.is_file():
            return js.read_text(encoding="utf-8"), css.read_text(encoding="utf-8")
    return None


def fmt_score(score: Any) -> str:
    if score is None:
        return "no score recorded"
    s = float(score)
    return f"{s:.0f}" if s.is_integer() else f"{s:.1f}"


def score_colour(score: Any) -> str:
    if score is None:
        return GREY
    return GREEN if score >= 90 else AMBER if score >= 70 else RED_C


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _num(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None or isinstance(v, bool):
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not math.isfinite(f):
        return _e(v)
    text = f"{f:.0f}" if f.is_integer() else f"{f:.{digits}f}"
    return f"{text}{unit}"


def _badge(status: Any) -> str:
    s = str(status)
    return f'<span class="badge" style="background:{STATUS_COLOUR.get(s, GREY)}">{_e(s.upper())}</span>'


def _counts(counts: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in (counts or {}).items() if v) or "—"


def _not_measured(part: dict) -> str:
    return f'<p class="nm">not measured: {_e(part.get("error") or "unknown")}</p>'


def _mb(b: Any) -> str:
    try:
        return f"{float(b) / (1024 * 1024):,.0f} MB"
    except (TypeError, ValueError):
        return "—"


# -- sections ---------------------------------------------------------------------------------------------------

def _cap(c: Any) -> str:
    if not isinstance(c, dict):
        return _e(c)
    ctl = c.get("controls")
    return (f"at most <b>{_e(c.get('cap'))}</b>: {_e(c.get('why'))}"
            + (f" ({_e(', '.join(map(str, ctl)))})" if ctl else ""))


def _health(m: dict) -> str:
    now = m["now"]
    score = now.get("score")
    cls = "score" if score is not None else "score none"
    parts = [f'<div class="{cls}" id="score" style="color:{score_colour(score)}">{_e(fmt_score(score))}'
             + ('<span class="of"> / 100</span>' if score is not None else "") + "</div>"]
    if score is not None:
        parts.append(f'<p class="muted" id="score-source">from the {_e(now.get("source"))} at {_e(now.get("at"))}</p>')
    else:
        parts.append('<p class="muted" id="score-source">No pack or watch sample of the retained days carries a '
                     'health score.</p>')
    comps = now.get("components")
    if isinstance(comps, dict) and comps:
        rows = []
        for name, c in comps.items():
            if isinstance(c, dict):
                val = c.get("score", c.get("value", c.get("points")))
                extra = ", ".join(f"{k}: {_e(v)}" for k, v in c.items() if k not in ("score", "value", "points")
                                  and not isinstance(v, (dict, list)))
            else:
                val, extra = c, ""
            rows.append(f"<tr><td>{_e(name)}</td><td class='r'>{_num(val)}</td><td class='muted'>{extra}</td></tr>")
        parts.append("<table class='t' id='components'><tr><th>component</th><th>score</th><th></th></tr>"
                     + "".join(rows) + "</table>")
    caps = now.get("caps")
    if caps:
        items = caps if isinstance(caps, list) else [f"{k}: {v}" for k, v in caps.items()] \
            if isinstance(caps, dict) else [caps]
        parts.append("<p><b>Caps applied:</b></p><ul id='caps'>" + "".join(f"<li>{_cap(c)}</li>" for c in items)
                     + "</ul>")
    lt = m.get("latest")
    if lt:
        parts.append(f"<p>Latest daily run {_e(lt['day'])}: {_badge(lt['verdict'])} "
                     f"<span class='muted'>{_e(_counts(lt['summary']))}"
                     + (f", {lt['not_run']} not run" if lt.get("not_run") else "") + "</span></p>")
    else:
        parts.append("<p class='nm'>No daily pack in the retained days.</p>")
    return "".join(parts)


def _trend(m: dict) -> str:
    t = m["trend"]
    n_p, n_s = len(t["packs"]), t["samples_count"]
    caption = (f'<p id="trend-points"><b>{n_p}</b> daily score{"s" if n_p != 1 else ""} · <b>{n_s}</b> watch '
               f'sample{"s" if n_s != 1 else ""} <span class="muted">(last {t["days"]} days; '
               f'{t["packs_read"]} pack(s) read')
    if t["days_without_score"]:
        caption += f'; no score recorded on {len(t["days_without_score"])} day(s)'
    if t["samples_unreadable"]:
        caption += f'; {t["samples_unreadable"]} unreadable sample line(s)'
    caption += ")</span></p>"
    rows = "".join(f"<tr><td>{_e(p['day'])}</td><td class='r'>{_e(fmt_score(p['score']))}</td>"
                   f"<td>{_badge(p['verdict'])}</td></tr>" for p in t["packs"])
    table = ("<details><summary>daily scores</summary><table class='t' id='trend-table'><tr><th>day</th><th>score"
             f"</th><th>verdict</th></tr>{rows}</table></details>") if rows else ""
    empty = "" if (n_p or n_s) else "<p class='nm'>no score recorded in the retained days</p>"
    return caption + '<div id="trend" class="chart"></div>' + empty + table


def _incidents(m: dict) -> str:
    inc = m["incidents"]
    if not inc.get("measured"):
        return '<p class="big" id="incident-count">—</p>' + _not_measured(inc)
    open_ = inc.get("open") or []
    out = [f'<p class="big" id="incident-count" style="color:{RED_C if open_ else GREEN}">{len(open_)} open</p>']
    rows = open_ + (inc.get("recent") or [])
    if rows:
        out.append("<table class='t' id='incidents'><tr><th>level</th><th>type</th><th>status</th><th>opened</th>"
                   "<th>description</th><th>id</th></tr>" + "".join(
                       f"<tr class='{'red' if r.get('status') == 'open' else ''}'><td>{_e(r.get('level'))}</td>"
                       f"<td>{_e(r.get('type'))}</td><td>{_e(r.get('status'))}</td>"
                       f"<td>{_e(str(r.get('opened_at'))[:19])}</td><td>{_e(r.get('description'))}</td>"
                       f"<td><code>{_e(str(r.get('id'))[:8])}</code></td></tr>" for r in rows) + "</table>")
    else:
        out.append("<p class='muted'>No incident opened in the last 7 days.</p>")
    return "".join(out)


def _agents(m: dict) -> str:
    a = m["agents"]
    if not a.get("measured"):
        return _not_measured(a)
    h, lat = a.get("health") or {}, a.get("latency") or {}
    rows = [("tasks (last 24 h)", _num(h.get("tasks"))), ("success", _num(h.get("success_pct"), "%", 2)),
            ("quarantine", _num(h.get("quarantine_pct"), "%", 2)),
            ("failed / quarantined", f"{_num(h.get('failed'))} / {_num(h.get('quarantined'))}"),
            ("queued / running", f"{_num(h.get('queued'))} / {_num(h.get('running'))}"),
            ("peak concurrency", _num(h.get("peak_concurrency"))),
            ("task run p50 / p95", f"{_num(lat.get('run_p50_s'), ' s', 2)} / {_num(lat.get('run_p95_s'), ' s', 2)}"),
            ("queue wait p95", _num(lat.get("wait_p95_s"), " s", 2))]
    return "<table class='t' id='agents'>" + "".join(
        f"<tr><th>{_e(k)}</th><td class='r'>{v}</td></tr>" for k, v in rows) + "</table>"


def _bar(label: str, pct: Any, detail: str) -> str:
    if pct is None:
        return (f"<div class='res'><span class='lbl'>{_e(label)}</span><span class='nm'>not measured</span>"
                f"<span class='muted'> {_e(detail)}</span></div>")
    p = max(0.0, min(100.0, float(pct)))
    colour = GREEN if p < 70 else AMBER if p < 85 else RED_C
    return (f"<div class='res'><span class='lbl'>{_e(label)}</span><span class='bar'><span style='width:{p:.1f}%;"
            f"background:{colour}'></span></span> <b>{_num(pct, '%')}</b> <span class='muted'>{_e(detail)}</span>"
            f"</div>")


def _resources(m: dict) -> str:
    r = m["resources"]
    if not r.get("measured"):
        return _not_measured(r)
    d = r.get("doc") or {}
    disk, conn, mem, cpu = d.get("disk") or {}, d.get("connections") or {}, d.get("memory"), d.get("cpu")
    src = f"{d.get('source', '?')} — {r.get('source')}"
    out = [f"<div id='resources'><p class='muted'>source: {_e(src)}</p>",
           _bar("CPU", (cpu or {}).get("busy_pct_since_boot") if cpu else None,
                "busy since boot" if cpu else d.get("not_measured") or ""),
           _bar("memory", (mem or {}).get("used_pct") if mem else None,
                f"{_mb(mem.get('used_bytes'))} of {_mb(mem.get('total_bytes'))}" if mem else ""),
           _bar("disk", disk.get("used_pct"), f"{_mb(disk.get('used_bytes'))} of {_mb(disk.get('size_bytes'))}"
                                              + (f" ({disk['what']})" if disk.get("what") else "")),
           _bar("connections", conn.get("used_pct"), f"{_num(conn.get('used'))} of {_num(conn.get('max'))}"),
           "</div>"]
    if r.get("live_error"):
        out.append(f"<p class='muted'>live reading failed ({_e(r['live_error'])}); shown: the pack's</p>")
    return "".join(out)


def _compliance(m: dict) -> str:
    c = m["compliance"]
    if not c.get("day"):
        return "<p class='nm'>no daily pack: no compliance status</p>"
    areas = "".join(f"<tr><td>{_e(a['area'])}</td><td>{_badge(a['status'])}</td><td>{_e(_counts(a['counts']))}</td>"
                    f"</tr>" for a in c["areas"])
    fws = "".join(f"<tr><td>{_e(f['framework'])}</td><td>{_badge(f['status'])}</td><td>{f['requirements']} "
                  f"requirements: {_e(_counts(f['counts']))}</td></tr>" for f in c["frameworks"])
    return (f"<p class='muted'>daily run {_e(c['day'])}</p><div class='two'><table class='t' id='by-area'><tr>"
            f"<th>area</th><th>status</th><th>controls</th></tr>{areas}</table><table class='t' id='by-framework'>"
            f"<tr><th>framework</th><th>status</th><th></th></tr>{fws or '<tr><td colspan=3>—</td></tr>'}</table>"
            "</div>")


def _failing(m: dict) -> str:
    fs = m["failing"]
    if not m.get("latest"):
        return "<p class='nm'>no daily pack</p>"
    if not fs:
        return "<p id='failing-none' style='color:%s'>No failing control in the latest daily run.</p>" % GREEN
    return "<div id='failing'>" + "".join(
        f"<div class='finding' data-control='{_e(f.get('id'))}'><p>{_badge(f.get('verdict'))} <b>{_e(f.get('id'))}"
        f"</b> {_e(f.get('title'))} <span class='muted'>({_e(f.get('severity'))})</span></p>"
        f"<pre>{_e(f.get('text'))}</pre></div>" for f in fs) + "</div>"


def _week(m: dict) -> str:
    w = m["week"]
    if not w:
        return "<p class='muted' id='week-none'>No drill or acceptance run in the last 7 packs.</p>"
    rows = []
    for r in w:
        reds = [e for e in r["entries"] if e["verdict"] in ("fail", "error", "interrupted", "skipped")]
        detail = "; ".join(f"{e['id']}: {e['verdict']}" for e in reds) or f"{len(r['entries'])} step(s)"
        rows.append(f"<tr><td>{_e(r['day'])}</td><td>{_e(r['kind'])}</td><td>{_badge(r['verdict'])}</td>"
                    f"<td>{_e(_counts(r['summary']))}</td><td class='muted'>{_e(detail)}</td></tr>")
    return ("<table class='t' id='week'><tr><th>day</th><th>run</th><th>verdict</th><th>counts</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _traces(m: dict) -> str:
    ts = m["traces"]
    tpl = m.get("trace_link_template")
    head = f"<p class='muted'>links: {_e(tpl)}</p>" if tpl else "<p class='nm'>no trace link template set</p>"
    if not ts:
        return head + "<p class='muted'>No trace to show.</p>"
    return head + "<ul id='traces'>" + "".join(
        (f"<li><a href='{_e(t['url'])}' target='_blank' rel='noopener'><code>{_e(t['trace_id'])}</code></a> "
         if t.get("url") else f"<li><code>{_e(t['trace_id'])}</code> ") + f"<span class='muted'>{_e(t['what'])}</span>"
        "</li>" for t in ts) + "</ul>"


def _watch(m: dict) -> str:
    w = m.get("watch")
    if not w:
        return "<p class='muted' id='watch-none'>No watch sample in the retained days (`opsproof watch`).</p>"
    controls = w.get("controls") or []
    rows = "".join(f"<tr class='{'red' if c.get('verdict') in ('fail', 'error') else ''}'><td>{_e(c.get('id'))}</td>"
                   f"<td>{_badge(c.get('verdict'))}</td><td>{_e(fmt_value(c.get('measured')))}</td>"
                   f"<td>{_e(c.get('required'))}"
                   "</td></tr>" for c in controls if isinstance(c, dict))
    alerts, actions = w.get("alerts") or [], w.get("actions") or []

    def items(xs, fn):
        return "".join(f"<li>{fn(x) if isinstance(x, dict) else _e(x)}</li>" for x in xs)
    return (f"<p class='muted'>last sample {_e(w.get('at'))}, score {_e(fmt_score(w.get('score')))}</p>"
            + (f"<table class='t' id='watch-controls'><tr><th>control</th><th>verdict</th><th>measured</th>"
               f"<th>required</th></tr>{rows}</table>" if rows else "")
            + (f"<p><b>alerts</b></p><ul id='watch-alerts'>{items(alerts, _alert)}</ul>" if alerts else "")
            + (f"<p><b>actions</b></p><ul id='watch-actions'>{items(actions, _action)}</ul>" if actions else ""))


def _alert(a: dict) -> str:
    link = a.get("trace_link")
    sent = "delivered" if a.get("delivered") else f"not delivered: {a.get('error')}" if a.get("error") else ""
    return (f"{_badge(a.get('kind') or 'alert')} <b>{_e(a.get('severity'))}</b> {_e(a.get('title') or a.get('key'))}"
            + (f" — <a href='{_e(link)}' target='_blank' rel='noopener'>trace</a>" if link else "")
            + (f" <span class='muted'>({_e(sent)})</span>" if sent else ""))


def _action(a: dict) -> str:
    inc = str(a.get("incident_id") or "")
    return (f"<b>{_e(a.get('action'))}</b> for {_e(a.get('key'))}"
            + (f": incident <code>{_e(inc[:8])}</code>" if inc else "")
            + f" <span class='muted'>verified {_e(a.get('verified'))}, {len(a.get('changed') or [])} change(s)"
            + (f", in effect after {_num(a.get('time_to_effect_s'), ' s', 2)}" if a.get("time_to_effect_s") else "")
            + "</span>")


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f8fa;color:#1f2328}
header{background:#24292f;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0} header .muted{color:#c9d1d9}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:14px;padding:14px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;min-width:0;
overflow-wrap:anywhere}
section.wide{grid-column:1/-1} h2{font-size:15px;margin:0 0 8px}
.score{font-size:56px;font-weight:700;line-height:1} .score.none{font-size:26px}
.score .of{font-size:20px;color:#6e7781}
.big{font-size:28px;font-weight:700;margin:4px 0} .muted{color:#6e7781} .nm{color:#9a6700;font-style:italic}
.badge{color:#fff;border-radius:3px;padding:0 5px;font-size:11px;font-weight:600}
table.t{border-collapse:collapse;width:100%;margin:4px 0} .t th,.t td{border-bottom:1px solid #eaeef2;padding:3px 6px;
text-align:left;vertical-align:top} .t td.r{text-align:right} tr.red td{background:#ffebe9}
#components td,#components th{white-space:nowrap} #components td.muted{white-space:normal}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:10px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f8fa;padding:6px;border-radius:4px;font-size:12px;
margin:4px 0}
.finding{border-left:3px solid #cf222e;padding-left:8px;margin-bottom:8px}
.res{margin:6px 0;display:flex;gap:8px;align-items:center;flex-wrap:wrap} .res .lbl{width:90px}
.bar{display:inline-block;width:180px;height:10px;background:#eaeef2;border-radius:5px;overflow:hidden}
.bar span{display:block;height:100%} .chart{min-height:230px}
footer{padding:0 16px 16px;color:#6e7781;font-size:12px}
"""

SCRIPT = """
(function(){
  var m = JSON.parse(document.getElementById('model').textContent);
  var t = m.trend, el = document.getElementById('trend');
  window.opsproofTrend = {packs: t.packs.length, samples: t.samples.length, drawn: false};
  if (typeof uPlot === 'undefined') {
    if (el) el.innerHTML = '<p class="nm">chart library not installed (npm ci): the trend is the table below</p>';
    return;
  }
  if (!el || (!t.packs.length && !t.samples.length)) return;
  var xs = {}, i;
  t.packs.forEach(function(p){ xs[p.t] = true; });
  t.samples.forEach(function(p){ xs[p.t] = true; });
  var x = Object.keys(xs).map(Number).sort(function(a,b){return a-b;});
  var idx = {}; x.forEach(function(v,j){ idx[v] = j; });
  var daily = x.map(function(){return null;}), watch = x.map(function(){return null;});
  t.packs.forEach(function(p){ daily[idx[p.t]] = p.score; });
  t.samples.forEach(function(p){ watch[idx[p.t]] = p.score; });
  var w = Math.max(320, el.clientWidth - 10);
  var lo = x[0], hi = x[x.length - 1], pad = Math.max(3600, (hi - lo) * 0.05);
  var u = new uPlot({width: w, height: 220,
    scales: {x: {time: true, range: function(){ return [lo - pad, hi + pad]; }}, y: {range: [0, 100]}},
    series: [{}, {label: 'daily pack', stroke: '#0969da', width: 2, spanGaps: true, points: {show: true, size: 8}},
                 {label: 'watch', stroke: '#8250df', width: 1, spanGaps: true, points: {show: t.samples.length < 60}}],
    axes: [{}, {label: 'health score'}]}, [x, daily, watch], el);
  window.opsproofTrend.drawn = true;
  window.opsproofTrend.xPoints = x.length;
})();
"""


def render_html(model: dict) -> str:
    lib = chart_library()
    js, css = lib if lib is not None else ("", "")
    m = model
    tgt = m.get("target") or {}
    where = (f"{tgt.get('name')} ({tgt.get('kind')}) {tgt.get('host')}:{tgt.get('port')}/{tgt.get('database')}"
             if tgt else "no target recorded")
    refresh = (f'<meta http-equiv="refresh" content="{int(m["refresh_s"])}">'
               if m.get("mode") == "serve" and m.get("refresh_s") else "")
    data = json.dumps(m, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    sections = [("Health score", _health(m), ""), ("Trend", _trend(m), ""),
                ("Active incidents", _incidents(m), ""), ("Agent performance", _agents(m), ""),
                ("Resource utilization", _resources(m), ""), ("Compliance by area and framework", _compliance(m), ""),
                ("Failing controls", _failing(m), "wide"), ("This week's drills and acceptance", _week(m), ""),
                ("Watch: the last posture sample", _watch(m), ""), ("Trace links", _traces(m), "")]
    body = "".join(f'<section class="{cls}"><h2>{_e(title)}</h2>{html}</section>' for title, html, cls in sections)
    live = f"live data read {m['live_at']}" if m.get("live_at") else "no live reading (packs and samples only)"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>" + refresh +
        f"<title>opsproof health — {_e(tgt.get('name') or 'dashboard')}</title>"
        f"<style>{css}</style><style>{CSS}</style></head><body>"
        f"<header><h1>opsproof health</h1><span>{_e(where)}</span>"
        f"<span class='muted'>generated {_e(m['generated_at'])} · {_e(live)}"
        + (f" · refreshes every {int(m['refresh_s'])} s" if refresh else "") + "</span></header>"
        f"<main>{body}</main>"
        f"<footer>Health score formula: {_e((m['now'] or {}).get('formula') or 'see docs/operations.md')} · "
        f"evidence root {_e(m['root'])}"
        + (f" · unreadable: {_e(', '.join(m['unreadable']))}" if m.get("unreadable") else "") + "</footer>"
        f'<script type="application/json" id="model">{data}</script>'
        f"<script>{js}</script><script>{SCRIPT}</script></body></html>\n")

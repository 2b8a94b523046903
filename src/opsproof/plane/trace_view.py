"""Trace view of ops.spans: `python -m opsproof.plane.trace_view` (starlette + uvicorn, 127.0.0.1).

The embedded default keeps its traces in ops.spans (the plane's SDK exporter writes them there), so the
trace links in alerts, the live feed and the evidence pack open here:

  GET /trace/{trace_id}       HTML: the spans of that trace as a tree + waterfall (self-contained, no CDN);
                              404 (still HTML) when ops.spans has no span of that trace
  GET /api/trace/{trace_id}   JSON {"trace_id", "count", "spans": [{trace_id, span_id, parent_span_id, name,
                              flow, tenant_id, task_id, canary, attributes, started_at, duration_ms, depth}]}
  GET /                       the 50 most recent traces (links)
  GET /healthz

`plane up` starts it as the component `trace_view` and, unless TRACE_LINK_TEMPLATE is configured, writes
TRACE_LINK_TEMPLATE=http://127.0.0.1:<port>/trace/{trace_id} into the plane's env file (which the suite reads
on the embedded default). A hosted target points TRACE_LINK_TEMPLATE at its own trace UI.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from opsproof.plane import common
from opsproof.plane.settings import PlaneSettings

log = logging.getLogger("opsproof.plane.trace_view")
COMPONENT = "plane.trace_view"
MAX_SPANS = 2000
TRACE_ID = re.compile(r"[0-9A-Za-z_.\-]{1,128}")

SPANS_SQL = """select trace_id, span_id, parent_span_id, name, flow, tenant_id, task_id, canary, attributes,
                      started_at, duration_ms
                 from ops.spans where trace_id = %s order by started_at, span_id limit %s::int"""
RECENT_SQL = """select trace_id, min(started_at) as started_at, count(*) as spans, min(name) as name
                  from (select trace_id, started_at, name from ops.spans
                         where started_at > now() - interval '1 day' order by started_at desc limit 500) s
                 group by trace_id order by min(started_at) desc limit 50"""


def tree_order(spans: list[dict]) -> list[dict]:
    """Spans in tree order (parents before children, siblings by start), each with its depth. A span whose parent
    is not in this trace's rows (a remote caller) is a root."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict]] = {}
    for s in spans:
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)
    out: list[dict] = []
    placed: set[int] = set()

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: (x["started_at"], x["span_id"])):
            if id(s) in placed:
                continue
            placed.add(id(s))
            out.append({**s, "depth": depth})
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    out += [{**s, "depth": 0} for s in spans if id(s) not in placed]  # a parent cycle: never lose a span
    return out


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24}h1{font-size:1.2rem}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{text-align:left;background:#f6f8fa}.bar{position:relative;height:.9rem;background:#f0f2f5;min-width:12rem}
.bar span{position:absolute;top:0;bottom:0;background:#3b82f6;min-width:2px}.err .bar span{background:#dc2626}
.err td:first-child{color:#b91c1c}code{font-size:12px}details summary{cursor:pointer;color:#57606a}
.muted{color:#57606a}"""


def render_html(trace_id: str, spans: list[dict]) -> str:
    e = html.escape
    if not spans:
        body = (f"<p>No span of trace <code>{e(trace_id)}</code> in <code>ops.spans</code>. Spans are exported in "
                "batches (a few hundred ms); a trace of a task that never ran, or whose spans were pruned by "
                "retention, has none.</p>")
    else:
        t0 = min(s["started_at"] for s in spans)
        end = max(s["started_at"].timestamp() + (s["duration_ms"] or 0) / 1000 for s in spans)
        total_ms = max((end - t0.timestamp()) * 1000, 0.001)
        rows = []
        for s in spans:
            off = (s["started_at"] - t0).total_seconds() * 1000
            dur = s["duration_ms"] or 0.0
            left, width = 100 * off / total_ms, max(100 * dur / total_ms, 0.2)
            status = (s["attributes"] or {}).get("status")
            attrs = json.dumps(s["attributes"], indent=1, sort_keys=True, default=str)
            cls = ' class="err"' if status == "error" else ""
            rows.append(
                f"<tr{cls}><td style=\"padding-left:{0.5 + 1.2 * s['depth']:.1f}rem\">{e(s['name'])}"
                f"<div class=muted><code>{e(s['span_id'])}</code></div></td>"
                f"<td>{e(str(s['task_id'] or ''))}</td><td>{e(str(s['flow'] or ''))}</td>"
                f"<td>{'yes' if s['canary'] else ''}</td><td>{e(str(status or ''))}</td>"
                f"<td>{e(s['started_at'].isoformat())}</td><td>{dur:.2f} ms</td>"
                f"<td><div class=bar><span style=\"left:{left:.2f}%;width:{width:.2f}%\"></span></div>"
                f"<details><summary>attributes</summary><pre><code>{e(attrs)}</code></pre></details></td></tr>")
        body = (f"<p class=muted>{len(spans)} span(s), {total_ms:.1f} ms, from <code>ops.spans</code> "
                f"(<a href=\"/api/trace/{e(trace_id)}\">JSON</a>)</p><table><tr><th>span</th><th>task</th>"
                "<th>flow</th><th>canary</th><th>status</th><th>started</th><th>duration</th><th>timeline</th></tr>"
                + "".join(rows) + "</table>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>trace {e(trace_id)}</title><style>{CSS}</style>"
            f"</head><body><h1>trace <code>{e(trace_id)}</code></h1>{body}"
            "<p class=muted><a href=\"/\">recent traces</a> · opsproof reference plane</p></body></html>")


def make_app(settings: PlaneSettings) -> Starlette:
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["pool"] = AsyncConnectionPool(settings.db_url, min_size=1, max_size=5, open=False,
                                            kwargs={"application_name": "opsproof-plane-trace-view"})
        await state["pool"].open(wait=True, timeout=15)
        yield
        await state["pool"].close()

    async def spans_of(trace_id: str) -> list[dict]:
        async with state["pool"].connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(SPANS_SQL, (trace_id, MAX_SPANS))
            return tree_order(await cur.fetchall())

    def bad(trace_id: str) -> bool:
        return not TRACE_ID.fullmatch(trace_id)

    async def trace_json(request: Request) -> JSONResponse:
        trace_id = request.path_params["trace_id"]
        if bad(trace_id):
            return JSONResponse({"error": "not a trace id"}, status_code=400)
        spans = await spans_of(trace_id)
        body = json.loads(common.dumps({"trace_id": trace_id, "count": len(spans), "spans": spans}))
        return JSONResponse(body, status_code=200 if spans else 404)

    async def trace_html(request: Request) -> HTMLResponse:
        trace_id = request.path_params["trace_id"]
        if bad(trace_id):
            return HTMLResponse("<!doctype html><title>bad trace id</title><p>not a trace id</p>", status_code=400)
        spans = await spans_of(trace_id)
        return HTMLResponse(render_html(trace_id, spans), status_code=200 if spans else 404)

    async def index(request: Request) -> HTMLResponse:
        async with state["pool"].connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(RECENT_SQL)
            rows = await cur.fetchall()
        e = html.escape
        items = "".join(f"<li><a href=\"/trace/{e(r['trace_id'])}\"><code>{e(r['trace_id'])}</code></a> "
                        f"{e(r['name'])} · {r['spans']} span(s) · {e(r['started_at'].isoformat())}</li>" for r in rows)
        return HTMLResponse(f"<!doctype html><html><head><meta charset=utf-8><title>traces</title><style>{CSS}"
                            f"</style></head><body><h1>recent traces (ops.spans, last day)</h1>"
                            f"<ul>{items or '<li>none</li>'}</ul></body></html>")

    async def healthz(request: Request) -> JSONResponse:
        try:
            async with state["pool"].connection(timeout=2) as conn:
                await conn.execute("select 1")
            return JSONResponse({"ok": True, "component": COMPONENT})
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)

    return Starlette(lifespan=lifespan, routes=[
        Route("/trace/{trace_id}", trace_html, methods=["GET"]),
        Route("/api/trace/{trace_id}", trace_json, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def main() -> None:
    import uvicorn

    from opsproof.plane.settings import load_or_exit

    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    beat = common.HeartbeatThread(settings.db_url, COMPONENT, settings.cycle_s, {"port": settings.trace_view_port})
    beat.start()
    try:
        uvicorn.run(make_app(settings), host="127.0.0.1", port=settings.trace_view_port, log_level="warning",
                    access_log=False)
    finally:
        beat.stop.set()


if __name__ == "__main__":
    main()

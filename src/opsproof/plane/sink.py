"""Local webhook sink: `python -m opsproof.plane.sink` (starlette + uvicorn on 127.0.0.1).

Stores every POST (path, headers minus secrets, JSON body) as one line of <plane dir>/sink.jsonl and
serves them back: GET /received[?path=/slack][&since=N] -> {"count": n, "items": [...]}; GET /healthz.
On the embedded stack it stands in for Slack (ALERT_WEBHOOK_URL = <sink>/slack) and for the outbox
consumer (OPSPROOF_RELAY_URL = <sink>/outbox).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opsproof.plane import common

log = logging.getLogger("opsproof.plane.sink")
COMPONENT = "plane.sink"
SECRET_HEADERS = {"authorization", "x-signature", "cookie", "apikey", "x-api-key", "proxy-authorization"}


def make_app(store: Path) -> Starlette:
    store.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    async def receive(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")[:10000]}
        item = {"path": request.url.path, "received_at": time.time(),
                "headers": {k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS},
                "body": body}
        with lock, store.open("a") as fh:
            fh.write(json.dumps(item, separators=(",", ":")) + "\n")
        return JSONResponse({"ok": True})

    async def received(request: Request) -> JSONResponse:
        path = request.query_params.get("path")
        since = int(request.query_params.get("since", "0"))
        items = []
        if store.exists():
            with store.open() as fh:
                for i, line in enumerate(fh):
                    if i < since:
                        continue
                    item = json.loads(line)
                    if path is None or item["path"] == path:
                        items.append(item)
        return JSONResponse({"count": len(items), "items": items})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "component": COMPONENT})

    return Starlette(routes=[
        Route("/received", received, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/{path:path}", receive, methods=["POST"]),
    ])


def main() -> None:
    import uvicorn

    from opsproof.plane.settings import load_or_exit

    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    beat = common.HeartbeatThread(settings.db_url, COMPONENT, settings.cycle_s, {"port": settings.sink_port})
    beat.start()
    app = make_app(settings.plane_dir / "sink.jsonl")
    uvicorn.run(app, host="127.0.0.1", port=settings.sink_port, log_level="warning", access_log=False)
    beat.stop.set()


if __name__ == "__main__":
    main()

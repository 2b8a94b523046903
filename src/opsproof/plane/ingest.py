"""Signed-webhook ingest + API front: `python -m opsproof.plane.ingest` (starlette + uvicorn, 127.0.0.1).

POST /webhooks/n8n -- n8n@'s signed webhooks.
  Headers: X-Timestamp (unix seconds), X-Signature (hex HMAC-SHA256 with the n8n@ key over
  f"{timestamp}.{body}" -- see `sign()`), Idempotency-Key. Body: JSON.
  401 bad or stale signature (|now - timestamp| > OPSPROOF_SIGNATURE_TOLERANCE_S, default 300);
  400 missing key / not JSON;
  201 {"status": "accepted", "event_id", "idempotency_key"} -- the effect: one ops.ingest_events row;
  409 same key + same body: the stored first response as the body, header Idempotent-Replayed: true,
      no second effect;
  422 same key + different body.
  A body with "task": {"kind", "payload"?, "tenant_id"?, "canary"?} also enqueues one ops.agent_tasks row in
  the same transaction (response gains "task_id", "trace_id").
  Tracing (opentelemetry-sdk): the W3C `traceparent` header is extracted with the SDK's propagator
  (`opentelemetry.propagate.extract`); each webhook is one SERVER span `POST /webhooks/n8n` (child of the
  caller's span when a traceparent came in), exported into ops.spans; an enqueued task carries the trace
  id and the span's `traceparent` (injected with the same propagator) so the worker's agent.task.execute
  span is its child on the same trace. Responses carry `X-Trace-Id` and `traceparent`.
  Idempotency is the database's: the key row (ops.idempotency_keys, primary key) is inserted with
  ON CONFLICT DO NOTHING in the same transaction as the effect; a concurrent resend blocks on the
  unique index until the first commits, then finds the stored response. No Python lock.

API front (the "loads" the traffic generator drives; a load is an ops.outbox row, topic load.upserted):
  POST /api/loads            {"ref": ..., "tenant_id"?: uuid}  -> 201 {"id", "created_at"}  (primary)
  GET  /api/loads/{id}       -> 200 {"id", "payload", "read_from"} | 404 (read from the replica or
                                the primary per ops.read_routing; a replica miss or error falls back
                                to the primary, so an acknowledged write is never reported missing)
  GET  /api/loads?after=&limit=  same routing, list
  GET  /feed                 the UI live feed: recent agent tasks with trace ids and trace links
  GET  /healthz
Every request is recorded in ops.requests (source 'plane', region = where it was served from).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid

import psycopg
from opentelemetry import trace as otel_trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opsproof.plane import common, span_export
from opsproof.plane.settings import PlaneSettings
from opsproof.webhook_sig import sign, signed_headers, verify  # noqa: F401 (the one definition; re-exported)

log = logging.getLogger("opsproof.plane.ingest")
COMPONENT = "plane.ingest"
LOAD_TOPIC = "load.upserted"


def make_app(settings: PlaneSettings) -> Starlette:
    key = settings.signing_key()
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["primary"] = AsyncConnectionPool(settings.db_url, min_size=2, max_size=20, open=False,
                                               kwargs={"application_name": "opsproof-plane-ingest"})
        await state["primary"].open(wait=True, timeout=15)
        if settings.replica_db_url:
            state["replica"] = AsyncConnectionPool(settings.replica_db_url, min_size=1, max_size=10, open=False,
                                                   timeout=settings.probe_timeout_s, reconnect_timeout=0,
                                                   kwargs={"application_name": "opsproof-plane-ingest",
                                                           "connect_timeout": max(1, int(settings.probe_timeout_s))})
            await state["replica"].open(wait=False)
        yield
        for pool in (state.get("replica"), state["primary"]):
            if pool is not None:
                await pool.close()

    async def record(route: str, method: str, status: int, t0: float, region: str, trace_id: str | None,
                     tenant_id=None) -> None:
        try:
            async with state["primary"].connection() as conn:
                await conn.execute(
                    """insert into ops.requests (ts, tenant_id, route, method, status, duration_ms, region, trace_id, source)
                       values (now(), %s, %s, %s, %s::int, %s, %s, %s, 'plane')""",
                    (tenant_id, route, method, status, (time.perf_counter() - t0) * 1000, region, trace_id))
        except psycopg.Error as exc:
            log.warning("could not record request: %s", type(exc).__name__)

    tracer = otel_trace.get_tracer("opsproof.plane.ingest")

    def trace_of(request: Request) -> str:
        """The caller's trace id (W3C traceparent, via the SDK's propagator), else a new one."""
        sc = otel_trace.get_current_span(extract(request.headers)).get_span_context()
        return format(sc.trace_id, "032x") if sc.is_valid else uuid.uuid4().hex

    def task_of(payload) -> tuple[dict | None, str | None]:
        """The optional task a webhook enqueues; (None, error) when it is malformed."""
        t = payload.get("task") if isinstance(payload, dict) else None
        if t is None:
            return None, None
        if not isinstance(t, dict) or not isinstance(t.get("kind"), str) or not 0 < len(t["kind"]) <= 64 \
                or not isinstance(t.get("payload", {}), dict):
            return None, "task must be {kind: str, payload?: object, tenant_id?: uuid, canary?: bool}"
        try:
            tenant = str(uuid.UUID(t["tenant_id"])) if t.get("tenant_id") else None
        except (ValueError, TypeError, AttributeError):
            return None, "task.tenant_id is not a UUID"
        return {"kind": t["kind"], "payload": dict(t.get("payload") or {}), "tenant_id": tenant,
                "canary": bool(t.get("canary", False))}, None

    async def webhook(request: Request) -> JSONResponse:
        with tracer.start_as_current_span("POST /webhooks/n8n", context=extract(request.headers), kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "POST", "url.path": "/webhooks/n8n",
                                                      "opsproof.flow": "ingest"}) as span:
            sc = span.get_span_context()
            trace_id = format(sc.trace_id, "032x") if sc.is_valid else trace_of(request)
            resp = await _webhook(request, trace_id, span)
            span.set_attribute("http.response.status_code", resp.status_code)
            span.set_status(Status(StatusCode.ERROR if resp.status_code >= 500 else StatusCode.UNSET))
            carrier: dict[str, str] = {}
            inject(carrier)
            if "traceparent" in carrier:
                resp.headers["traceparent"] = carrier["traceparent"]
            return resp

    async def _webhook(request: Request, trace: str, span) -> JSONResponse:
        t0 = time.perf_counter()
        body = await request.body()
        why = verify(key, request.headers.get("x-timestamp"), request.headers.get("x-signature"), body,
                     settings.signature_tolerance_s)
        status, out, headers = 0, {}, {}
        if why:
            status, out = 401, {"error": why}
        elif not request.headers.get("idempotency-key"):
            status, out = 400, {"error": "missing Idempotency-Key"}
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
                status, out = 400, {"error": "body is not JSON"}
            task, bad = task_of(payload) if not status else (None, None)
            if bad:
                status, out = 400, {"error": bad}
            if not status:
                span.set_attribute("opsproof.idempotency_key", request.headers["idempotency-key"][:200])
                status, out, headers = await _ingest(request.headers["idempotency-key"], body, payload, task, trace)
                if out.get("task_id") is not None:
                    span.set_attribute("task.id", int(out["task_id"]))
        await record("/webhooks/n8n", "POST", status, t0, "primary", trace)
        return JSONResponse(out, status_code=status, headers={**headers, "X-Trace-Id": trace})

    async def _ingest(idem: str, body: bytes, payload, task: dict | None = None,
                      trace_id: str | None = None) -> tuple[int, dict, dict]:
        digest = hashlib.sha256(body).hexdigest()
        async with state["primary"].connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    """insert into ops.idempotency_keys (key, account, body_sha256, status, response)
                       values (%s, 'n8n@', %s, 201, '{}') on conflict (key) do nothing returning key""", (idem, digest))
                if await cur.fetchone() is not None:
                    cur = await conn.execute(
                        """insert into ops.ingest_events (idempotency_key, account, payload)
                           values (%s, 'n8n@', %s) returning id""", (idem, Jsonb(payload)))
                    event_id = (await cur.fetchone())[0]
                    response = {"status": "accepted", "event_id": event_id, "idempotency_key": idem}
                    if task is not None:
                        carrier: dict[str, str] = {}
                        inject(carrier)  # the current (server) span's context, W3C traceparent
                        cur = await conn.execute(
                            """insert into ops.agent_tasks (tenant_id, kind, payload, trace_id, canary)
                               values (%s, %s, %s, %s, %s) returning id""",
                            (task["tenant_id"], task["kind"], Jsonb({**task["payload"], **carrier,
                                                                     "ingest_event_id": event_id}),
                             trace_id, task["canary"]))
                        response.update(task_id=(await cur.fetchone())[0], trace_id=trace_id)
                    await conn.execute("update ops.idempotency_keys set response = %s where key = %s",
                                       (Jsonb(response), idem))
                    return 201, response, {}
                cur = await conn.execute("select body_sha256, status, response from ops.idempotency_keys where key = %s",
                                         (idem,))
                stored_digest, stored_status, stored_response = await cur.fetchone()
        if stored_digest != digest:
            return 422, {"error": "Idempotency-Key reused with a different body", "idempotency_key": idem}, {}
        return 409, stored_response, {"Idempotent-Replayed": "true", "Original-Status": str(stored_status)}

    async def route_target() -> str:
        async with state["primary"].connection() as conn:
            cur = await conn.execute("select target from ops.read_routing where region = 'replica'")
            row = await cur.fetchone()
        return row[0] if row else "primary"

    async def routed_read(sql: str, params: tuple, want_rows: bool) -> tuple[object, str]:
        """(result, served_from). Replica per routing; a miss or an error there reads the primary."""
        target = await route_target()
        if target == "replica" and state.get("replica") is not None:
            try:
                async with state["replica"].connection(timeout=settings.probe_timeout_s) as conn:
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(sql, params)
                    res = await cur.fetchall() if want_rows else await cur.fetchone()
                if res:
                    return res, "replica"
                fallback = "primary-fallback"
            except Exception as exc:  # noqa: BLE001 - pool timeout or psycopg error: serve from the primary
                log.info("replica read failed (%s); primary fallback", type(exc).__name__)
                fallback = "primary-fallback"
        else:
            fallback = "primary"
        async with state["primary"].connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            res = await cur.fetchall() if want_rows else await cur.fetchone()
        return res, fallback

    async def loads_post(request: Request) -> JSONResponse:
        t0, trace = time.perf_counter(), trace_of(request)
        try:
            data = await request.json()
            tenant = str(uuid.UUID(data["tenant_id"])) if data.get("tenant_id") else None
        except (ValueError, TypeError, AttributeError):
            await record("/api/loads", "POST", 400, t0, "primary", trace)
            return JSONResponse({"error": "bad JSON"}, status_code=400)
        async with state["primary"].connection() as conn:
            cur = await conn.execute(
                "insert into ops.outbox (tenant_id, topic, payload) values (%s, %s, %s) returning id, created_at",
                (tenant, LOAD_TOPIC, Jsonb({**data, "trace_id": trace})))
            oid, created = await cur.fetchone()
        await record("/api/loads", "POST", 201, t0, "primary", trace, tenant)
        return JSONResponse({"id": oid, "created_at": created.isoformat()}, status_code=201,
                            headers={"X-Trace-Id": trace})

    async def load_get(request: Request) -> JSONResponse:
        t0, trace = time.perf_counter(), trace_of(request)
        oid = request.path_params["id"]
        row, served = await routed_read(
            "select id, tenant_id, payload, created_at from ops.outbox where id = %s and topic = %s", (oid, LOAD_TOPIC),
            False)
        status = 200 if row else 404
        await record("/api/loads/{id}", "GET", status, t0, served.split("-")[0], trace)
        body = {"id": row["id"], "payload": row["payload"], "created_at": row["created_at"].isoformat(),
                "read_from": served} if row else {"error": "not found", "read_from": served}
        return JSONResponse(body, status_code=status, headers={"X-Read-From": served, "X-Trace-Id": trace})

    async def loads_list(request: Request) -> JSONResponse:
        t0, trace = time.perf_counter(), trace_of(request)
        after = int(request.query_params.get("after", "0"))
        limit = min(int(request.query_params.get("limit", "100")), 1000)
        rows, served = await routed_read(
            "select id, payload from ops.outbox where topic = %s and id > %s order by id limit %s::int",
            (LOAD_TOPIC, after, limit), True)
        await record("/api/loads", "GET", 200, t0, served.split("-")[0], trace)
        return JSONResponse({"items": rows or [], "read_from": served}, headers={"X-Read-From": served})

    async def feed(request: Request) -> JSONResponse:
        limit = min(int(request.query_params.get("limit", "50")), 500)
        async with state["primary"].connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                """select id, tenant_id, kind, status, attempts, canary, quarantined, trace_id, enqueued_at,
                          started_at, finished_at, error
                     from ops.agent_tasks order by id desc limit %s::int""", (limit,))
            rows = await cur.fetchall()
        for r in rows:
            r["trace_url"] = settings.trace_link(r["trace_id"])
        return JSONResponse(json.loads(common.dumps({"items": rows})))

    async def healthz(request: Request) -> JSONResponse:
        try:
            async with state["primary"].connection(timeout=2) as conn:
                await conn.execute("select 1")
            return JSONResponse({"ok": True, "component": COMPONENT})
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)

    return Starlette(lifespan=lifespan, routes=[
        Route("/webhooks/n8n", webhook, methods=["POST"]),
        Route("/api/loads", loads_post, methods=["POST"]),
        Route("/api/loads", loads_list, methods=["GET"]),
        Route("/api/loads/{id:int}", load_get, methods=["GET"]),
        Route("/feed", feed, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def main() -> None:
    import uvicorn

    from opsproof.plane.settings import load_or_exit

    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    if not settings.n8n_signing_key:
        print("opsproof plane: bad setting N8N_SIGNING_KEY: no n8n@ signing key (N8N_SIGNING_KEY or OPSPROOF_KEY_N8N)",
              file=__import__("sys").stderr)
        raise SystemExit(2)
    provider = span_export.setup_tracing(COMPONENT, settings.db_url)
    beat = common.HeartbeatThread(settings.db_url, COMPONENT, settings.cycle_s, {"port": settings.ingest_port})
    beat.start()
    try:
        uvicorn.run(make_app(settings), host="127.0.0.1", port=settings.ingest_port, log_level="warning",
                    access_log=False)
    finally:
        beat.stop.set()
        span_export.shutdown_tracing(provider)


if __name__ == "__main__":
    main()

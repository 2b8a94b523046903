"""Outbox relay: `python -m opsproof.plane.relay`.

Publishes unpublished ops.outbox rows strictly in id order by HTTP POST to OPSPROOF_RELAY_URL (on the
embedded stack: the local sink's /outbox), and stamps published_at (lag = published_at - created_at).
One relay publishes at a time (transaction-level advisory lock), a batch stops at the first failed POST
(attempts + last_error recorded) so order is never broken. Halts while autonomy.emergencyStop=true or
outbox.relayEnabled=false (flags re-read every cycle and before every batch).
An event whose payload carries a W3C `traceparent` (the worker's task events) is published inside an
OpenTelemetry PRODUCER span `outbox.publish` (child of that context, extracted with the SDK's propagator),
and the POST carries that span's `traceparent` header to the consumer.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
import psycopg
from opentelemetry import trace as otel_trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from opsproof.plane import common, span_export
from opsproof.plane.settings import PlaneSettings, load_or_exit

log = logging.getLogger("opsproof.plane.relay")
COMPONENT = "plane.relay"
RELAY_LOCK = "opsproof.plane.relay"


def relay_url(settings: PlaneSettings) -> str:
    if settings.relay_url:
        return settings.relay_url
    if settings.sink_url:
        return settings.sink_url.rstrip("/") + "/outbox"
    raise RuntimeError("no relay target (OPSPROOF_RELAY_URL or OPSPROOF_SINK_URL)")


def publish_batch(conn: psycopg.Connection, client: httpx.Client, url: str, limit: int = 200) -> int:
    """Publish up to `limit` unpublished rows in id order; returns how many were published.
    `conn` must be in autocommit mode (the batch runs in its own transaction)."""
    with conn.transaction():
        got = conn.execute("select pg_try_advisory_xact_lock(hashtext(%s))", (RELAY_LOCK,)).fetchone()[0]
        if not got:
            return 0
        rows = conn.execute(
            """select id, created_at, tenant_id, topic, payload from ops.outbox
                where published_at is null order by id limit %s::int for update""", (limit,)).fetchall()
        done: list[int] = []
        for oid, created_at, tenant_id, topic, payload in rows:
            event = {"id": oid, "topic": topic, "tenant_id": str(tenant_id) if tenant_id else None,
                     "created_at": created_at.isoformat(), "payload": payload}
            headers = {"X-Outbox-Id": str(oid)}
            span = _publish_span(payload, oid, topic)
            if span is not None:
                inject(headers, context=otel_trace.set_span_in_context(span))
            try:
                resp = client.post(url, json=event, headers=headers)
                ok, err = resp.is_success, f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                ok, err = False, type(exc).__name__
            if span is not None:
                span.set_status(Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, err))
                span.end()
            if not ok:
                conn.execute("update ops.outbox set attempts = attempts + 1, last_error = %s where id = %s", (err, oid))
                break
            done.append(oid)
        if done:
            # clock_timestamp(): each batch stamps the time it actually finished publishing
            conn.execute("""update ops.outbox set published_at = clock_timestamp(), attempts = attempts + 1, last_error = null
                             where id = any(%s)""", (done,))
    return len(done)


def _publish_span(payload, oid: int, topic: str):
    tp = payload.get("traceparent") if isinstance(payload, dict) else None
    if not isinstance(tp, str):
        return None
    ctx = extract({"traceparent": tp})
    if not otel_trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return otel_trace.get_tracer("opsproof.plane.relay").start_span(
        "outbox.publish", context=ctx, kind=SpanKind.PRODUCER,
        attributes={"outbox.id": oid, "messaging.destination.name": topic})


def run(settings: PlaneSettings, stop: threading.Event) -> None:
    url = relay_url(settings)
    conn = common.connect(settings.db_url, app="opsproof-plane-relay")
    client = httpx.Client(timeout=5.0)
    published = 0
    next_refresh = 0.0
    flags = None
    while not stop.is_set():
        try:
            if time.monotonic() >= next_refresh:
                flags = common.read_flags(conn)
                common.heartbeat(conn, COMPONENT, {"published": published, "halted": _halted(flags)})
                next_refresh = time.monotonic() + settings.cycle_s
            if _halted(flags):
                stop.wait(max(0.0, next_refresh - time.monotonic()))
                continue
            n = publish_batch(conn, client, url, settings.relay_batch)
            published += n
            if n == 0:
                stop.wait(min(settings.cycle_s / 5, max(0.0, next_refresh - time.monotonic())))
            else:
                flags = common.read_flags(conn)  # halt between batches too, not only once a cycle
        except psycopg.Error as exc:
            log.warning("relay db error (%s); reconnecting", type(exc).__name__)
            stop.wait(settings.cycle_s)
            try:
                conn.close()
                conn = common.connect(settings.db_url, app="opsproof-plane-relay")
            except psycopg.Error:
                pass
    client.close()
    conn.close()


def _halted(flags: common.Flags | None) -> bool:
    return flags is None or flags.emergency_stop or not flags.relay_enabled


def main() -> None:
    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    stopper = common.Stopper().install()
    log.info("relay up -> %s", relay_url(settings))
    provider = span_export.setup_tracing(COMPONENT, settings.db_url)
    try:
        run(settings, stopper.event)
    finally:
        span_export.shutdown_tracing(provider)


if __name__ == "__main__":
    main()

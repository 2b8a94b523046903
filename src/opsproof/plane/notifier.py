"""Alerts out: an ops.alerts row plus a Slack incoming-webhook payload posted to ALERT_WEBHOOK_URL.

Payload: {"text": ..., "blocks": [section (mrkdwn title), section (detail fields), section (trace deep
link from TRACE_LINK_TEMPLATE), context]} -- the shape Slack's incoming webhooks accept. Delivery: httpx with retries and
exponential backoff (5xx, 429 and transport errors are retried; 4xx other than 429 is final).
An alert with a trace id is one OpenTelemetry span `alert.notify` on that trace (a child of `parent` when
given, e.g. the worker's agent.task.execute span), so the alert's trace link shows the alert too.
"""

from __future__ import annotations

import logging
import time

import httpx
import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg.types.json import Jsonb

from opsproof.alerting import SEVERITY_EMOJI, slack_payload  # noqa: F401 - one Slack payload shape
from opsproof.plane import span_export
from opsproof.plane.settings import PlaneSettings

log = logging.getLogger("opsproof.plane.notifier")

def deliver(url: str, payload: dict, *, attempts: int = 4, backoff_s: float = 0.2, timeout_s: float = 5.0,
            client: httpx.Client | None = None) -> bool:
    """POST with retries + exponential backoff (backoff_s, 2x, 4x, ...). True when delivered (2xx)."""
    own = client is None
    client = client or httpx.Client(timeout=timeout_s)
    try:
        for attempt in range(attempts):
            try:
                resp = client.post(url, json=payload)
                if resp.is_success:
                    return True
                if resp.status_code < 500 and resp.status_code != 429:
                    log.warning("alert rejected: HTTP %s", resp.status_code)
                    return False
            except httpx.HTTPError as exc:
                log.warning("alert delivery attempt %d failed: %s", attempt + 1, type(exc).__name__)
            if attempt + 1 < attempts:
                time.sleep(backoff_s * (2 ** attempt))
        return False
    finally:
        if own:
            client.close()


def notify(conn: psycopg.Connection, settings: PlaneSettings, *, severity: str, source: str, title: str,
           detail: dict | None = None, trace_id: str | None = None, parent=None) -> tuple[int, bool]:
    """Raise an alert: insert ops.alerts (always) and post the Slack payload (when a URL is set).
    Returns (alert id, delivered). `parent`: an OpenTelemetry span (or context) the alert.notify span hangs under."""
    span = None
    if trace_id:
        tracer = trace.get_tracer("opsproof.plane.notifier")
        attrs = {"alert.severity": severity, "alert.source": source, "alert.title": title[:200]}
        if parent is not None:
            ctx = trace.set_span_in_context(parent) if isinstance(parent, trace.Span) else parent
            span = tracer.start_span("alert.notify", context=ctx, kind=SpanKind.PRODUCER, attributes=attrs)
        else:
            span = span_export.start_task_span(tracer, "alert.notify", trace_id, kind=SpanKind.PRODUCER,
                                               attributes=attrs)
    try:
        alert_id, delivered = _notify(conn, settings, severity, source, title, detail, trace_id)
    except Exception as exc:
        if span is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
        raise
    if span is not None:
        span.set_attribute("alert.id", alert_id)
        span.set_attribute("alert.delivered", delivered)
        span.set_status(Status(StatusCode.OK if delivered or not settings.alert_webhook_url else StatusCode.ERROR))
        span.end()
    return alert_id, delivered


def _notify(conn, settings: PlaneSettings, severity: str, source: str, title: str, detail: dict | None,
            trace_id: str | None) -> tuple[int, bool]:
    row = conn.execute(
        "insert into ops.alerts (severity, source, title, detail, trace_id) values (%s, %s, %s, %s, %s) returning id",
        (severity, source, title, Jsonb(detail or {}), trace_id)).fetchone()
    if not conn.autocommit:
        conn.commit()
    delivered = False
    if settings.alert_webhook_url:
        payload = slack_payload(title, severity=severity, source=source, detail=detail, trace_id=trace_id,
                                trace_link_template=settings.trace_link_template)
        delivered = deliver(settings.alert_webhook_url, payload)
    return int(row[0]), delivered

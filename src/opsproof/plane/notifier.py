"""Alerts out: an ops.alerts row plus a Slack incoming-webhook payload posted to ALERT_WEBHOOK_URL.

Payload: {"text": ..., "blocks": [section (mrkdwn title), section (detail fields), section (trace deep
link from TRACE_LINK_TEMPLATE), context]} -- the shape Slack's incoming webhooks accept. Delivery: httpx with retries and
exponential backoff (5xx, 429 and transport errors are retried; 4xx other than 429 is final).
"""

from __future__ import annotations

import logging
import time

import httpx
import psycopg
from psycopg.types.json import Jsonb

from opsproof.alerting import SEVERITY_EMOJI, slack_payload  # noqa: F401 - one Slack payload shape
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
           detail: dict | None = None, trace_id: str | None = None) -> tuple[int, bool]:
    """Raise an alert: insert ops.alerts (always) and post the Slack payload (when a URL is set).
    Returns (alert id, delivered)."""
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

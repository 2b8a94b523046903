"""Tell on-call when a suite run is red: one Slack-format message to ALERT_WEBHOOK_URL."""

from __future__ import annotations

from pathlib import Path

import httpx


def failure_message(results: dict, report: Path | None) -> dict:
    bad = [c for c in results["controls"] if c["verdict"] in ("fail", "error")]
    lines = [f"• `{c.get('id')}` {c.get('title')}: {c['verdict'].upper()} — {c.get('message', '')[:200]}" for c in bad]
    text = (f":rotating_light: opsproof {results['suite']} run {results['run_id']} on {results['date']}: "
            f"{len(bad)} control(s) not green")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines[:20]) or "(none)"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"report: {report}"}]},
        ],
    }


def post_run_failure(settings, results: dict, report: Path | None) -> bool:
    """Post once; a delivery problem is printed, never raised (the run's verdict stands on its own)."""
    if settings.alert_webhook_url is None:
        return False
    url = settings.alert_webhook_url.get_secret_value()
    try:
        for attempt in range(3):
            resp = httpx.post(url, json=failure_message(results, report), timeout=5)
            if resp.status_code < 500:
                return resp.is_success
    except httpx.HTTPError as exc:
        print(f"opsproof: alert not delivered: {type(exc).__name__}")
    return False

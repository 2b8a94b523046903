"""Slack-format messages: a suite run that is red (to ALERT_WEBHOOK_URL), and the one alert payload shape that the
reference plane's notifier and the incident levers both post (pure: no plane, no lever imports)."""

from __future__ import annotations

from pathlib import Path

import httpx

SEVERITY_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":large_orange_circle:",
                  "low": ":large_yellow_circle:", "info": ":information_source:"}


def slack_payload(title: str, *, severity: str, source: str, detail: dict | None = None,
                  trace_id: str | None = None, trace_link_template: str | None = None) -> dict:
    text = f"{SEVERITY_EMOJI.get(severity, '')} [{severity.upper()}] {source}: {title}".strip()
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list((detail or {}).items())[:10]]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if trace_id:
        link = (trace_link_template or "{trace_id}").format(trace_id=trace_id)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|trace {trace_id}>"}})
        text += f" — trace: {link}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"source `{source}` · opsproof plane"}]})
    return {"text": text, "blocks": blocks}


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

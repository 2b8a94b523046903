"""Signed-webhook ingest + API front (real uvicorn process) and the notifier's Slack payload/delivery."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from plane_helpers import free_port, wait_for

from opsproof.plane import notifier
from opsproof.plane.ingest import sign, signed_headers

KEY = "k" * 64  # plane_env's N8N_SIGNING_KEY


def _ok(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def ingest(clean, spawn):
    port = free_port()
    spawn("ingest", OPSPROOF_INGEST_PORT=port)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(url + "/healthz"), what="ingest up")
    return url


def _events(db, key=None):
    if key is None:
        return db.execute("select count(*) from ops.ingest_events").fetchone()[0]
    return db.execute("select count(*) from ops.ingest_events where idempotency_key = %s", (key,)).fetchone()[0]


def test_valid_signature_is_accepted_once(ingest, clean):
    body = json.dumps({"workflow": "w1", "load": 42}).encode()
    r = httpx.post(ingest + "/webhooks/n8n", content=body, headers=signed_headers(KEY, body, "idem-1"))
    assert r.status_code == 201 and r.json()["status"] == "accepted"
    assert _events(clean, "idem-1") == 1
    again = httpx.post(ingest + "/webhooks/n8n", content=body, headers=signed_headers(KEY, body, "idem-1"))
    assert again.status_code == 409 and again.json() == r.json() and again.headers["idempotent-replayed"] == "true"
    other = json.dumps({"workflow": "w1", "load": 43}).encode()
    diff = httpx.post(ingest + "/webhooks/n8n", content=other, headers=signed_headers(KEY, other, "idem-1"))
    assert diff.status_code == 422
    assert _events(clean) == 1
    assert clean.execute("select count(*) from ops.requests where source = 'plane' and route = '/webhooks/n8n'"
                         ).fetchone()[0] == 3


def test_tampered_and_stale_signatures_are_rejected(ingest, clean):
    body = json.dumps({"a": 1}).encode()
    now = int(time.time())
    cases = {
        "tampered body": (b'{"a": 2}', signed_headers(KEY, body, "t1")),
        "tampered signature": (body, {**signed_headers(KEY, body, "t2"), "X-Signature": "0" * 64}),
        "wrong key": (body, signed_headers("not-the-key", body, "t3")),
        "stale": (body, signed_headers(KEY, body, "t4", timestamp=now - 330)),
        "future": (body, signed_headers(KEY, body, "t5", timestamp=now + 330)),
        "signature for another timestamp": (body, {**signed_headers(KEY, body, "t6"), "X-Timestamp": str(now - 10)}),
        "missing": (body, {"Idempotency-Key": "t7", "Content-Type": "application/json"}),
    }
    for name, (content, headers) in cases.items():
        r = httpx.post(ingest + "/webhooks/n8n", content=content, headers=headers)
        assert r.status_code == 401, name
    assert _events(clean) == 0
    ok = httpx.post(ingest + "/webhooks/n8n", content=body, headers=signed_headers(KEY, body, "t8", timestamp=int(time.time()) - 270))
    assert ok.status_code == 201


def test_50_concurrent_identical_requests_yield_exactly_one_effect(ingest, clean):
    body = json.dumps({"workflow": "burst", "n": 1}).encode()
    headers = signed_headers(KEY, body, "burst-1")

    async def burst():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=ingest, limits=limits, timeout=30) as client:
            return await asyncio.gather(*[client.post("/webhooks/n8n", content=body, headers=headers) for _ in range(50)])

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 49, codes
    first = next(r.json() for r in responses if r.status_code == 201)
    assert all(r.json() == first for r in responses)
    assert _events(clean, "burst-1") == 1
    assert clean.execute("select count(*) from ops.idempotency_keys where key = 'burst-1'").fetchone()[0] == 1


def test_api_front_writes_primary_reads_routed_and_feed(ingest, clean):
    r = httpx.post(ingest + "/api/loads", json={"ref": "L-1"})
    assert r.status_code == 201
    oid = r.json()["id"]
    g = wait_for(lambda: (lambda x: x if x.status_code == 200 else None)(httpx.get(f"{ingest}/api/loads/{oid}")),
                 what="read back")
    assert g.json()["payload"]["ref"] == "L-1" and g.headers["x-read-from"] in ("replica", "primary-fallback")
    clean.execute("update ops.read_routing set target = 'primary'")
    assert httpx.get(f"{ingest}/api/loads/{oid}").headers["x-read-from"] == "primary"
    assert httpx.get(f"{ingest}/api/loads/999999").status_code == 404
    lst = httpx.get(f"{ingest}/api/loads", params={"after": 0}).json()
    assert [i["id"] for i in lst["items"]] == [oid]
    clean.execute("insert into ops.agent_tasks (kind, trace_id) values ('quote', 'abc123')")
    feed = httpx.get(ingest + "/feed").json()["items"]
    assert feed[0]["trace_id"] == "abc123" and feed[0]["trace_url"].endswith("/trace/abc123")
    regions = dict(clean.execute("select method, count(*) from ops.requests where source = 'plane' "
                                 "and route like '/api/loads%%' group by method").fetchall())
    assert regions == {"POST": 1, "GET": 4}


def test_signature_helper_matches_spec():
    import hashlib
    import hmac

    assert sign("key", 1700000000, b'{"x":1}') == hmac.new(b"key", b'1700000000.{"x":1}', hashlib.sha256).hexdigest()


def _valid_slack(payload: dict) -> None:
    assert isinstance(payload["text"], str) and payload["text"]
    assert isinstance(payload["blocks"], list) and 0 < len(payload["blocks"]) <= 50
    for b in payload["blocks"]:
        assert b["type"] in ("section", "context", "divider", "header", "actions")
        if b["type"] == "section":
            assert "text" in b or "fields" in b
            if "text" in b:
                assert b["text"]["type"] in ("mrkdwn", "plain_text") and len(b["text"]["text"]) <= 3000
            for f in b.get("fields", []):
                assert f["type"] in ("mrkdwn", "plain_text")
            assert len(b.get("fields", [])) <= 10
        if b["type"] == "context":
            assert all(e["type"] in ("mrkdwn", "plain_text", "image") for e in b["elements"])
    json.dumps(payload)


def test_notifier_payload_is_slack_format_with_trace_link_and_reaches_the_sink(clean, spawn):
    from opsproof.plane.settings import load

    port = free_port()
    spawn("sink", OPSPROOF_SINK_PORT=port)
    sink = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(sink + "/healthz"), what="sink up")
    settings = load(stack_env=None, SUPABASE_DB_URL="postgresql://x@127.0.0.1/x", ALERT_WEBHOOK_URL=sink + "/slack",
                    TRACE_LINK_TEMPLATE="http://127.0.0.1:16686/trace/{trace_id}")
    alert_id, delivered = notifier.notify(clean, settings, severity="critical", source="tests", title="replica lag",
                                          detail={"lag_bytes": 123}, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    assert delivered and alert_id
    got = httpx.get(sink + "/received", params={"path": "/slack"}).json()["items"]
    assert len(got) == 1
    payload = got[0]["body"]
    _valid_slack(payload)
    link = "http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    assert link in payload["text"] and any(link in json.dumps(b) for b in payload["blocks"])
    assert clean.execute("select severity, trace_id from ops.alerts where id = %s", (alert_id,)).fetchone() == \
        ("critical", "4bf92f3577b34da6a3ce929d0e0e4736")


def test_delivery_retries_with_exponential_backoff():
    calls = []

    def handler(request):
        calls.append(time.monotonic())
        return httpx.Response(503 if len(calls) < 3 else 200)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert notifier.deliver("http://sink/slack", {"text": "x", "blocks": []}, backoff_s=0.1, client=client)
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(400))) as client:
        assert not notifier.deliver("http://sink/slack", {"text": "x"}, backoff_s=0.01, client=client)

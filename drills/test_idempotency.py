"""DRL-004 Idempotency: a signed webhook resent identically gets 409 with the stored first response and
has exactly one effect; 50 concurrent identical requests have exactly one effect; a tampered signature
and a stale timestamp get 401 and no effect. Real HTTP to the running ingest; effects counted in the DB."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from opsproof.measure import ingest
from opsproof.plane.ingest import signed_headers

CONCURRENT = 50
PATH = "/webhooks/n8n"


def _effects(target, key: str) -> dict:
    return ingest.idempotency_effects(target, key).result


def _body(run_id: str, n: int) -> bytes:
    return json.dumps({"drill": run_id, "event": "load.tendered", "n": n}, separators=(",", ":")).encode()


@pytest.mark.drill
@pytest.mark.control("DRL-004")
def test_idempotency(target, suite, plane_settings, steady_state, drill_record, evidence, request):
    run_id = suite.run_id
    drill_record.plan([
        f"POST signed n8n@ webhooks to the ingest (idempotency keys drill-{run_id}-*): 1 + 1 resend, "
        f"{CONCURRENT} concurrent duplicates, 1 tampered, 1 stale, 1 same-key-other-body",
        "each accepted one writes one ops.ingest_events row (the effect under test)",
    ], request.config)
    evidence.require(plane_settings.ingest_url is not None, "no ingest URL (OPSPROOF_INGEST_URL)")
    evidence.require(plane_settings.signing_key is not None, "no n8n@ signing key (N8N_SIGNING_KEY / OPSPROOF_KEY_N8N)")
    key, url = plane_settings.signing_key, plane_settings.ingest_url.rstrip("/") + PATH
    drill_record.intervals(signature_tolerance_s=plane_settings.signature_tolerance_s)
    k = lambda name: f"drill-{run_id}-{name}-{uuid.uuid4().hex[:8]}"  # noqa: E731

    with httpx.Client(timeout=15) as client:
        # 1. send, then resend the identical signed request
        k1, b1 = k("resend"), _body(run_id, 1)
        h1 = signed_headers(key, b1, k1)
        r1 = client.post(url, content=b1, headers=h1)
        r2 = client.post(url, content=b1, headers=h1)
        e1 = _effects(target, k1)
        drill_record.step("resend", key=k1, first=r1.status_code, resend=r2.status_code,
                          replayed_header=r2.headers.get("idempotent-replayed"), **e1)
        # 1b. same key, different body
        b1x = _body(run_id, 2)
        r3 = client.post(url, content=b1x, headers=signed_headers(key, b1x, k1))
        e1b = _effects(target, k1)
        drill_record.step("same_key_other_body", key=k1, status=r3.status_code, **e1b)

        # 3. tampered signature, stale timestamp
        k3, b3 = k("tampered"), _body(run_id, 3)
        h3 = signed_headers(key, b3, k3)
        sig = h3["X-Signature"]
        h3["X-Signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
        r_t = client.post(url, content=b3, headers=h3)
        e3 = _effects(target, k3)
        k4, b4 = k("stale"), _body(run_id, 4)
        r_s = client.post(url, content=b4, headers=signed_headers(
            key, b4, k4, timestamp=int(time.time()) - plane_settings.signature_tolerance_s - 60))
        e4 = _effects(target, k4)
        drill_record.step("bad_signatures", tampered=r_t.status_code, tampered_effects=e3, stale=r_s.status_code,
                          stale_effects=e4, stale_body=r_s.text[:200])

    # 2. 50 concurrent identical requests (one signed request, fired at once from 50 threads)
    k2, b2 = k("concurrent"), _body(run_id, 5)
    h2 = signed_headers(key, b2, k2)
    barrier = threading.Barrier(CONCURRENT)
    statuses: list = []
    lock = threading.Lock()

    def fire():
        with httpx.Client(timeout=30) as c:
            barrier.wait(10)
            try:
                code = c.post(url, content=b2, headers=h2).status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
        with lock:
            statuses.append(code)

    threads = [threading.Thread(target=fire) for _ in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    e2 = _effects(target, k2)
    seen = Counter(statuses)
    drill_record.step("concurrent", key=k2, requests=CONCURRENT, statuses=dict(seen), **e2)

    drill_record.measure("resend_effects", e1b["effects"], "effects", "== 1")
    drill_record.measure("concurrent_effects", e2["effects"], "effects", "== 1")
    drill_record.measure("concurrent_statuses", {str(s): n for s, n in seen.items()})
    drill_record.measure("tampered_effects", e3["effects"] + e3["keys"], "rows", "== 0")
    drill_record.measure("stale_effects", e4["effects"] + e4["keys"], "rows", "== 0")

    evidence.check("first signed request", r1.status_code, "==", 201)
    evidence.check("identical resend status", r2.status_code, "==", 409)
    stored = r2.json() if r2.headers.get("content-type", "").startswith("application/json") else None
    evidence.check("resend answers with the stored first response", int(stored == r1.json()), "==", 1,
                   detail={"first": r1.json(), "resend": stored})
    evidence.check("effects after send + resend (+ same key, other body)", e1b["effects"], "==", 1)
    evidence.check("same key with a different body", r3.status_code, "==", 422)
    evidence.check(f"effects of {CONCURRENT} concurrent identical requests", e2["effects"], "==", 1,
                   detail={"statuses": {str(s): n for s, n in seen.items()}})
    evidence.check(f"accepted (201) among {CONCURRENT} concurrent identical requests", seen.get(201, 0), "==", 1)
    evidence.check(f"409 among {CONCURRENT} concurrent identical requests", seen.get(409, 0), "==", CONCURRENT - 1)
    evidence.check("tampered signature status", r_t.status_code, "==", 401)
    evidence.check("tampered signature effects", e3["effects"] + e3["keys"], "==", 0)
    evidence.check("stale timestamp status", r_s.status_code, "==", 401)
    evidence.check("stale timestamp effects", e4["effects"] + e4["keys"], "==", 0)

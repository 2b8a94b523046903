"""The n8n@ webhook signature (hex HMAC-SHA256 over f"{timestamp}.{body}"): one definition, used by the reference
plane's ingest (which verifies it), by the target clients that send signed webhooks, and by the key rotation
rehearsal of the cadence. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(key: bytes | str, timestamp: int | str, body: bytes | str) -> str:
    """The n8n@ signature: hex HMAC-SHA256 over f"{timestamp}.{body}"."""
    key = key.encode() if isinstance(key, str) else key
    body = body.encode() if isinstance(body, str) else body
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(key: bytes | str, body: bytes | str, idempotency_key: str, timestamp: int | None = None) -> dict:
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"X-Timestamp": str(ts), "X-Signature": sign(key, ts, body), "Idempotency-Key": idempotency_key,
            "Content-Type": "application/json"}


def verify(key: bytes, timestamp: str | None, signature: str | None, body: bytes, tolerance_s: int,
           now: float | None = None) -> str | None:
    """None when valid, else why not (for the 401 body)."""
    if not timestamp or not signature:
        return "missing signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return "bad timestamp"
    if abs((now or time.time()) - ts) > tolerance_s:
        return "stale signature"
    if not hmac.compare_digest(sign(key, ts, body), signature.strip().lower()):
        return "bad signature"
    return None

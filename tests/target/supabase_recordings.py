"""Recorded Supabase responses (tests/target/recorded/*.json) and settings for the hosted-API client tests.

Hosted Supabase cannot be reached from CI; the real client code runs against these recordings with respx.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from pydantic import SecretStr

from opsproof.config import Settings

RECORDED = Path(__file__).parent / "recorded"

URL = "https://abcdefghijklmnopqrst.supabase.co"
REF = "abcdefghijklmnopqrst"
ANON_KEY = "anon-key-0123456789abcdef-ANON"
SERVICE_KEY = "service-role-key-0123456789abcdef-SERVICE"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
ACCESS_TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def response(name: str) -> httpx.Response:
    """An httpx.Response from a recording: {"status", "headers", "body"} (body None = no body, e.g. HEAD)."""
    rec = recorded(name)
    body = rec.get("body")
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(rec["status"], headers=rec.get("headers", {}), content=content)


def make_settings(**overrides) -> Settings:
    """Settings with every hosted-API field set (no env, no .env); overrides may set a field to None."""
    values = {"supabase_url": URL, "anon_key": ANON_KEY, "service_role_key": SERVICE_KEY,
              "jwt_secret": JWT_SECRET, "access_token": ACCESS_TOKEN, "project_ref": REF}
    values.update(overrides)
    secret = {"anon_key", "service_role_key", "jwt_secret", "access_token"}
    return Settings.model_construct(**{k: (SecretStr(v) if k in secret and v is not None else v)
                                       for k, v in values.items()})


SECRETS = (ANON_KEY, SERVICE_KEY, JWT_SECRET, ACCESS_TOKEN)


def assert_clean_one_line(message: str, *extra_secrets: str) -> None:
    assert message and "\n" not in message, message
    for s in (*SECRETS, *extra_secrets):
        assert s not in message, "a secret leaked into an error message"
    assert "Bearer" not in message and "eyJ" not in message, message

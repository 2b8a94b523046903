"""Per-stack secrets: DB passwords, the JWT secret and the anon/service-role JWTs, service-account keys."""

from __future__ import annotations

import hashlib
import secrets
import time

import jwt

SERVICE_ACCOUNTS = ("autopilot@", "agents@", "dlq@", "ci@", "n8n@", "system@")


def env_key_for(account: str) -> str:
    return "OPSPROOF_KEY_" + account.rstrip("@").upper()


def fingerprint(key: str) -> str:
    """What the database stores instead of a key: sha256:<first 16 hex>."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def api_jwt(secret: str, role: str, *, years: int = 10) -> str:
    now = int(time.time())
    claims = {"iss": "supabase", "ref": "opsproof-embedded", "role": role, "iat": now, "exp": now + years * 365 * 86400}
    return jwt.encode(claims, secret, algorithm="HS256")


def generate() -> dict[str, str]:
    jwt_secret = secrets.token_urlsafe(48)
    values = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "SUPABASE_ADMIN_PASSWORD": secrets.token_urlsafe(24),   # the bootstrap superuser: stack plumbing only
        "AUTHENTICATOR_PASSWORD": secrets.token_urlsafe(24),
        "REPLICATOR_PASSWORD": secrets.token_urlsafe(24),
        "SUPABASE_JWT_SECRET": jwt_secret,
        "SUPABASE_ANON_KEY": api_jwt(jwt_secret, "anon"),
        "SUPABASE_SERVICE_ROLE_KEY": api_jwt(jwt_secret, "service_role"),
    }
    for account in SERVICE_ACCOUNTS:
        values[env_key_for(account)] = secrets.token_hex(32)
    return values


SECRET_KEYS = (
    "POSTGRES_PASSWORD", "SUPABASE_ADMIN_PASSWORD", "AUTHENTICATOR_PASSWORD", "REPLICATOR_PASSWORD",
    "SUPABASE_JWT_SECRET", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY",
    *(env_key_for(a) for a in SERVICE_ACCOUNTS),
)

"""Test users on the target's Auth service, for SEC-001's read through the real API (a write: a lever).

Each user is created with the Auth admin API (service role) with server-controlled app_metadata {tenant_id,
app_role}, signed in with its password (Auth issues the access token: this works for projects on asymmetric JWT
signing keys, where minting HS256 tokens from the legacy secret does not), and deleted on the way out whatever
happens. Creation and deletion are audited in the target's audit chain; the email carries the run id so a leftover
is attributable. Passwords and tokens live in memory only.
"""

from __future__ import annotations

import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from opsproof.levers.common import audit, connection
from opsproof.target import rest

REASON = "SEC-001 isolation read through the API (signed-in test users)"


@dataclass
class ApiUser:
    tenant: str
    app_role: str
    user_id: str
    email: str
    access_token: str = field(repr=False)


def email_of(run_id: str, i: int) -> str:
    return f"opsproof-{run_id[:12].lower()}-{i}@example.com"


@contextmanager
def signed_in_users(where, settings, specs: list[tuple[str, str]], run_id: str) -> Iterator[list[ApiUser]]:
    """One signed-in user per (tenant, app_role) of `specs`; all deleted afterwards (audited both ways)."""
    admin = rest.service_client(settings)
    created: list[tuple[str, str]] = []
    users: list[ApiUser] = []
    try:
        for i, (tenant, role) in enumerate(specs):
            email, password = email_of(run_id, i), secrets.token_urlsafe(24)
            uid = rest.admin_create_user(admin, email, password, {"tenant_id": str(tenant), "app_role": role})
            created.append((uid, email))
            with connection(where) as conn, conn.transaction():
                audit(conn, action="auth.test_user.create", target=email, reason=REASON, run_id=run_id,
                      detail={"user_id": uid, "tenant_id": str(tenant), "app_role": role})
            users.append(ApiUser(str(tenant), role, uid, email, rest.sign_in(settings, email, password)))
        yield users
    finally:
        errors = []
        for uid, email in created:
            try:
                rest.admin_delete_user(admin, uid)
            except Exception as exc:  # noqa: BLE001 - try every user, report the first failure
                errors.append(f"{email}: {exc}")
                continue
            with connection(where) as conn, conn.transaction():
                audit(conn, action="auth.test_user.delete", target=email, reason=REASON, run_id=run_id,
                      detail={"user_id": uid})
        rest.close(admin)
        if errors:
            from opsproof.errors import OpsproofError

            raise OpsproofError(f"could not delete {len(errors)} test user(s): {errors[0]}")

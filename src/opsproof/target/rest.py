"""The hosted API path: supabase-py clients for the service role and for one user (a minted JWT).

    service_client(settings)            -> supabase Client with the service_role key (bypasses RLS)
    user_client(settings, claims)       -> supabase Client with the anon key as `apikey` and, as the
                                           bearer, an HS256 JWT minted from SUPABASE_JWT_SECRET with
                                           `claims` -- PostgREST runs the request as that user (RLS on)
    count_rows(client, table, ...)      -> int; a HEAD request with Prefer: count=exact and limit 1,
                                           the count read from Content-Range ("0-0/42"): no row ever
                                           crosses the wire, so the 1000-row response cap never matters
    cross_tenant_read(settings, ...)    -> (own_count, cross_count) as one tenant user
    session_client(settings, token)     -> a client whose bearer is a REAL access token (issued by Auth)
    anon_client(settings)               -> the anon key alone (no user)
    admin_create_user / sign_in / admin_delete_user
                                        -> the Auth admin API (service role) and password sign-in: a test
                                           user with app_metadata, its access token, its deletion. Works on
                                           projects with asymmetric JWT signing keys (Auth signs the token).

Errors are one line (opsproof.errors); a key, the JWT secret or a minted token never appears in one.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, SupabaseException, create_client

from opsproof import clock
from opsproof.config import Settings
from opsproof.errors import OpsproofError, UsageError

TOKEN_TTL = timedelta(minutes=15)
REST_TIMEOUT_S = 20.0
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

# Settings field -> the variable the user sets.
_ENV_NAMES = {
    "supabase_url": "SUPABASE_URL",
    "anon_key": "SUPABASE_ANON_KEY",
    "service_role_key": "SUPABASE_SERVICE_ROLE_KEY",
    "jwt_secret": "SUPABASE_JWT_SECRET",
}


def _require(settings: Settings, field: str, why: str) -> str:
    value = getattr(settings, field, None)
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if not raw or not str(raw).strip():
        raise UsageError(f"missing setting {_ENV_NAMES[field]}: needed {why}")
    return str(raw).strip()


def _url(settings: Settings) -> str:
    url = _require(settings, "supabase_url", "for the hosted REST API").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise UsageError("bad setting SUPABASE_URL: expected https://<project-ref>.supabase.co")
    return url


def _options(authorization: str | None = None, schema: str = "public") -> ClientOptions:
    # Our own httpx client (timeouts set here, as supabase-py now asks); `close()` releases it.
    opts = ClientOptions(schema=schema, auto_refresh_token=False, persist_session=False,
                         httpx_client=httpx.Client(timeout=REST_TIMEOUT_S, follow_redirects=True))
    if authorization is not None:
        # An explicit Authorization header: create_client keeps it and does not look for a session.
        opts.headers["Authorization"] = authorization
    return opts


def _create(url: str, key: str, options: ClientOptions) -> Client:
    try:
        return create_client(url, key, options=options)
    except SupabaseException as exc:
        options.httpx_client.close()
        # supabase-py's messages name the argument, never its value.
        raise UsageError(f"cannot build the Supabase client: {exc.message}") from None


def service_client(settings: Settings) -> Client:
    """A client with the service_role key: sees every row (RLS bypassed). For reads the suite owns."""
    url = _url(settings)
    key = _require(settings, "service_role_key", "for service-role REST reads")
    return _create(url, key, _options())


def user_claims(tenant_id: Any, app_role: str, *, sub: Any = None, ttl: timedelta = TOKEN_TTL) -> dict:
    """The claims a tenant user's access token carries (the shape the TMS's RLS policies read)."""
    now = clock.now()
    return {
        "sub": str(sub or uuid.uuid5(uuid.NAMESPACE_URL, f"opsproof:{tenant_id}:{app_role}")),
        "role": "authenticated",
        "aud": "authenticated",
        "tenant_id": str(tenant_id),
        "app_role": app_role,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }


def mint_token(settings: Settings, claims: dict) -> str:
    """An HS256 access token as GoTrue would issue it, signed with SUPABASE_JWT_SECRET.

    role/aud default to "authenticated", iat to now and exp to now + 15 minutes; UUIDs become strings.
    """
    secret = _require(settings, "jwt_secret", "to mint per-user JWTs")
    if not claims.get("sub"):
        raise UsageError("user claims need a 'sub' (the user id)")
    now = clock.now()
    payload = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in claims.items()}
    payload.setdefault("role", "authenticated")
    payload.setdefault("aud", "authenticated")
    payload.setdefault("iat", int(now.timestamp()))
    payload.setdefault("exp", int((now + TOKEN_TTL).timestamp()))
    return jwt.encode(payload, secret, algorithm="HS256")


def user_client(settings: Settings, claims: dict) -> Client:
    """A client that PostgREST treats as the user in `claims`: apikey = anon key, bearer = minted JWT."""
    url = _url(settings)
    anon = _require(settings, "anon_key", "as the apikey of per-user REST requests")
    token = mint_token(settings, claims)
    return _create(url, anon, _options(authorization=f"Bearer {token}"))


def close(client: Client) -> None:
    """Release the client's HTTP connections (one httpx client shared by PostgREST, GoTrue, storage)."""
    http_client = getattr(client.options, "httpx_client", None)
    if http_client is not None:
        http_client.close()


def _one_line(text: Any, limit: int = 200) -> str:
    return " ".join(str(text or "").split())[:limit]


def count_rows(client: Client, table: str, schema: str = "public", tenant_id: Any = None, *,
               tenant_column: str = "tenant_id") -> int:
    """Exact row count of schema.table visible to `client` (optionally one tenant's rows).

    HEAD + Prefer: count=exact + limit=1: PostgREST answers with headers only and the total in
    Content-Range ("0-0/42", or "*/0" when nothing is visible). Rows hidden by RLS are not counted.
    """
    for name, value in (("table", table), ("schema", schema), ("tenant column", tenant_column)):
        if not _IDENT.match(value or ""):
            raise UsageError(f"bad {name} name {value!r}")
    where = f"{schema}.{table}" + (f" ({tenant_column}={tenant_id})" if tenant_id is not None else "")
    query = client.schema(schema).from_(table).select("*", count="exact", head=True)
    if tenant_id is not None:
        query = query.eq(tenant_column, str(tenant_id))
    query = query.limit(1)
    try:
        response = query.execute()
    except APIError as exc:
        raise OpsproofError(_describe_api_error(exc, where)) from None
    except httpx.TimeoutException:
        raise OpsproofError(f"REST count of {where}: the API timed out") from None
    except httpx.HTTPError as exc:
        raise OpsproofError(f"REST count of {where}: API unreachable ({type(exc).__name__})") from None
    if response.count is None:
        raise OpsproofError(f"REST count of {where}: the API returned no count (no Content-Range total)")
    return int(response.count)


def _describe_api_error(exc: APIError, where: str) -> str:
    code = str(exc.code or "")
    message = _one_line(exc.message)
    if code in {"401", "PGRST301", "PGRST302", "PGRST303"} or "jwt" in message.lower():
        return f"REST count of {where}: the API refused the key or token ({code or 'unauthorized'})"
    if code in {"404", "PGRST205", "PGRST106", "42P01"}:
        return f"REST count of {where}: table not found or not exposed by the API ({code})"
    if code in {"403", "42501"}:
        return f"REST count of {where}: permission denied ({code})"
    return f"REST count of {where} failed: {code} {message}".rstrip()


def cross_tenant_read(settings: Settings, table: str, as_tenant: Any, as_role: str, read_tenant: Any, *,
                      schema: str = "public", tenant_column: str = "tenant_id") -> tuple[int, int]:
    """(own_count, cross_count): rows of `table` a user of `as_tenant` with `as_role` sees of its own
    tenant and of `read_tenant`. Isolation holds when cross_count == 0 (and own_count > 0 shows the
    read path works at all)."""
    client = user_client(settings, user_claims(as_tenant, as_role))
    try:
        own = count_rows(client, table, schema, tenant_id=as_tenant, tenant_column=tenant_column)
        cross = count_rows(client, table, schema, tenant_id=read_tenant, tenant_column=tenant_column)
    finally:
        close(client)
    return own, cross


# -- real users through the Auth API (no minted tokens) -------------------------------------------------------

def session_client(settings: Settings, access_token: str) -> Client:
    """A client that presents `access_token` (issued by Supabase Auth) as the bearer, the anon key as apikey."""
    url = _url(settings)
    anon = _require(settings, "anon_key", "as the apikey of per-user REST requests")
    return _create(url, anon, _options(authorization=f"Bearer {access_token}"))


def anon_client(settings: Settings) -> Client:
    """The public anon key alone: what anyone on the internet can present."""
    url = _url(settings)
    return _create(url, _require(settings, "anon_key", "for anonymous REST reads"), _options())


def _auth_error(what: str, exc: BaseException) -> OpsproofError:
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    if status in (401, 403):
        return UsageError(f"Auth API {what}: the key was refused ({status})")
    if isinstance(exc, httpx.TimeoutException):
        return OpsproofError(f"Auth API {what}: timed out")
    if isinstance(exc, httpx.HTTPError):
        return OpsproofError(f"Auth API {what}: unreachable ({type(exc).__name__})")
    return OpsproofError(f"Auth API {what} failed: {status or ''} {code or type(exc).__name__}".replace("  ", " "))


def admin_create_user(admin: Client, email: str, password: str, app_metadata: dict) -> str:
    """Create a confirmed user with server-controlled app_metadata (tenant_id, app_role); returns its id."""
    try:
        res = admin.auth.admin.create_user({"email": email, "password": password, "email_confirm": True,
                                            "app_metadata": app_metadata})
    except Exception as exc:  # noqa: BLE001 - supabase_auth raises its own hierarchy and httpx errors
        raise _auth_error("create user", exc) from None
    if res is None or res.user is None or not res.user.id:
        raise OpsproofError("Auth API create user: no user in the answer")
    return str(res.user.id)


def sign_in(settings: Settings, email: str, password: str) -> str:
    """Password sign-in as that user; returns the access token Auth issued (whatever its signing key)."""
    client = anon_client(settings)
    try:
        res = client.auth.sign_in_with_password({"email": email, "password": password})
    except Exception as exc:  # noqa: BLE001
        raise _auth_error("sign in", exc) from None
    finally:
        close(client)
    if res is None or res.session is None or not res.session.access_token:
        raise OpsproofError("Auth API sign in: no session in the answer")
    return res.session.access_token


def admin_delete_user(admin: Client, user_id: str) -> None:
    try:
        admin.auth.admin.delete_user(user_id)
    except Exception as exc:  # noqa: BLE001
        raise _auth_error("delete user", exc) from None

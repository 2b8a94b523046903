"""opsproof.target.rest against recorded PostgREST answers (respx): clients, JWTs, HEAD counts, errors."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
import respx
from freezegun import freeze_time

from opsproof.errors import OpsproofError, UsageError
from opsproof.target import rest
from supabase_recordings import (ANON_KEY, JWT_SECRET, SERVICE_KEY, URL, assert_clean_one_line, make_settings,
                                 response)

REST = f"{URL}/rest/v1"
TENANT_A = uuid.UUID("11111111-1111-4111-8111-111111111111")
TENANT_B = uuid.UUID("22222222-2222-4222-8222-222222222222")


@pytest.fixture
def settings():
    return make_settings()


@pytest.fixture
def api():
    # Only HEAD routes are mocked: a GET (rows on the wire) would find no route and fail the test.
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        yield mock


def claims(**kw):
    base = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated",
            "tenant_id": str(TENANT_A), "app_role": "dispatcher", "exp": int(time.time()) + 600}
    base.update(kw)
    return base


def bearer(request: httpx.Request) -> str:
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


# --- clients ---------------------------------------------------------------------------------------

def test_service_client_sends_the_service_role_key(settings, api):
    route = api.head(f"{REST}/loads").mock(return_value=response("rest_count_head"))
    client = rest.service_client(settings)
    assert rest.count_rows(client, "loads") == 42
    req = route.calls.last.request
    assert req.headers["apikey"] == SERVICE_KEY
    assert bearer(req) == SERVICE_KEY


def test_user_client_bearer_is_a_jwt_with_the_claims(settings, api):
    route = api.head(f"{REST}/loads").mock(return_value=response("rest_count_head"))
    given = claims()
    client = rest.user_client(settings, given)
    rest.count_rows(client, "loads")
    req = route.calls.last.request
    assert req.headers["apikey"] == ANON_KEY
    token = bearer(req)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert {k: decoded[k] for k in given} == given
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-another-secret-another-secret", algorithms=["HS256"],
                   audience="authenticated")


@freeze_time("2025-06-12T10:00:00Z")
def test_mint_token_fills_role_aud_iat_exp_from_the_clock(settings):
    token = rest.mint_token(settings, {"sub": TENANT_A, "tenant_id": TENANT_B, "app_role": "carrier"})
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="authenticated",
                         options={"verify_exp": False})
    now = 1749722400
    assert decoded == {"sub": str(TENANT_A), "tenant_id": str(TENANT_B), "app_role": "carrier",
                       "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 900}


def test_user_claims_shape():
    c = rest.user_claims(TENANT_A, "dispatcher")
    assert set(c) == {"sub", "role", "aud", "tenant_id", "app_role", "iat", "exp"}
    assert c["role"] == c["aud"] == "authenticated" and c["tenant_id"] == str(TENANT_A)
    assert c["sub"] == rest.user_claims(TENANT_A, "dispatcher")["sub"]  # stable per tenant+role
    assert c["sub"] != rest.user_claims(TENANT_B, "dispatcher")["sub"]
    uuid.UUID(c["sub"])


def test_claims_without_sub_are_refused(settings):
    with pytest.raises(UsageError, match="sub"):
        rest.user_client(settings, {"role": "authenticated", "tenant_id": str(TENANT_A)})


@pytest.mark.parametrize(("field", "env", "build"), [
    ("supabase_url", "SUPABASE_URL", "service"),
    ("service_role_key", "SUPABASE_SERVICE_ROLE_KEY", "service"),
    ("supabase_url", "SUPABASE_URL", "user"),
    ("anon_key", "SUPABASE_ANON_KEY", "user"),
    ("jwt_secret", "SUPABASE_JWT_SECRET", "user"),
])
def test_missing_setting_is_one_clear_line_naming_it(field, env, build):
    s = make_settings(**{field: None})
    with pytest.raises(UsageError) as err:
        rest.service_client(s) if build == "service" else rest.user_client(s, claims())
    msg = str(err.value)
    assert msg.startswith(f"missing setting {env}:")
    assert err.value.exit_code == 2
    assert_clean_one_line(msg)


def test_blank_secret_counts_as_missing():
    with pytest.raises(UsageError, match="SUPABASE_SERVICE_ROLE_KEY"):
        rest.service_client(make_settings(service_role_key="  "))


def test_bad_url_is_a_usage_error():
    with pytest.raises(UsageError, match="bad setting SUPABASE_URL"):
        rest.service_client(make_settings(supabase_url="abcdefghijklmnopqrst.supabase.co"))


# --- count_rows --------------------------------------------------------------------------------------

def test_count_is_a_head_request_with_prefer_count_exact_and_limit(settings, api):
    route = api.head(f"{REST}/loads").mock(return_value=response("rest_count_head"))
    assert rest.count_rows(rest.service_client(settings), "loads") == 42
    req = route.calls.last.request
    assert req.method == "HEAD"
    assert "count=exact" in req.headers["prefer"]
    assert req.url.params["limit"] == "1"
    assert req.url.params["select"] == "*"
    assert req.headers["accept-profile"] == "public"


def test_counts_beyond_the_1000_row_cap_are_exact_and_carry_no_rows(settings, api):
    route = api.head(f"{REST}/ops_requests").mock(return_value=response("rest_count_head_large"))
    assert rest.count_rows(rest.service_client(settings), "ops_requests") == 183402
    assert route.calls.last.response.content == b""
    assert all(c.request.method == "HEAD" for c in api.calls)


def test_empty_range_counts_zero(settings, api):
    api.head(f"{REST}/loads").mock(return_value=response("rest_count_head_empty"))
    assert rest.count_rows(rest.service_client(settings), "loads") == 0


def test_tenant_filter_and_schema_profile(settings, api):
    route = api.head(f"{REST}/agent_tasks").mock(return_value=response("rest_count_head"))
    rest.count_rows(rest.service_client(settings), "agent_tasks", schema="ops", tenant_id=TENANT_B)
    req = route.calls.last.request
    assert req.url.params["tenant_id"] == f"eq.{TENANT_B}"
    assert req.headers["accept-profile"] == "ops"


@pytest.mark.parametrize("content_range", [None, "0-0/*"])
def test_no_total_is_an_error_not_a_zero(settings, api, content_range):
    headers = {"content-range": content_range} if content_range else {}
    api.head(f"{REST}/loads").mock(return_value=httpx.Response(200, headers=headers))
    with pytest.raises(OpsproofError, match="no count"):
        rest.count_rows(rest.service_client(settings), "loads")


def test_bad_identifiers_never_reach_the_wire(settings, api):
    for bad in ({"table": "loads?select=*"}, {"table": "x", "schema": "ops;drop"}):
        with pytest.raises(UsageError):
            rest.count_rows(rest.service_client(settings), **bad)
    assert not api.calls


# --- errors: one line, no keys, no token -------------------------------------------------------------

def test_401_is_one_line_without_keys_or_token(settings, api):
    api.head(f"{REST}/loads").mock(return_value=response("rest_401_head"))
    client = rest.user_client(settings, claims())
    token = client.options.headers["Authorization"].split()[1]
    with pytest.raises(OpsproofError) as err:
        rest.count_rows(client, "loads")
    msg = str(err.value)
    assert "refused the key or token" in msg and "PGRST301" in msg
    assert_clean_one_line(msg, token)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_unknown_table_404(settings, api):
    api.head(f"{REST}/load").mock(return_value=response("rest_404_head"))
    with pytest.raises(OpsproofError) as err:
        rest.count_rows(rest.service_client(settings), "load")
    assert "public.load: table not found or not exposed" in str(err.value)
    assert_clean_one_line(str(err.value))


def test_timeout_is_one_line(settings, api):
    api.head(f"{REST}/loads").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(OpsproofError) as err:
        rest.count_rows(rest.service_client(settings), "loads")
    assert str(err.value) == "REST count of public.loads: the API timed out"


def test_unreachable_is_one_line(settings, api, monkeypatch):
    monkeypatch.setattr("postgrest._sync.request_builder.time.sleep", lambda s: None)  # its retries
    api.head(f"{REST}/loads").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(OpsproofError) as err:
        rest.count_rows(rest.service_client(settings), "loads")
    assert str(err.value) == "REST count of public.loads: API unreachable (ConnectError)"


# --- cross_tenant_read -------------------------------------------------------------------------------

def test_cross_tenant_read_counts_own_and_other_tenant_as_one_user(settings, api):
    own = api.head(f"{REST}/loads", params={"tenant_id": f"eq.{TENANT_A}"}).mock(
        return_value=response("rest_count_head"))
    cross = api.head(f"{REST}/loads", params={"tenant_id": f"eq.{TENANT_B}"}).mock(
        return_value=response("rest_count_head_empty"))
    assert rest.cross_tenant_read(settings, "loads", TENANT_A, "dispatcher", TENANT_B) == (42, 0)
    tokens = {bearer(r.calls.last.request) for r in (own, cross)}
    assert len(tokens) == 1  # the same user asked both questions
    decoded = jwt.decode(tokens.pop(), JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert decoded["tenant_id"] == str(TENANT_A) and decoded["app_role"] == "dispatcher"
    assert decoded["role"] == "authenticated"
    assert all(c.request.headers["apikey"] == ANON_KEY for c in api.calls)


def test_cross_tenant_read_reports_a_leak_as_a_count(settings, api):
    api.head(f"{REST}/loads", params={"tenant_id": f"eq.{TENANT_A}"}).mock(return_value=response("rest_count_head"))
    api.head(f"{REST}/loads", params={"tenant_id": f"eq.{TENANT_B}"}).mock(
        return_value=httpx.Response(200, headers={"content-range": "0-0/7"}))
    assert rest.cross_tenant_read(settings, "loads", TENANT_A, "dispatcher", TENANT_B) == (42, 7)


def test_cross_tenant_read_needs_the_jwt_secret(api):
    with pytest.raises(UsageError, match="^missing setting SUPABASE_JWT_SECRET"):
        rest.cross_tenant_read(make_settings(jwt_secret=None), "loads", TENANT_A, "dispatcher", TENANT_B)
    assert not api.calls


def test_close_releases_the_http_client(settings):
    client = rest.service_client(settings)
    rest.close(client)
    assert client.options.httpx_client.is_closed

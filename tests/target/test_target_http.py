"""opsproof.target.http against recorded Management API answers (respx), and the signed-request scheme."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone

import httpx
import pytest
import respx
from freezegun import freeze_time

from opsproof.errors import OpsproofError, UsageError
from opsproof.plane import ingest
from opsproof.target import http
from supabase_recordings import ACCESS_TOKEN, REF, assert_clean_one_line, recorded, response

BASE = "https://api.supabase.com"
PROJECT = f"{BASE}/v1/projects/{REF}"
SIGNING_KEY = "n8n-signing-key-0123456789abcdef"


@pytest.fixture
def api():
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
def mgmt():
    with http.ManagementApi(ACCESS_TOKEN, REF) as m:
        yield m


# --- backups -----------------------------------------------------------------------------------------

def test_backups_parse_into_models_and_send_the_token(api, mgmt):
    route = api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_backups"))
    backups = mgmt.backups()
    assert [b.status for b in backups] == ["COMPLETED", "COMPLETED", "COMPLETED", "PENDING", "FAILED"]
    assert all(isinstance(b, http.Backup) for b in backups)
    assert backups[0].id == 48123907 and backups[0].is_physical_backup
    assert backups[0].inserted_at == datetime(2025, 6, 12, 3, 7, 41, 512000, tzinfo=timezone.utc)
    req = route.calls.last.request
    assert req.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_backup_status_keeps_the_whole_document(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_backups_pitr"))
    doc = mgmt.backup_status()
    assert doc.region == "us-east-1" and doc.pitr_enabled and doc.walg_enabled and doc.backups == []
    assert doc.physical_backup_data.latest_physical_backup_date_unix == 1749769200


@freeze_time("2025-06-13T09:07:41.512Z")
def test_latest_backup_age_is_the_newest_completed_one(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_backups"))
    # newest COMPLETED is 2025-06-12T03:07:41.512Z (the PENDING one of the 13th does not count)
    assert mgmt.latest_backup_age_hours() == pytest.approx(30.0)


def test_latest_backup_age_with_pitr_uses_the_latest_physical_point(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_backups_pitr"))
    now = datetime.fromtimestamp(1749769200 + 2 * 3600, tz=timezone.utc)
    assert mgmt.latest_backup_age_hours(now=now) == pytest.approx(2.0)


def test_no_backup_at_all_cannot_be_measured(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_backups_none"))
    with pytest.raises(OpsproofError, match=f"no completed backup on record for project {REF}"):
        mgmt.latest_backup_age_hours()


def test_unexpected_backup_shape_is_one_line(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=httpx.Response(200, json={"backups": [{"id": 1}]}))
    with pytest.raises(OpsproofError) as err:
        mgmt.backups()
    assert_clean_one_line(str(err.value))


# --- health ------------------------------------------------------------------------------------------

def test_health_maps_service_to_status(api, mgmt):
    route = api.get(f"{PROJECT}/health").mock(return_value=response("mgmt_health"))
    assert mgmt.health() == {"db": "ACTIVE_HEALTHY", "rest": "ACTIVE_HEALTHY", "auth": "COMING_UP"}
    assert route.calls.last.request.url.params.get_list("services") == ["db", "rest", "auth"]


def test_health_missing_a_requested_service_is_an_error(api, mgmt):
    body = [e for e in recorded("mgmt_health")["body"] if e["name"] != "rest"]
    api.get(f"{PROJECT}/health").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(OpsproofError, match="no status for rest"):
        mgmt.health()


def test_health_of_a_subset(api, mgmt):
    body = [e for e in recorded("mgmt_health")["body"] if e["name"] == "db"]
    route = api.get(f"{PROJECT}/health").mock(return_value=httpx.Response(200, json=body))
    assert mgmt.health(services=("db",)) == {"db": "ACTIVE_HEALTHY"}
    assert route.calls.last.request.url.params.get_list("services") == ["db"]


# --- advisors ----------------------------------------------------------------------------------------

def test_security_advisors(api, mgmt):
    api.get(f"{PROJECT}/advisors/security").mock(return_value=response("mgmt_advisors_security"))
    lints = mgmt.security_advisors()
    assert [(x.name, x.level) for x in lints] == [("rls_disabled_in_public", "ERROR"),
                                                   ("function_search_path_mutable", "WARN")]
    assert lints[0].metadata == {"name": "rate_cards", "type": "table", "schema": "public"}


# --- errors: one line, never the token ---------------------------------------------------------------

@pytest.mark.parametrize("call", ["backups", "health", "security_advisors"])
def test_401_means_the_token_was_refused(api, mgmt, call):
    api.get(url__startswith=PROJECT).mock(return_value=response("mgmt_401"))
    with pytest.raises(UsageError) as err:
        getattr(mgmt, call)()
    assert str(err.value) == "Management API refused the token"
    assert err.value.exit_code == 2


def test_404_names_the_unknown_project_ref(api, mgmt):
    api.get(f"{PROJECT}/database/backups").mock(return_value=response("mgmt_404"))
    with pytest.raises(UsageError) as err:
        mgmt.backups()
    assert str(err.value).startswith(f"unknown project ref {REF}")
    assert_clean_one_line(str(err.value))


@pytest.mark.parametrize(("effect", "expected"), [
    (httpx.ReadTimeout("read timed out"), "timed out"),
    (httpx.ConnectTimeout("connect timed out"), "timed out"),
    (httpx.ConnectError("name resolution failed"), "unreachable (ConnectError)"),
])
def test_transport_failures_are_one_line_opsproof_errors(api, mgmt, effect, expected):
    api.get(f"{PROJECT}/health").mock(side_effect=effect)
    with pytest.raises(OpsproofError) as err:
        mgmt.health()
    assert type(err.value) is OpsproofError and err.value.exit_code == 1
    assert str(err.value) == f"Management API GET /v1/projects/{REF}/health: {expected}"
    assert err.value.__suppress_context__


@pytest.mark.parametrize("status", [429, 500, 503])
def test_server_side_failures_are_one_line(api, mgmt, status):
    api.get(f"{PROJECT}/database/backups").mock(
        return_value=httpx.Response(status, json={"message": f"echo {ACCESS_TOKEN}"}))
    with pytest.raises(OpsproofError) as err:
        mgmt.backups()
    assert type(err.value) is OpsproofError
    assert_clean_one_line(str(err.value))


def test_token_is_not_in_repr_and_missing_token_or_bad_ref_are_usage_errors():
    m = http.ManagementApi(ACCESS_TOKEN, REF)
    assert ACCESS_TOKEN not in repr(m)
    m.close()
    with pytest.raises(UsageError, match="^missing setting SUPABASE_ACCESS_TOKEN"):
        http.ManagementApi("", REF)
    with pytest.raises(UsageError, match="SUPABASE_PROJECT_REF") as err:
        http.ManagementApi(ACCESS_TOKEN, "../evil")
    assert_clean_one_line(str(err.value))


def test_custom_base_url(api):
    route = api.get("http://127.0.0.1:54321/v1/projects/localref/health").mock(
        return_value=response("mgmt_health"))
    with http.ManagementApi(ACCESS_TOKEN, "localref", base_url="http://127.0.0.1:54321/") as m:
        assert m.health()["db"] == "ACTIVE_HEALTHY"
    assert route.called


# --- signed requests ---------------------------------------------------------------------------------

def test_sign_request_is_hmac_sha256_over_ts_dot_body():
    body = b'{"event":"load.tendered","load_id":"L-1001"}'
    headers = http.sign_request(SIGNING_KEY, body, 1749722400)
    expected = hmac.new(SIGNING_KEY.encode(), b"1749722400." + body, hashlib.sha256).hexdigest()
    assert headers == {"X-Timestamp": "1749722400", "X-Signature": expected}
    # ... and the plane's ingest accepts it
    assert ingest.verify(SIGNING_KEY.encode(), headers["X-Timestamp"], headers["X-Signature"], body,
                         tolerance_s=300, now=1749722400) is None
    assert ingest.verify(SIGNING_KEY.encode(), headers["X-Timestamp"], headers["X-Signature"], body + b" ",
                         tolerance_s=300, now=1749722400) == "bad signature"


@freeze_time("2025-06-12T10:00:00Z")
def test_post_signed_sends_body_signature_and_idempotency_key(api):
    url = "http://127.0.0.1:8787/webhooks/n8n"
    route = api.post(url).mock(return_value=httpx.Response(
        201, json={"status": "accepted", "event_id": 7, "idempotency_key": "idem-1"}))
    resp = http.post_signed(url, SIGNING_KEY, {"load_id": "L-1001", "event": "load.tendered"}, "idem-1")
    assert resp.status_code == 201
    req = route.calls.last.request
    assert req.headers["x-timestamp"] == "1749722400"
    assert req.headers["idempotency-key"] == "idem-1"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {"load_id": "L-1001", "event": "load.tendered"}
    assert ingest.verify(SIGNING_KEY.encode(), req.headers["x-timestamp"], req.headers["x-signature"],
                         req.content, tolerance_s=300, now=1749722400) is None
    assert SIGNING_KEY not in req.headers.values()


def test_post_signed_returns_non_2xx_for_the_caller_to_judge(api):
    url = "http://127.0.0.1:8787/webhooks/n8n"
    api.post(url).mock(return_value=httpx.Response(409, json={"status": "accepted"},
                                                   headers={"Idempotent-Replayed": "true"}))
    resp = http.post_signed(url, SIGNING_KEY, b'{"a":1}', "idem-2", ts=1749722400)
    assert resp.status_code == 409 and resp.headers["idempotent-replayed"] == "true"


def test_post_signed_timeout_is_one_line_without_the_key_or_query(api):
    url = "http://127.0.0.1:8787/webhooks/n8n?token=query-secret-value"
    api.post(url__startswith="http://127.0.0.1:8787/webhooks/n8n").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(OpsproofError) as err:
        http.post_signed(url, SIGNING_KEY, b"{}", "idem-3")
    assert str(err.value) == "signed POST to http://127.0.0.1:8787/webhooks/n8n: timed out"
    assert_clean_one_line(str(err.value), SIGNING_KEY, "query-secret-value")


def test_post_signed_needs_key_and_idempotency_key(api):
    with pytest.raises(UsageError):
        http.post_signed("http://127.0.0.1:8787/x", "", b"{}", "idem")
    with pytest.raises(UsageError):
        http.post_signed("http://127.0.0.1:8787/x", SIGNING_KEY, b"{}", "")
    assert not api.calls

"""The platform sources wired into controls, against recorded answers in the documented shapes (respx):
gateway SLOs (logs query over edge_logs), the Metrics API (Prometheus text), advisors and backups through the
Management API (configurable base URL), the Auth admin API and PostgREST reads as signed-in users."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
import respx

from opsproof.errors import OpsproofError, UsageError
from opsproof.measure import advisors, backups, gateway, resources, tenancy_api
from opsproof.recorder import MeasurementError
from opsproof.target import http, rest
from supabase_recordings import (ACCESS_TOKEN, RECORDED, REF, SERVICE_KEY, URL, assert_clean_one_line, make_settings,
                                 recorded, response)

API = "https://api.example.test"
END = datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)


def _api(**kw):
    return http.from_settings(make_settings(api_url=API, **kw))


# -- configuration ----------------------------------------------------------------------------------------

def test_from_settings_uses_the_configured_base_url_and_needs_token_and_ref():
    assert http.from_settings(make_settings(access_token=None)) is None
    assert http.from_settings(make_settings(project_ref=None)) is None
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{API}/v1/projects/{REF}/database/backups").mock(return_value=response("mgmt_backups_pitr"))
        with _api() as api:
            assert api.backup_status().pitr_enabled


# -- gateway SLOs -------------------------------------------------------------------------------------------

def test_gateway_slo_from_the_logs_query():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{API}/v1/projects/{REF}/analytics/endpoints/logs.all").mock(
            return_value=response("mgmt_logs_edge_slo"))
        with _api() as api:
            m = gateway.slo(api, END - timedelta(hours=24), END, 98.0, burn_hours=[1, 6])
    sent = route.calls.last.request.url.params
    assert "from edge_logs" in sent["sql"] and "response.status_code >= 500" in sent["sql"]
    assert "requests_1h" in sent["sql"] and "requests_6h" in sent["sql"]
    assert sent["iso_timestamp_start"] == "2026-12-02T06:00:00.000Z"
    assert sent["iso_timestamp_end"] == "2026-12-03T06:00:00.000Z"
    assert route.calls.last.request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    doc = m.result
    assert m.source == "management-api:logs" and sent["sql"] in m.query
    assert doc["requests"] == 12840 and doc["errors"] == 31 and doc["p95_ms"] == 412.0
    assert doc["success_pct"] == round(100 * (12840 - 31) / 12840, 4)
    assert doc["burn_rates"] == {"1h": round((1 / 540) / 0.02, 4), "6h": round((7 / 3210) / 0.02, 4)}
    assert doc["error_budget"]["success"]["failures"] == 31


def test_gateway_slo_splits_windows_longer_than_24h_and_reports_the_worst_p95():
    rows = iter([{"requests": 100, "errors": 0, "p95_ms": 300.0},
                 {"requests": 200, "errors": 2, "p95_ms": 900.0, "requests_1h": 10, "errors_1h": 0,
                  "requests_6h": 50, "errors_6h": 1}])
    with respx.mock() as mock:
        route = mock.get(f"{API}/v1/projects/{REF}/analytics/endpoints/logs.all").mock(
            side_effect=lambda req: httpx.Response(200, json={"result": [next(rows)], "error": None}))
        with _api() as api:
            m = gateway.slo(api, END - timedelta(hours=48), END, 98.0, burn_hours=[1, 6])
    assert route.call_count == 2
    assert "requests_1h" not in route.calls[0].request.url.params["sql"]  # the burn windows sit in the last day
    assert m.result["requests"] == 300 and m.result["errors"] == 2 and m.result["p95_ms"] == 900.0
    assert "upper bound" in m.result["p95_how"]


def test_gateway_logs_error_document_is_an_error_never_an_empty_result():
    with respx.mock() as mock:
        mock.get(f"{API}/v1/projects/{REF}/analytics/endpoints/logs.all").mock(return_value=response("mgmt_logs_error"))
        with _api() as api, pytest.raises(OpsproofError) as err:
            gateway.slo(api, END - timedelta(hours=1), END)
    assert "logs query failed" in str(err.value)
    assert_clean_one_line(str(err.value))


def test_gateway_logs_refused_token_is_one_line():
    with respx.mock() as mock:
        mock.get(f"{API}/v1/projects/{REF}/analytics/endpoints/logs.all").mock(return_value=response("mgmt_401"))
        with _api() as api, pytest.raises(UsageError) as err:
            gateway.slo(api, END - timedelta(hours=1), END)
    assert_clean_one_line(str(err.value))


# -- Metrics API ------------------------------------------------------------------------------------------------

def test_metrics_api_parsed_with_prometheus_client():
    text = (RECORDED / "metrics_api.prom").read_text()
    settings = make_settings()
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(f"{URL}/customer/v1/privileged/metrics").mock(return_value=httpx.Response(200, text=text))
        m = resources.measure(None, settings, 1)
    auth = route.calls.last.request.headers["authorization"]
    assert auth == "Basic " + base64.b64encode(f"service_role:{SERVICE_KEY}".encode()).decode()
    doc = m.result
    assert m.source == "metrics-api" and SERVICE_KEY not in m.query
    assert doc["disk"]["mountpoint"] == "/data" and doc["disk"]["used_pct"] == 35.0
    assert doc["connections"] == {**doc["connections"], "used": 18, "max": 60, "used_pct": 30.0}
    assert doc["memory"]["used_pct"] == 60.0
    assert doc["cpu"]["cpus"] == 2 and doc["cpu"]["busy_pct_since_boot"] == 18.0


def test_metrics_api_refused_key_and_garbage():
    with respx.mock() as mock:
        mock.get(f"{URL}/customer/v1/privileged/metrics").mock(return_value=httpx.Response(401, text="no"))
        with pytest.raises(UsageError) as err:
            resources.measure(None, make_settings(), 1)
    assert_clean_one_line(str(err.value))
    with pytest.raises(MeasurementError):
        resources.parse_metrics("")
    doc = resources.parse_metrics("# TYPE up gauge\nup 1\n")
    assert doc["disk"] is None and doc["connections"] is None  # the checks turn a missing figure into an error


def test_resources_without_the_metrics_api_read_postgres():
    class FakeTarget:
        def rows(self, statement, params=None):
            assert statement == resources.SQL
            return [{"db_bytes": 1024 ** 3, "connections": 20, "max_connections": 200}]

    m = resources.measure(FakeTarget(), make_settings(supabase_url=None), 4 * 1024 ** 3)
    assert m.source == "sql" and m.query == resources.SQL
    assert m.result["disk"]["used_pct"] == 25.0 and m.result["connections"]["used_pct"] == 10.0


# -- advisors -------------------------------------------------------------------------------------------------

def test_advisors_through_the_management_api_find_the_canary(monkeypatch):
    body = recorded("mgmt_advisors_security")["body"]
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{API}/v1/projects/{REF}/advisors/security").mock(return_value=httpx.Response(200, json=body))
        with _api() as api:
            m = advisors.scan_api(api, "public.rate_cards")
    assert m.source == "management-api" and m.query == f"GET /v1/projects/{REF}/advisors/security"
    assert m.result.canary_reported and [f["name"] for f in m.result.findings] == ["function_search_path_mutable"]


def test_advisors_source_choice(monkeypatch):
    monkeypatch.setattr(advisors, "cli_installed", lambda: False)
    assert advisors.choose_source(make_settings()) == "management-api"
    with pytest.raises(MeasurementError, match="not installed"):
        advisors.choose_source(make_settings(access_token=None))
    monkeypatch.setattr(advisors, "cli_installed", lambda: True)
    assert advisors.choose_source(make_settings()) == "supabase-cli"
    assert advisors.choose_source(make_settings(advisors_source="management-api")) == "management-api"


# -- backups (CAD-001) ----------------------------------------------------------------------------------------

def test_backups_pitr_point_counts_with_its_source():
    class NoRows:
        def rows(self, statement, params=None):
            return []

    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{API}/v1/projects/{REF}/database/backups").mock(return_value=response("mgmt_backups_pitr"))
        reading = backups.measure(NoRows(), management_api=_api, pg_restore=None)
    assert reading.newest is not None and reading.newest.source == "management-api"
    assert reading.newest.kind == "pitr" and "management-api" in reading.sources
    assert any("/database/backups" in r for r in reading.ran)


# -- Auth admin API + PostgREST as signed-in users (SEC-001) ---------------------------------------------------

def test_auth_admin_create_sign_in_delete():
    settings = make_settings()
    created = recorded("auth_admin_create_user")["body"]
    session = recorded("auth_token_password")["body"]
    with respx.mock(assert_all_called=True) as mock:
        create = mock.post(f"{URL}/auth/v1/admin/users").mock(return_value=httpx.Response(200, json=created))
        token = mock.post(f"{URL}/auth/v1/token").mock(return_value=httpx.Response(200, json=session))
        delete = mock.delete(f"{URL}/auth/v1/admin/users/{created['id']}").mock(return_value=httpx.Response(200, json={}))
        admin = rest.service_client(settings)
        uid = rest.admin_create_user(admin, "u@example.com", "pw-123456789", {"tenant_id": "t", "app_role": "viewer"})
        assert uid == created["id"]
        assert rest.sign_in(settings, "u@example.com", "pw-123456789") == "ACCESS_TOKEN"
        rest.admin_delete_user(admin, uid)
        rest.close(admin)
    sent = json.loads(create.calls.last.request.content)
    assert sent["app_metadata"] == {"tenant_id": "t", "app_role": "viewer"} and sent["email_confirm"] is True
    assert create.calls.last.request.headers["apikey"] == SERVICE_KEY
    assert token.calls.last.request.url.params["grant_type"] == "password"
    assert delete.called


def test_auth_admin_refused_key_is_one_line():
    with respx.mock() as mock:
        mock.post(f"{URL}/auth/v1/admin/users").mock(
            return_value=httpx.Response(401, json={"code": 401, "msg": "invalid JWT"}))
        admin = rest.service_client(make_settings())
        with pytest.raises(OpsproofError) as err:
            rest.admin_create_user(admin, "u@example.com", "pw-123456789", {})
        rest.close(admin)
    assert_clean_one_line(str(err.value))


def _count(n: int) -> httpx.Response:
    return httpx.Response(200, headers={"content-range": f"0-0/{n}" if n else "*/0"})


def test_api_matrix_leak_positive_control_and_not_exposed():
    settings = make_settings()
    users = [SimpleNamespace(tenant="t1", app_role="viewer", access_token="tok-t1"),
             SimpleNamespace(tenant="t2", app_role="viewer", access_token="tok-t2")]

    def answer(request: httpx.Request) -> httpx.Response:
        bearer = request.headers["authorization"].removeprefix("Bearer ")
        tenant = request.url.params["tenant_id"].removeprefix("eq.")
        if request.headers.get("accept-profile") == "ops":
            return httpx.Response(406, json={"code": "PGRST106", "message": "The schema must be one of: public"})
        own = bearer == f"tok-{tenant}"
        leaky = request.url.path.endswith("/leaky") and bearer == "tok-t1"
        return _count(3 if own or leaky else 0)

    with respx.mock() as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(side_effect=answer)
        m = tenancy_api.matrix(settings, users, [("public", "loads", "tenant_id"), ("public", "leaky", "tenant_id"),
                                                 ("ops", "requests", "tenant_id")], ["t1", "t2"])
    iso = m.result
    assert m.source == "postgrest-api"
    assert iso.leaks == [{"principal": "t1:viewer", "relation": "public.leaky", "read_tenant": "t2", "rows": 3}]
    assert not iso.unproven() and "ops.requests" in iso.not_exposed
    assert iso.principals == ["anon", "t1:viewer", "t2:viewer"]


def test_api_matrix_zero_everywhere_is_unproven():
    users = [SimpleNamespace(tenant="t1", app_role="viewer", access_token="tok-t1")]
    with respx.mock() as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(return_value=_count(0))
        m = tenancy_api.matrix(make_settings(), users, [("public", "loads", "tenant_id")], ["t1"])
    assert m.result.unproven() == ["public.loads|t1"] and not m.result.leaks

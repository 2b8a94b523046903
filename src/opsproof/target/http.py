"""httpx for the target: the Supabase Management API (backups, health, advisors) and signed webhooks.

ManagementApi(token, project_ref)     GET https://api.supabase.com/v1/projects/{ref}/...
    .backups()                        -> list[Backup]       (/database/backups)
    .backup_status()                  -> BackupsResponse    (the whole document: region, WAL-G, PITR)
    .latest_backup_age_hours()        -> float              (newest COMPLETED backup or PITR point)
    .health(services)                 -> {"db": "ACTIVE_HEALTHY", ...}   (/health?services=...)
    .security_advisors()              -> list[Lint]         (/advisors/security)
    .logs_query(sql, start, end)      -> list[dict]         (/analytics/endpoints/logs.all: edge_logs & co.)
from_settings(settings)               -> ManagementApi | None (SUPABASE_ACCESS_TOKEN + SUPABASE_PROJECT_REF set;
                                                              base URL SUPABASE_API_URL)
metrics_text(settings)                -> (url, Prometheus text) of https://<ref>.supabase.co/customer/v1/
                                         privileged/metrics (HTTP Basic: service_role + the service role key)
sign_request(key, body, ts)           -> {"X-Timestamp", "X-Signature"}: the plane's n8n@ scheme
post_signed(url, key, body, idem)     -> httpx.Response: POST with signature + Idempotency-Key

Errors are one line: 401 -> UsageError("Management API refused the token"), 404 -> UsageError
("unknown project ref ..."), timeouts/unreachable/5xx -> OpsproofError. The token is never in one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsproof import clock
from opsproof.errors import OpsproofError, UsageError
from opsproof.webhook_sig import sign  # the one definition of the n8n@ signature (shared with plane/ingest.py)

DEFAULT_BASE_URL = "https://api.supabase.com"
DEFAULT_TIMEOUT_S = 15.0
HEALTH_SERVICES = ("db", "rest", "auth")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class Backup(BaseModel):
    """One entry of V1BackupsResponse.backups (status: COMPLETED, PENDING, FAILED, REMOVED, ARCHIVED, ...)."""

    model_config = ConfigDict(extra="allow")

    id: int | None = None
    status: str
    is_physical_backup: bool = False
    inserted_at: datetime

    @field_validator("inserted_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _aware(value)


class PhysicalBackupData(BaseModel):
    model_config = ConfigDict(extra="allow")

    earliest_physical_backup_date_unix: int | None = None
    latest_physical_backup_date_unix: int | None = None


class BackupsResponse(BaseModel):
    """GET /v1/projects/{ref}/database/backups."""

    model_config = ConfigDict(extra="allow")

    region: str | None = None
    walg_enabled: bool = False
    pitr_enabled: bool = False
    backups: list[Backup] = Field(default_factory=list)
    physical_backup_data: PhysicalBackupData = Field(default_factory=PhysicalBackupData)


class ServiceHealth(BaseModel):
    """One entry of GET /v1/projects/{ref}/health (status: COMING_UP, ACTIVE_HEALTHY, UNHEALTHY)."""

    model_config = ConfigDict(extra="allow")

    name: str
    healthy: bool | None = None
    status: str
    error: str | None = None


class Lint(BaseModel):
    """One advisor finding (GET /v1/projects/{ref}/advisors/security -> {"lints": [...]})."""

    model_config = ConfigDict(extra="allow")

    name: str
    title: str | None = None
    level: str
    facing: str | None = None
    categories: list[str] = Field(default_factory=list)
    detail: str | None = None
    remediation: str | None = None
    cache_key: str | None = None


class ManagementApi:
    """A read-only client of the Supabase Management API for one project."""

    def __init__(self, token: str, project_ref: str, base_url: str = DEFAULT_BASE_URL, *,
                 timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.BaseTransport | None = None):
        token = (token.get_secret_value() if hasattr(token, "get_secret_value") else token) or ""
        if not token.strip():
            raise UsageError("missing setting SUPABASE_ACCESS_TOKEN: needed for the Management API")
        if not project_ref or not project_ref.strip().isalnum():
            raise UsageError(f"bad setting SUPABASE_PROJECT_REF: {project_ref!r} is not a project ref")
        self.project_ref = project_ref.strip()
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                    headers={"Authorization": f"Bearer {token.strip()}",
                                             "Accept": "application/json"})

    def __repr__(self) -> str:  # never the token
        return f"ManagementApi(project_ref={self.project_ref!r})"

    def __enter__(self) -> ManagementApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: Any = None) -> Any:
        url = f"/v1/projects/{self.project_ref}{path}"
        what = f"Management API GET {url}"
        try:
            resp = self._client.get(url, params=params)
        except httpx.TimeoutException:
            raise OpsproofError(f"{what}: timed out") from None
        except httpx.HTTPError as exc:
            raise OpsproofError(f"{what}: unreachable ({type(exc).__name__})") from None
        if resp.status_code == 401:
            raise UsageError("Management API refused the token")
        if resp.status_code == 403:
            raise UsageError(f"Management API: the token may not read project {self.project_ref}")
        if resp.status_code == 404:
            raise UsageError(f"unknown project ref {self.project_ref} (or {path} is not available for it)")
        if resp.status_code == 429:
            raise OpsproofError(f"{what}: rate limited (429)")
        if not resp.is_success:
            raise OpsproofError(f"{what}: HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise OpsproofError(f"{what}: the answer is not JSON") from None

    def backup_status(self) -> BackupsResponse:
        data = self._get("/database/backups")
        try:
            return BackupsResponse.model_validate(data)
        except ValidationError as exc:
            raise OpsproofError(f"Management API backups: unexpected shape ({exc.error_count()} errors)") from None

    def backups(self) -> list[Backup]:
        return self.backup_status().backups

    def latest_backup_age_hours(self, now: datetime | None = None) -> float:
        """Hours since the newest restorable point: the newest COMPLETED backup, or with PITR the
        latest physical backup time. No restorable point at all is an error (cannot measure)."""
        doc = self.backup_status()
        points = [b.inserted_at for b in doc.backups if b.status.upper() == "COMPLETED"]
        latest_unix = doc.physical_backup_data.latest_physical_backup_date_unix
        if latest_unix:
            points.append(datetime.fromtimestamp(latest_unix, tz=timezone.utc))
        if not points:
            raise OpsproofError(f"no completed backup on record for project {self.project_ref}")
        now = _aware(now or clock.now())
        return max(0.0, (now - max(points)).total_seconds() / 3600)

    def health(self, services: Iterable[str] = HEALTH_SERVICES) -> dict[str, str]:
        """{service: status}, e.g. {"db": "ACTIVE_HEALTHY", "rest": "ACTIVE_HEALTHY", "auth": "COMING_UP"}.

        `services` goes out as repeated query parameters (services=db&services=rest), the OpenAPI
        form the Supabase CLI and dashboard send. A requested service missing from the answer is an error.
        """
        wanted = list(services)
        if not wanted:
            raise UsageError("health: name at least one service")
        data = self._get("/health", params=[("services", s) for s in wanted])
        try:
            entries = [ServiceHealth.model_validate(e) for e in data]
        except (ValidationError, TypeError):
            raise OpsproofError("Management API health: unexpected shape") from None
        out = {e.name: e.status for e in entries}
        missing = [s for s in wanted if s not in out]
        if missing:
            raise OpsproofError(f"Management API health: no status for {', '.join(missing)}")
        return out

    def security_advisors(self) -> list[Lint]:
        data = self._get("/advisors/security")
        try:
            return [Lint.model_validate(x) for x in (data or {}).get("lints", [])]
        except (ValidationError, AttributeError):
            raise OpsproofError("Management API security advisors: unexpected shape") from None

    def logs_query(self, sql: str, start: datetime, end: datetime) -> list[dict]:
        """Rows of one SQL query over the project's logs (edge_logs, auth_logs, ...) between start and end.

        The platform caps a query's range at 24 hours (the caller splits longer windows); the answer is
        {"result": [...], "error": null}: an error in the document is an OpsproofError, never an empty result."""
        if (end - start).total_seconds() > 24 * 3600:
            raise UsageError("logs query: the Management API accepts at most 24 hours per query")
        params = {"sql": sql, "iso_timestamp_start": _iso(start), "iso_timestamp_end": _iso(end)}
        data = self._get("/analytics/endpoints/logs.all", params=params)
        if not isinstance(data, dict):
            raise OpsproofError("Management API logs query: unexpected shape")
        if data.get("error"):
            err = data["error"]
            text = err.get("message") if isinstance(err, dict) else err
            raise OpsproofError(f"Management API logs query failed: {' '.join(str(text).split())[:200]}")
        rows = data.get("result")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise OpsproofError("Management API logs query: no result rows in the answer")
        return rows


def _iso(value: datetime) -> str:
    return _aware(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def from_settings(settings: Any, *, transport: httpx.BaseTransport | None = None) -> ManagementApi | None:
    """The Management API client of a target, or None when SUPABASE_ACCESS_TOKEN / SUPABASE_PROJECT_REF are unset."""
    if getattr(settings, "access_token", None) is None or not getattr(settings, "project_ref", None):
        return None
    base = getattr(settings, "api_url", None) or DEFAULT_BASE_URL
    return ManagementApi(settings.access_token, settings.project_ref, base, transport=transport)


METRICS_PATH = "/customer/v1/privileged/metrics"


def metrics_configured(settings: Any) -> bool:
    return bool(getattr(settings, "supabase_url", None)) and getattr(settings, "service_role_key", None) is not None


def metrics_url(settings: Any) -> str:
    url = str(getattr(settings, "supabase_url", "") or "").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError("bad setting SUPABASE_URL: expected https://<project-ref>.supabase.co")
    return url + METRICS_PATH


def metrics_text(settings: Any, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> tuple[str, str]:
    """(url without credentials, Prometheus exposition text) of the project's Metrics API."""
    url = metrics_url(settings)
    key = settings.service_role_key
    key = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    if not key:
        raise UsageError("missing setting SUPABASE_SERVICE_ROLE_KEY: needed for the Metrics API")
    where = f"Metrics API GET {httpx.URL(url).copy_with(query=None)}"
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            resp = client.get(url, auth=("service_role", key), headers={"Accept": "text/plain"})
    except httpx.TimeoutException:
        raise OpsproofError(f"{where}: timed out") from None
    except httpx.HTTPError as exc:
        raise OpsproofError(f"{where}: unreachable ({type(exc).__name__})") from None
    if resp.status_code in (401, 403):
        raise UsageError("Metrics API refused the service role key")
    if not resp.is_success:
        raise OpsproofError(f"{where}: HTTP {resp.status_code}")
    return url, resp.text


def _as_bytes(body: bytes | str | dict | list) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sign_request(key: str, body: bytes, ts: int) -> dict:
    """The n8n@ signature headers: X-Timestamp and X-Signature = hex HMAC-SHA256(key, f"{ts}.{body}")."""
    if not key:
        raise UsageError("missing signing key for the signed request")
    return {"X-Timestamp": str(int(ts)), "X-Signature": sign(key, int(ts), _as_bytes(body))}


def post_signed(url: str, key: str, body: bytes | str | dict | list, idempotency_key: str, *,
                ts: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                client: httpx.Client | None = None) -> httpx.Response:
    """POST `body` signed with `key` (timestamp from the one clock) and an Idempotency-Key.

    Returns the response whatever its status (the drills assert 201/409/422/401 themselves);
    a timeout or an unreachable URL is a one-line OpsproofError without the key.
    """
    if not idempotency_key:
        raise UsageError("post_signed needs an idempotency key")
    raw = _as_bytes(body)
    stamp = int(clock.now().timestamp()) if ts is None else int(ts)
    headers = {**sign_request(key, raw, stamp), "Idempotency-Key": idempotency_key,
               "Content-Type": "application/json"}
    parsed = httpx.URL(url)
    where = f"{parsed.scheme}://{parsed.host}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
    try:
        if client is not None:
            return client.post(url, content=raw, headers=headers, timeout=timeout)
        with httpx.Client(timeout=timeout) as own:
            return own.post(url, content=raw, headers=headers)
    except httpx.TimeoutException:
        raise OpsproofError(f"signed POST to {where}: timed out") from None
    except httpx.HTTPError as exc:
        raise OpsproofError(f"signed POST to {where}: unreachable ({type(exc).__name__})") from None

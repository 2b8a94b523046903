"""The posture policy (opsproof.toml): required flags, budgets, SLO targets, watchlist, retention."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsproof.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Budgets(_Strict):
    agent_concurrency_max: int = 150
    replay_batch_items_max: int = 50
    replay_max_bytes: int = 2 * 1024 * 1024
    replay_fail_rate_pct_max: float = 20.0


class Slo(_Strict):
    uptime_pct_min: float = 99.95
    success_pct_min: float = 98.0
    p95_ms_max: float = 2500.0
    burn_rate_windows_hours: list[int] = Field(default_factory=lambda: [1, 6])
    # SLO-002/003's traffic: "contract" = ops.requests (ops.slo_snapshot); "gateway" = the project's REST/Auth
    # requests from Supabase's edge logs (Management API logs query; needs SUPABASE_ACCESS_TOKEN + PROJECT_REF)
    source: Literal["contract", "gateway"] = "contract"


class Watchlist(_Strict):
    outbox_lag_p95_s_max: float = 5.0
    outbox_lag_avg_s_max: float = 2.0
    agent_success_pct_min: float = 98.0
    agent_quarantine_pct_max: float = 1.0
    agent_stall_after_s: float = 900.0   # a task queued/running longer than this at the window's end is stalled
    agent_stalled_max: int = 0
    dlq_replay_fail_pct_max: float = 2.0
    replays_per_tenant_day_max: int = 3
    ci_self_heal_triggers_max: int = 0
    ci_branch: str = "main"
    trace_coverage_pct_min: float = 100.0


class Traces(_Strict):
    """WCH-005's trace source: "contract" = ops.spans (ops.trace_coverage); "jaeger" / "tempo" = that backend's
    HTTP query API at query_url (Jaeger GET /api/traces, Tempo GET /api/search), asked for the window's canary tasks."""
    backend: Literal["contract", "jaeger", "tempo"] = "contract"
    query_url: str = ""
    service: str = "plane.worker"            # the service.name of the spans' resource (Jaeger's `service`)
    operation: str = "agent.task.execute"
    token_env: str = ""                      # NAME of an env var holding a bearer token for the query API
    timeout_s: float = 10.0

    @model_validator(mode="after")
    def _url(self) -> "Traces":
        if self.backend != "contract" and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.query_url):
            raise ValueError(f"backend {self.backend!r} needs query_url = the http(s) base URL of its query API")
        if self.token_env and not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", self.token_env):
            raise ValueError("token_env must be the NAME of an environment variable, never a token")
        return self


class Security(_Strict):
    rotation_max_days: int = 90
    service_accounts: list[str] = Field(
        default_factory=lambda: ["autopilot@", "agents@", "dlq@", "ci@", "n8n@", "system@"])
    kill_switch_account: str = "system@"
    advisors_fail_level: str = "ERROR"
    # SEC-001: the schemas the API exposes (PostgREST db_schemas; the target's own setting is added when readable),
    # and the relations/functions ("schema.name" or "schema.name(arg types)") the isolation matrix accepts as
    # public or as not judgeable, each with the reason (an entry without a reason is refused).
    exposed_schemas: list[str] = Field(default_factory=lambda: ["public", "ops"], min_length=1)
    isolation_allowlist: dict[str, str] = Field(default_factory=dict)

    @field_validator("isolation_allowlist")
    @classmethod
    def _reasons_given(cls, v: dict[str, str]) -> dict[str, str]:
        for name, reason in v.items():
            if not re.fullmatch(r"[A-Za-z_][\w$]*\.[A-Za-z_][\w$]*(\(.*\))?", name):
                raise ValueError(f"{name!r} is not schema.name or schema.name(arg types)")
            if len(reason.strip()) < 8:
                raise ValueError(f"{name!r} needs a reason (why it is public or cannot leak)")
        return v


class StreamFreshness(_Strict):
    """Freshness rails of one telemetry stream (measured by ops.telemetry_freshness over the window)."""

    # required: every window must hold at least one row (whatever its length). false = "where expected": a
    # sparse stream (CI events, DLQ replays) may be quiet in a window, but never silent for longer than max_age_s
    # (its newest row is looked up before the window too).
    required: bool = True
    max_age_s: float = Field(..., gt=0)                  # newest row at most this old at the window's end
    max_gap_s: float | None = Field(None, gt=0)          # longest stretch without a row (incl. window edges)
    min_coverage_pct: float | None = Field(None, ge=0, le=100)   # share of buckets holding >= 1 row
    coverage_bucket: Literal["minute", "hour"] = "minute"


# The reference system's streams (the seeder and the plane write all of them; see docs/contract.md).
TELEMETRY_STREAMS: dict[str, dict[str, Any]] = {
    "health_probes": {"required": True, "max_age_s": 300.0, "max_gap_s": 300.0, "min_coverage_pct": 99.0,
                      "coverage_bucket": "minute"},
    "requests": {"required": True, "max_age_s": 900.0, "max_gap_s": 900.0, "min_coverage_pct": 95.0,
                 "coverage_bucket": "minute"},
    "agent_tasks": {"required": True, "max_age_s": 1800.0, "max_gap_s": 1800.0, "min_coverage_pct": 95.0,
                    "coverage_bucket": "hour"},
    "spans": {"required": True, "max_age_s": 1800.0, "max_gap_s": 1800.0, "min_coverage_pct": 95.0,
              "coverage_bucket": "hour"},
    "outbox": {"required": True, "max_age_s": 1800.0, "max_gap_s": 1800.0, "min_coverage_pct": 95.0,
               "coverage_bucket": "hour"},
    "dlq_replays": {"required": False, "max_age_s": 43200.0},
    "ci_events": {"required": False, "max_age_s": 43200.0},
}


class Telemetry(_Strict):
    """[telemetry]: per-stream freshness rails (TEL-xxx) and the uptime settle period (SLO-001).

    A stream's table in the TOML overrides only the keys it names; the rest keep that stream's defaults.
    """

    # SLO-001: a whole minute that ended less than settle_s before the window's end and has no probe yet is
    # left out of the uptime denominator (its probes may still be arriving); every earlier unprobed minute is down
    settle_s: float = Field(120.0, ge=0, le=900)
    # TEL-008: the per-minute rollup the SLO / outbox measurements read (migration 20261203001100) must be at most
    # this far behind now (watermark age; a refresh every minute keeps it under ~180 s) and gap-free over the window
    rollup_max_lag_s: float = Field(600.0, gt=0)
    health_probes: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["health_probes"]))
    requests: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["requests"]))
    agent_tasks: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["agent_tasks"]))
    spans: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["spans"]))
    outbox: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["outbox"]))
    dlq_replays: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["dlq_replays"]))
    ci_events: StreamFreshness = Field(default_factory=lambda: StreamFreshness(**TELEMETRY_STREAMS["ci_events"]))

    @model_validator(mode="before")
    @classmethod
    def _merge_stream_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, defaults in TELEMETRY_STREAMS.items():
            given = out.get(name)
            if isinstance(given, dict):
                out[name] = {**defaults, **given}
        return out

    def stream(self, name: str) -> StreamFreshness:
        if name not in TELEMETRY_STREAMS:
            raise KeyError(name)
        return getattr(self, name)


class Cadence(_Strict):
    backup_max_age_hours: float = 26.0
    agent_logs_ttl_days: int = 14
    partitions_ahead_days: int = 7


class Resources(_Strict):
    """[resources]: RES-001 (disk) and RES-002 (connections); hosted = the Metrics API, embedded = Postgres itself."""

    disk_used_pct_max: float = Field(80.0, gt=0, le=100)
    connections_used_pct_max: float = Field(80.0, gt=0, le=100)
    # the embedded default has no volume of its own: its database size is judged against this budget
    disk_budget_bytes: int = Field(8 * 1024 ** 3, gt=0)


class Evidence(_Strict):
    retention_days: int = 35
    compress_after_days: int = 7


class Drills(_Strict):
    allow_on_production: bool = False
    # every drill lever (override, replica pause) is leased for this long and renewed every lease/3 s while
    # its runner lives: a runner killed with SIGKILL stops counting within one lease (seconds, not minutes)
    lease_seconds: int = Field(10, ge=3, le=120)


class CodeScans(_Strict):
    """[code_scans]: SEC-007 (static analysis ran, no open findings at fail_on) and SEC-008 (no open secret).

    Paths and globs are relative to the policy file's directory. The GitHub token is read from the environment
    variable NAMED here (never a token in this file)."""

    max_age_days: int = Field(7, ge=1, le=90)
    sarif: list[str] = Field(default_factory=list)           # SARIF files the TMS's CI produced (globs)
    github_repo: str = ""                                     # owner/name: GitHub code + secret scanning
    github_token_env: str = "GITHUB_TOKEN"
    secrets_scan_paths: list[str] = Field(default_factory=lambda: ["fixtures/tms-repo"])
    # what `opsproof cadence weekly` scans with bandit (its SARIF goes to reports/scans/, read through `sarif`)
    static_scan_paths: list[str] = Field(default_factory=lambda: ["fixtures/tms-repo"])
    secrets_baseline: str = ""                                # detect-secrets .secrets.baseline (audited)
    fail_on: list[Literal["critical", "high", "medium", "low"]] = Field(
        default_factory=lambda: ["critical", "high"], min_length=1)

    @field_validator("github_repo")
    @classmethod
    def _owner_name(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+", v):
            raise ValueError(f"{v!r} is not owner/name")
        return v

    @field_validator("github_token_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", v):
            raise ValueError("must be the NAME of an environment variable (A-Z, 0-9, _), never a token")
        return v


class Health(_Strict):
    """[health]: the health score's weights and caps (src/opsproof/health.py; docs/operations.md "Health score")."""

    weights: dict[Literal["slo", "watchlist", "compliance", "incidents"], float] = Field(
        default_factory=lambda: {"slo": 40.0, "watchlist": 20.0, "compliance": 30.0, "incidents": 10.0})
    severity_weights: dict[Literal["critical", "high", "medium", "low"], float] = Field(
        default_factory=lambda: {"critical": 4.0, "high": 3.0, "medium": 2.0, "low": 1.0})
    critical_cap: int = Field(49, ge=0, le=100)      # a critical control failing or erroring caps the score here
    error_cap: int = Field(69, ge=0, le=100)         # any control that cannot show its measurement caps it here
    failing_cap: int = Field(89, ge=0, le=100)       # any other failing control: never "all green"
    incident_penalty: float = Field(25.0, ge=0, le=100)   # per open incident, off the incidents component
    open_incident_cap: int = Field(79, ge=0, le=100)       # an open incident caps the score here

    @field_validator("weights")
    @classmethod
    def _some_weight(cls, v: dict) -> dict:
        if any(w < 0 for w in v.values()) or not sum(v.values()) > 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return v


class BurnRule(_Strict):
    """One multi-window burn-rate rule (SRE workbook): fires when the burn rate over BOTH windows is >= factor."""

    factor: float = Field(..., gt=0)
    long_s: int = Field(..., gt=0)
    short_s: int = Field(..., gt=0)
    severity: Literal["critical", "high", "medium", "low"] = "critical"

    @model_validator(mode="after")
    def _short_within_long(self) -> "BurnRule":
        if self.short_s >= self.long_s:
            raise ValueError("short_s must be shorter than long_s")
        return self


WATCH_ACTIONS = ("throttle", "quarantine", "pause_replayer", "big_red_button")


class Watch(_Strict):
    """[watch]: `opsproof watch` (src/opsproof/watch/): cadence, windows, alert-only or act, actions, burn rules."""

    interval_s: float = Field(300.0, gt=0, le=86400)         # MONITORING_INTERVAL
    window_s: int = Field(3600, ge=60)                       # what a tick measures: the last window_s seconds
    long_window_s: int = Field(86400, ge=60)                 # sparse controls (batches a few times a day)
    long_window_controls: list[str] = Field(default_factory=lambda: ["BUD-003", "WCH-003", "WCH-004", "WCH-005"])
    mode: Literal["alert", "act"] = "alert"                  # "act": the actions below, through the incident levers
    allow_on_production: bool = False                        # act on a target marked production
    # breach -> action ("burn:<rule>" = a burn-rate rule firing); a breach not listed only alerts
    actions: dict[str, Literal["throttle", "quarantine", "pause_replayer", "big_red_button"]] = Field(
        default_factory=lambda: {"SLO-001": "throttle", "SLO-003": "throttle", "burn:page": "throttle",
                                 "WCH-002": "quarantine", "WCH-003": "pause_replayer"})
    throttle_step_pct: float = Field(50.0, gt=0, lt=100)    # throttle: agent.concurrency lowered by this share
    throttle_min: int = Field(1, ge=1)
    rollback_webhook: bool = True                            # throttle also posts the CI rollback (self-heal hook)
    big_red_button: bool = False                             # a critical breach pulls the emergency stop
    recovery: Literal["resume", "auto"] = "resume"           # auto: resumed after recovery_ticks clean ticks
    recovery_ticks: int = Field(3, ge=1)
    burn_rules: dict[str, BurnRule] = Field(default_factory=lambda: {
        "page": BurnRule(factor=14.4, long_s=3600, short_s=300, severity="critical"),
        "ticket": BurnRule(factor=6.0, long_s=21600, short_s=1800, severity="medium")})


DEFAULT_FLAGS: dict[str, Any] = {
    "autonomy.emergencyStop": False,
    "autonomy.mode": "FULL",
    "agents.autonomousEnabled": True,
    "obs.otelEnabled": True,
    "canary.rollout_percentage": "SAFE",
    "canary.auto_rollback": "SAFE",
    "canary.health_threshold": "SAFE",
}


class Policy(_Strict):
    flags: dict[str, bool | str | int | float] = Field(default_factory=lambda: dict(DEFAULT_FLAGS))
    budgets: Budgets = Field(default_factory=Budgets)
    slo: Slo = Field(default_factory=Slo)
    watchlist: Watchlist = Field(default_factory=Watchlist)
    traces: Traces = Field(default_factory=Traces)
    security: Security = Field(default_factory=Security)
    cadence: Cadence = Field(default_factory=Cadence)
    evidence: Evidence = Field(default_factory=Evidence)
    drills: Drills = Field(default_factory=Drills)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    code_scans: CodeScans = Field(default_factory=CodeScans)
    resources: Resources = Field(default_factory=Resources)
    health: Health = Field(default_factory=Health)
    watch: Watch = Field(default_factory=Watch)
    source: str = Field(default="<defaults>", exclude=True)
    sha256: str = Field(default="", exclude=True)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"


def load(path: Path | str) -> Policy:
    """Load and validate; any problem is a UsageError (exit 2) naming the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"policy file not found: {path}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"policy {path} is not valid TOML: {exc}") from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"policy {path}: {_first_error(exc)}") from None
    return policy.model_copy(update={"source": str(path), "sha256": hashlib.sha256(raw).hexdigest()})

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
    security: Security = Field(default_factory=Security)
    cadence: Cadence = Field(default_factory=Cadence)
    evidence: Evidence = Field(default_factory=Evidence)
    drills: Drills = Field(default_factory=Drills)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    code_scans: CodeScans = Field(default_factory=CodeScans)
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

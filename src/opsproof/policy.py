"""The posture policy (opsproof.toml): required flags, budgets, SLO targets, watchlist, retention."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class Cadence(_Strict):
    backup_max_age_hours: float = 26.0
    agent_logs_ttl_days: int = 14
    partitions_ahead_days: int = 7


class Evidence(_Strict):
    retention_days: int = 35
    compress_after_days: int = 7


class Drills(_Strict):
    allow_on_production: bool = False
    lease_seconds: int = 180


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

"""An incident request and its response plan: the request model (validated JSON; bad input is a one-line
UsageError before any connection), which plan a level/type gets, what each plan sets, how long it may take to be
in effect, and the Context the levers act in (levers/incident.py applies, verifies and resumes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsproof.errors import UsageError

LEVELS = ("critical", "high", "medium", "low")
TYPES = ("emergency_stop", "soft_degrade", "rollback", "system_failure", "performance_degradation",
         "security_incident", "data_integrity", "integration_failure")
# How long the response may take to be in effect on the live system (handle start -> verified).
TIMEOUT_S = {"critical": 30.0, "high": 60.0, "medium": 300.0, "low": 900.0}
CANARY_FLAGS = ("canary.rollout_percentage", "canary.auto_rollback", "canary.health_threshold")
EMERGENCY_FLAGS = {"autonomy.emergencyStop": True, "agents.autonomousEnabled": False,
                   "outbox.relayEnabled": False, "dlq.replayEnabled": False}
DEGRADE_FLAGS = {"dlq.replayEnabled": False, "autonomy.mode": "SAFE", **{k: "SAFE" for k in CANARY_FLAGS}}
COMPONENTS = ("plane.worker", "plane.relay", "plane.replayer")


class IncidentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    level: Literal["critical", "high", "medium", "low"]
    type: Literal["emergency_stop", "soft_degrade", "rollback", "system_failure", "performance_degradation",
                  "security_incident", "data_integrity", "integration_failure"]
    description: str = Field(min_length=1, max_length=4000)
    source: str | None = Field(None, max_length=200)
    trace_id: str | None = Field(None, max_length=200)

    @field_validator("description")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


def parse_request(text: str) -> IncidentRequest:
    """JSON text -> IncidentRequest; anything wrong -> UsageError with one clear line (exit 2)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"incident: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError("incident: expected a JSON object like "
                         '{"level": "critical", "type": "emergency_stop", "description": "..."}')
    try:
        return IncidentRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "incident"
        if err["type"] == "missing":
            msg = "missing field"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif loc == "level":
            msg = f"unknown level {data.get('level')!r} (one of {', '.join(LEVELS)})"
        elif loc == "type":
            msg = f"unknown type {data.get('type')!r} (one of {', '.join(TYPES)})"
        else:
            msg = err["msg"]
        raise UsageError(f"incident: {loc}: {msg}") from None


def plan_for(req: IncidentRequest) -> str:
    """rollback (type rollback) | emergency_stop (type emergency_stop or level critical) |
    soft_degrade (type soft_degrade or level high) | monitor (medium/low: alert, escalation clock)."""
    if req.type == "rollback":
        return "rollback"
    if req.type == "emergency_stop" or req.level == "critical":
        return "emergency_stop"
    if req.type == "soft_degrade" or req.level == "high":
        return "soft_degrade"
    return "monitor"


@dataclass
class Context:
    """Where the levers act and where they report. Build one with `context_from_settings()`."""

    dsn: str
    degrade_concurrency: int = 37                 # policy agent_concurrency_max // 4
    self_heal_url: str | None = None              # the CI self-heal hook (rollback)
    alert_url: str | None = None                  # Slack webhook (monitor/escalation)
    sink_url: str | None = None                   # the plane's local sink (read back what was posted)
    trace_link_template: str = "http://127.0.0.1:16686/trace/{trace_id}"
    components: tuple[str, ...] = COMPONENTS
    verify: bool = True
    poll_s: float = 0.1
    timeouts: dict[str, float] = field(default_factory=lambda: dict(TIMEOUT_S))
    operator: str = field(default_factory=lambda: os.environ.get("USER") or os.environ.get("LOGNAME") or "operator")


def context_from_settings(settings, policy, **overrides) -> Context:
    """Context from opsproof settings + policy. The self-heal hook: OPSPROOF_SELF_HEAL_URL, else the plane's
    sink `<sink>/self-heal` on the embedded stack."""
    from opsproof import paths
    from opsproof.envfile import read_env

    if settings.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    plane_env = read_env(paths.plane_dir() / "env")
    sink = settings.sink_url or plane_env.get("OPSPROOF_SINK_URL")
    self_heal = os.environ.get("OPSPROOF_SELF_HEAL_URL") or plane_env.get("OPSPROOF_SELF_HEAL_URL") or (
        f"{sink}/self-heal" if sink else None)
    alert = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
    comps = os.environ.get("OPSPROOF_INCIDENT_COMPONENTS")
    ctx = Context(dsn=settings.db_url.get_secret_value(),
                  degrade_concurrency=max(1, policy.budgets.agent_concurrency_max // 4),
                  self_heal_url=self_heal, alert_url=alert, sink_url=sink,
                  trace_link_template=settings.trace_link_template,
                  components=tuple(c.strip() for c in comps.split(",") if c.strip()) if comps else COMPONENTS)
    for k, v in overrides.items():
        setattr(ctx, k, v)
    return ctx

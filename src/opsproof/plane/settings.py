"""The plane's one settings model (pydantic-settings).

Layering, lowest first: the stack's env file (.opsproof/stack/env, or OPSPROOF_STACK_ENV), the plane's
env file (<plane dir>/env, written by `plane up`), then the process environment. The seed's variable
names are kept: MAX_RETRY_ATTEMPTS, AUTO_RECOVERY, ESCALATION_THRESHOLD, ALERT_WEBHOOK_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from opsproof import paths
from opsproof.envfile import read_env


class PlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    db_url: str = Field(alias="SUPABASE_DB_URL", description="primary admin DSN")
    replica_db_url: str | None = Field(None, alias="OPSPROOF_REPLICA_DB_URL", description="replica DSN")
    plane_dir: Path = Field(default_factory=paths.plane_dir, alias="OPSPROOF_PLANE_DIR")

    cycle_s: float = Field(1.0, gt=0, le=60, alias="OPSPROOF_PLANE_CYCLE_S")
    probe_interval_s: float = Field(30.0, gt=0, le=3600, alias="OPSPROOF_PROBE_INTERVAL_S")
    lag_threshold_bytes: int = Field(16 * 1024 * 1024, ge=0, alias="OPSPROOF_LAG_THRESHOLD_BYTES")
    failures_to_cutover: int = Field(3, ge=1, le=100, alias="OPSPROOF_FAILURES_TO_CUTOVER")
    probes_to_return: int = Field(1, ge=1, le=100, alias="OPSPROOF_PROBES_TO_RETURN")
    probe_timeout_s: float = Field(2.0, gt=0, le=60, alias="OPSPROOF_PROBE_TIMEOUT_S")

    ingest_port: int = Field(0, ge=0, le=65535, alias="OPSPROOF_INGEST_PORT")
    sink_port: int = Field(0, ge=0, le=65535, alias="OPSPROOF_SINK_PORT")
    trace_view_port: int = Field(0, ge=0, le=65535, alias="OPSPROOF_TRACE_VIEW_PORT")
    trace_view_url: str | None = Field(None, alias="OPSPROOF_TRACE_VIEW_URL")
    ingest_url: str | None = Field(None, alias="OPSPROOF_INGEST_URL")
    sink_url: str | None = Field(None, alias="OPSPROOF_SINK_URL")
    relay_url: str | None = Field(None, alias="OPSPROOF_RELAY_URL", description="where the relay POSTs outbox events")

    alert_webhook_url: str | None = Field(None, alias="ALERT_WEBHOOK_URL")
    trace_link_template: str = Field("http://127.0.0.1:16686/trace/{trace_id}", alias="TRACE_LINK_TEMPLATE")
    max_retry_attempts: int = Field(3, ge=1, le=100, alias="MAX_RETRY_ATTEMPTS")
    auto_recovery: bool = Field(True, alias="AUTO_RECOVERY")
    escalation_threshold: int = Field(5, ge=1, alias="ESCALATION_THRESHOLD",
                                      description="quarantines in the last hour at which alerts turn critical")

    worker_pool_max: int = Field(32, ge=1, le=512, alias="OPSPROOF_WORKER_POOL_MAX")
    task_timeout_s: float = Field(120.0, gt=0, alias="OPSPROOF_TASK_TIMEOUT_S")
    relay_batch: int = Field(200, ge=1, le=10000, alias="OPSPROOF_RELAY_BATCH")
    replay_poll_s: float = Field(10.0, gt=0, alias="OPSPROOF_REPLAY_POLL_S")
    traffic_rate: float = Field(5.0, gt=0, le=1000, alias="OPSPROOF_TRAFFIC_RATE")

    n8n_signing_key: str | None = Field(None, alias="N8N_SIGNING_KEY")
    n8n_signing_key_stack: str | None = Field(None, alias="OPSPROOF_KEY_N8N")
    signature_tolerance_s: int = Field(300, ge=1, le=86400, alias="OPSPROOF_SIGNATURE_TOLERANCE_S")

    @field_validator("db_url", "replica_db_url")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith(("postgres://", "postgresql://")) or "=" in v):
            raise ValueError("not a PostgreSQL DSN")
        return v

    @field_validator("trace_link_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{trace_id}" not in v:
            raise ValueError("must contain {trace_id}")
        return v

    @model_validator(mode="after")
    def _key(self) -> "PlaneSettings":
        if self.n8n_signing_key is None and self.n8n_signing_key_stack:
            self.n8n_signing_key = self.n8n_signing_key_stack
        return self

    def signing_key(self) -> bytes:
        if not self.n8n_signing_key:
            raise RuntimeError("no n8n signing key (N8N_SIGNING_KEY or OPSPROOF_KEY_N8N)")
        return self.n8n_signing_key.encode()

    def trace_link(self, trace_id: str | None) -> str | None:
        return self.trace_link_template.format(trace_id=trace_id) if trace_id else None


def layered_env(plane_dir: Path | None = None, stack_env: Path | None = None) -> dict[str, str]:
    """stack env file < plane env file < process environment."""
    stack_env = stack_env or Path(os.environ.get("OPSPROOF_STACK_ENV") or paths.stack_env_file())
    pdir = plane_dir or Path(os.environ.get("OPSPROOF_PLANE_DIR") or paths.plane_dir())
    values = dict(read_env(stack_env))
    values.update(read_env(pdir / "env"))
    values.update({k: v for k, v in os.environ.items() if v != ""})
    values["OPSPROOF_PLANE_DIR"] = str(pdir)
    return values


def load(plane_dir: Path | None = None, stack_env: Path | None = None, **overrides) -> PlaneSettings:
    values = layered_env(plane_dir, stack_env)
    values.update({k: str(v) for k, v in overrides.items()})
    fields = {f.alias for f in PlaneSettings.model_fields.values() if f.alias}
    return PlaneSettings(**{k: v for k, v in values.items() if k in fields})


def one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "settings"
    return f"opsproof plane: bad setting {loc}: {err['msg']}"


def load_or_exit(plane_dir: Path | None = None, stack_env: Path | None = None) -> PlaneSettings:
    """For the component entry points: bad settings -> one clear line on stderr and exit 2."""
    import sys

    try:
        return load(plane_dir, stack_env)
    except ValidationError as exc:
        print(one_line(exc), file=sys.stderr)
        raise SystemExit(2) from None

"""Suite settings: environment, .env, and (embedded target) the stack's and plane's env files."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from opsproof import paths
from opsproof.envfile import read_env
from opsproof.errors import UsageError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    target: Literal["embedded", "env"] = Field("embedded", alias="OPSPROOF_TARGET")
    production: bool = Field(False, alias="OPSPROOF_PRODUCTION")
    db_url: SecretStr | None = Field(None, alias="SUPABASE_DB_URL")
    replica_db_url: SecretStr | None = Field(None, alias="OPSPROOF_REPLICA_DB_URL")
    supabase_url: str | None = Field(None, alias="SUPABASE_URL")
    anon_key: SecretStr | None = Field(None, alias="SUPABASE_ANON_KEY")
    service_role_key: SecretStr | None = Field(None, alias="SUPABASE_SERVICE_ROLE_KEY")
    jwt_secret: SecretStr | None = Field(None, alias="SUPABASE_JWT_SECRET")
    access_token: SecretStr | None = Field(None, alias="SUPABASE_ACCESS_TOKEN")
    project_ref: str | None = Field(None, alias="SUPABASE_PROJECT_REF")
    alert_webhook_url: SecretStr | None = Field(None, alias="ALERT_WEBHOOK_URL")
    trace_link_template: str = Field("http://127.0.0.1:16686/trace/{trace_id}", alias="TRACE_LINK_TEMPLATE")
    ingest_url: str | None = Field(None, alias="OPSPROOF_INGEST_URL")
    sink_url: str | None = Field(None, alias="OPSPROOF_SINK_URL")

    def secret_values(self) -> list[str]:
        """Every secret this run knows, for scrubbing and the secrets scan of the evidence."""
        out = []
        for field in ("db_url", "replica_db_url", "anon_key", "service_role_key", "jwt_secret",
                      "access_token", "alert_webhook_url"):
            value = getattr(self, field)
            if value is None:
                continue
            raw = value.get_secret_value()
            if field.endswith("db_url"):
                pw = urlsplit(raw).password
                if pw:
                    out.append(pw)
            elif field == "alert_webhook_url":
                path = urlsplit(raw).path
                if "hooks.slack.com" in raw and path:
                    out.append(path)
            else:
                out.append(raw)
        for key, value in read_env(paths.stack_env_file()).items():
            if key.endswith(("PASSWORD", "SECRET", "_KEY")) or key.startswith("OPSPROOF_KEY_"):
                out.append(value)
        return sorted({s for s in out if s and len(s) >= 8})

    def host(self) -> str:
        """The target host without credentials (for reports)."""
        if not self.db_url:
            return "<none>"
        parts = urlsplit(self.db_url.get_secret_value())
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def load_settings(target: str | None = None) -> Settings:
    """Settings for a run. The embedded target layers .opsproof/{stack,plane}/env under the environment."""
    import os

    layered: dict[str, str] = {}
    chosen = target or os.environ.get("OPSPROOF_TARGET", "embedded")
    if chosen == "embedded":
        layered.update(read_env(paths.stack_env_file()))
        layered.update(read_env(paths.plane_dir() / "env"))
    layered.update({k: v for k, v in os.environ.items() if k.startswith(("SUPABASE_", "OPSPROOF_", "ALERT_", "TRACE_"))})
    layered["OPSPROOF_TARGET"] = chosen
    try:
        return Settings(**layered)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from None

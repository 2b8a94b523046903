"""Named targets (like dbt profiles): `targets.toml` says which system `--target staging` means.

    [targets.staging]
    kind = "supabase"                      # embedded | supabase
    db_url_env = "STAGING_DB_URL"          # the NAME of the environment variable holding the DSN (never the DSN)
    supabase_url_env = "STAGING_SUPABASE_URL"
    service_role_key_env = "STAGING_SERVICE_ROLE_KEY"
    access_token_env = "SUPABASE_ACCESS_TOKEN"
    project_ref = "abcdefghijklmnopqrst"
    production = false

The file holds names, never secrets: a value that is not an environment-variable name is refused. The variables are
read the one way every setting is read (environment > .env). `embedded` and `env` are built in and keep working.
Each named target keeps its own evidence chain: `<evidence root>/<name>/YYYY-MM-DD/`.

Where: `$OPSPROOF_TARGETS_FILE` (must exist), else `<project dir>/targets.toml` (optional).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opsproof import paths
from opsproof.errors import UsageError

BUILTIN = ("embedded", "env")
FILE_VAR = "OPSPROOF_TARGETS_FILE"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_TARGET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

# target field -> the Settings alias it fills
ENV_FIELDS = {
    "db_url_env": "SUPABASE_DB_URL",
    "replica_db_url_env": "OPSPROOF_REPLICA_DB_URL",
    "supabase_url_env": "SUPABASE_URL",
    "anon_key_env": "SUPABASE_ANON_KEY",
    "service_role_key_env": "SUPABASE_SERVICE_ROLE_KEY",
    "jwt_secret_env": "SUPABASE_JWT_SECRET",
    "access_token_env": "SUPABASE_ACCESS_TOKEN",
    "alert_webhook_url_env": "ALERT_WEBHOOK_URL",
    "signing_key_env": "OPSPROOF_SIGNING_KEY",
}


class NamedTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["embedded", "supabase"]
    db_url_env: str | None = None
    replica_db_url_env: str | None = None
    supabase_url_env: str | None = None
    anon_key_env: str | None = None
    service_role_key_env: str | None = None
    jwt_secret_env: str | None = None
    access_token_env: str | None = None
    alert_webhook_url_env: str | None = None
    signing_key_env: str | None = None
    project_ref: str | None = Field(None, pattern=r"^[a-z0-9]{8,40}$")
    production: bool = False

    @field_validator(*ENV_FIELDS)
    @classmethod
    def _an_env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError("must be the NAME of an environment variable (e.g. STAGING_DB_URL), never a value: "
                             "secrets do not go into files")
        return v

    def model_post_init(self, _ctx) -> None:
        if self.kind == "supabase" and self.db_url_env is None:
            raise ValueError("a supabase target needs db_url_env (the variable that holds its DSN)")

    @property
    def settings_kind(self) -> str:
        """The Settings.target this target resolves to (embedded: the private stack; supabase: configured)."""
        return "embedded" if self.kind == "embedded" else "env"

    def env_names(self) -> dict[str, str]:
        """Settings alias -> the environment variable that holds it for this target."""
        return {alias: getattr(self, f) for f, alias in ENV_FIELDS.items() if getattr(self, f)}


def targets_file() -> Path | None:
    explicit = os.environ.get(FILE_VAR)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UsageError(f"{FILE_VAR}={explicit}: no such file")
        return p.resolve()
    p = paths.project_dir() / "targets.toml"
    return p if p.is_file() else None


def load(path: Path | None = None) -> dict[str, NamedTarget]:
    """The named targets of the targets file (none when there is no file); any problem is one line, exit 2."""
    path = path if path is not None else targets_file()
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"targets file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"targets file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"targets"})
    if unknown:
        raise UsageError(f"targets file {path}: unknown key(s) {unknown} (only [targets.<name>] tables)")
    out: dict[str, NamedTarget] = {}
    for name, table in (data.get("targets") or {}).items():
        if name in BUILTIN or not _TARGET_NAME.match(name):
            raise UsageError(f"targets file {path}: target name {name!r}: lower-case letters, digits, '-', '_' "
                             f"(and not {' or '.join(BUILTIN)}, which are built in)")
        if not isinstance(table, dict):
            raise UsageError(f"targets file {path}: targets.{name} must be a table")
        try:
            out[name] = NamedTarget(name=name, **table)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(map(str, err["loc"])) or "target"
            raise UsageError(f"targets file {path}: targets.{name}.{loc}: {err['msg']}".replace(".target:", ":")) \
                from None
    return out


def get(name: str) -> NamedTarget:
    named = load()
    if name not in named:
        known = ", ".join([*BUILTIN, *sorted(named)])
        where = targets_file()
        raise UsageError(f"unknown target {name!r} (known: {known}; named targets live in "
                         f"{where or paths.project_dir() / 'targets.toml'})")
    return named[name]


def evidence_root(base: Path, name: str) -> Path:
    """A named target's own evidence chain lives under <base>/<name>/; the built-in targets keep <base>."""
    return Path(base) if name in BUILTIN else Path(base) / name

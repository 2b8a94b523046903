"""Suite settings: ONE resolution, used by every entry point (the pytest plugin, `opsproof daily|gate|drills|
acceptance|cadence|incident|levers`).

Precedence, highest first:

1. the process environment (an empty value counts as unset);
2. the `.env` file: `$OPSPROOF_ENV_FILE` when set (it must exist), else `./.env` in the current directory,
   else `<project dir>/.env` (the first that exists; only one file is read);
3. only when the resolved target is `embedded`: the embedded stack's own files, `.opsproof/stack/env`
   under `.opsproof/plane/env`;
4. the field's default.

A command-line `--target` beats all of them for the choice of target. A configured non-embedded target
never falls back to the embedded stack: `OPSPROOF_TARGET=env` without `SUPABASE_DB_URL` is an error (exit 2).

Like python-dotenv's `load_dotenv(override=False)`, keys of the `.env` file the environment lacks are
exported into this process's environment, so every module that reads `os.environ` (paths, the plane, the
cadence's keys) and every child process sees the same settings. `OPSPROOF_ENV_FILE` and
`OPSPROOF_DOTENV_KEYS` (the keys exported from it) travel with them, so a child re-resolves to the same values
and still says they came from `.env`.

Every resolved setting records where it came from ("environment", ".env", "embedded stack file", "default",
"command line"); `Settings.describe()` names the target (kind, host, port, database, sources) without a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from opsproof import paths
from opsproof import targets as targets_mod
from opsproof.envfile import read_dotenv, read_env
from opsproof.errors import UsageError

ENVIRONMENT = "environment"
DOTENV = ".env"
STACK_FILE = "embedded stack file"
DEFAULT = "default"
COMMAND_LINE = "command line"

BUILTIN_TARGETS = targets_mod.BUILTIN
# what a named supabase target must say itself (or leave unset): never borrowed from the generic settings
ENV_ALIASES_OF_TARGET = ("SUPABASE_DB_URL", "OPSPROOF_REPLICA_DB_URL", "SUPABASE_URL", "SUPABASE_ANON_KEY",
                         "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_ACCESS_TOKEN",
                         "SUPABASE_PROJECT_REF")
ENV_FILE_VAR = "OPSPROOF_ENV_FILE"
EXPORTED_VAR = "OPSPROOF_DOTENV_KEYS"


class Settings(BaseSettings):
    # no env_file/env here: resolve_settings() is the only reader (it records where each value came from)
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

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
    # the Management API's base URL (a replay server in tests); the Metrics API lives under SUPABASE_URL
    api_url: str = Field("https://api.supabase.com", alias="SUPABASE_API_URL")
    # SEC-006: where Supabase's advisors come from: the npm CLI when installed, else the Management API (auto)
    advisors_source: Literal["auto", "cli", "management-api"] = Field("auto", alias="OPSPROOF_ADVISORS_SOURCE")
    alert_webhook_url: SecretStr | None = Field(None, alias="ALERT_WEBHOOK_URL")
    trace_link_template: str = Field("http://127.0.0.1:16686/trace/{trace_id}", alias="TRACE_LINK_TEMPLATE")
    ingest_url: str | None = Field(None, alias="OPSPROOF_INGEST_URL")
    sink_url: str | None = Field(None, alias="OPSPROOF_SINK_URL")
    # path to the ed25519 PEM private key that signs evidence manifests (kept outside the evidence tree;
    # `opsproof evidence keygen PATH`); unset on the embedded default = .opsproof/keys/evidence-ed25519.pem
    signing_key: str | None = Field(None, alias="OPSPROOF_SIGNING_KEY")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Only what resolve_settings() hands over: it is the one reader of the environment and the .env (and
        records where each value came from); pydantic-settings must not read them behind its back."""
        return (init_settings,)

    # where each setting came from (alias -> source) and which .env file was read; set by resolve_settings()
    _sources: dict = PrivateAttr(default_factory=dict)
    _env_file: str | None = PrivateAttr(default=None)
    _name: str | None = PrivateAttr(default=None)  # the target's name: embedded, env, or a named target

    @property
    def name(self) -> str:
        """The target's name: `embedded`, `env`, or a named target of targets.toml (its own evidence chain)."""
        return self._name or self.target

    @field_validator("db_url", "replica_db_url")
    @classmethod
    def _dsn(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            raw = v.get_secret_value()
            if not (raw.startswith(("postgres://", "postgresql://")) or "=" in raw):
                raise ValueError("not a PostgreSQL connection string (postgresql://user:password@host:port/db)")
        return v

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
                pw = _dsn_parts(raw).get("password")
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
        """The target host without credentials (for reports): host:port/database."""
        if not self.db_url:
            return "<none>"
        d = _dsn_summary(self.db_url.get_secret_value())
        return f"{d['host']}:{d['port']}/{d['database']}"

    # -- provenance ------------------------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, str]:
        """Setting name (its environment variable) -> where its value came from; only settings that are set."""
        return dict(self._sources)

    @property
    def env_file(self) -> str | None:
        return self._env_file

    def source(self, name: str) -> str | None:
        return self._sources.get(name)

    def describe(self) -> dict:
        """The target actually used, without a secret: kind, host, port, database, and each setting's source."""
        out: dict = {"name": self.name, "kind": self.target}
        if self.db_url is not None:
            out.update(_dsn_summary(self.db_url.get_secret_value()))
        else:
            out.update({"host": None, "port": None, "database": None})
        if self.replica_db_url is not None:
            out["replica"] = _dsn_summary(self.replica_db_url.get_secret_value())
        if self.supabase_url:
            out["supabase_url"] = _public_url(self.supabase_url)
        if self.project_ref:
            out["project_ref"] = self.project_ref
        out["production"] = self.production
        out["env_file"] = self._env_file
        out["sources"] = self.sources
        return out

    def describe_line(self) -> str:
        """One line for logs and error messages: `env target db.x:5432/postgres (OPSPROOF_TARGET from .env, ...)`."""
        src = self._sources
        parts = [f"OPSPROOF_TARGET from {src.get('OPSPROOF_TARGET', DEFAULT)}"]
        if "SUPABASE_DB_URL" in src:
            parts.append(f"SUPABASE_DB_URL from {src['SUPABASE_DB_URL']}")
        label = self.target if self.name == self.target else f"{self.name} ({self.target})"
        return f"{label} target {self.host()} ({', '.join(parts)})"

    def require_reachable(self, timeout: int = 10) -> None:
        """Connect once (`select 1`); unreachable or refused = UsageError naming the target (never its secret)."""
        import psycopg

        from opsproof.target.db import describe_connect_error

        if self.db_url is None:
            raise UsageError(_missing_db_url(self))
        try:
            with psycopg.connect(self.db_url.get_secret_value(), connect_timeout=timeout, prepare_threshold=None,
                                 application_name="opsproof-preflight") as conn:
                conn.execute("select 1")
        except psycopg.Error as exc:
            raise UsageError(f"{describe_connect_error(exc)} [{self.describe_line()}]") from None


def _dsn_parts(dsn: str) -> dict:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception:  # noqa: BLE001 - a malformed DSN: best effort, never the raw string
        parts = urlsplit(dsn)
        return {"host": parts.hostname, "port": parts.port, "dbname": parts.path.lstrip("/") or None,
                "password": parts.password}


def _dsn_summary(dsn: str) -> dict:
    d = _dsn_parts(dsn)
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    port = str(d.get("port") or "5432").split(",")[0]
    return {"host": host, "port": int(port) if port.isdigit() else port,
            "database": str(d.get("dbname") or d.get("user") or "postgres")}


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _missing_db_url(s: Settings) -> str:
    return (f"OPSPROOF_TARGET=env (from {s.source('OPSPROOF_TARGET') or DEFAULT}) but SUPABASE_DB_URL is not set "
            "in the environment or .env; a configured target never falls back to the embedded stack")


# -- the .env file ------------------------------------------------------------------------------------

def dotenv_path() -> Path | None:
    """$OPSPROOF_ENV_FILE (must exist), else ./.env, else <project dir>/.env; None when there is none."""
    explicit = os.environ.get(ENV_FILE_VAR)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UsageError(f"{ENV_FILE_VAR}={explicit}: no such file")
        return p.resolve()
    for candidate in (Path.cwd() / ".env", paths.project_dir() / ".env"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _aliases() -> list[str]:
    return [f.alias for f in Settings.model_fields.values() if f.alias]


def _read(env_path: Path | None) -> dict[str, str]:
    try:
        return read_dotenv(env_path) if env_path else {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {env_path}: {exc}") from None


def apply_dotenv() -> Path | None:
    """Export the .env's keys the environment lacks (the `opsproof` command does this first, so that
    OPSPROOF_HOME & co. from .env hold for every sub-command, `opsproof stack` included)."""
    env_path = dotenv_path()
    _export(env_path, _read(env_path))
    return env_path


def resolve_settings(target: str | None = None) -> Settings:
    """The settings of this run (see the module docstring); bad settings raise UsageError (exit 2)."""
    env_path = dotenv_path()
    dotenv = _read(env_path)
    environ = {k: v for k, v in os.environ.items() if v != ""}
    exported = set(filter(None, os.environ.get(EXPORTED_VAR, "").split(",")))
    _export(env_path, dotenv)  # before the stack files are located: the .env may set OPSPROOF_HOME

    def layer(name: str) -> tuple[str | None, str | None]:
        if name in environ:
            from_dotenv = name in exported and dotenv.get(name) == environ[name]
            return environ[name], (DOTENV if from_dotenv else ENVIRONMENT)
        if name in dotenv:
            return dotenv[name], DOTENV
        return None, None

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in _aliases():
        value, source = layer(name)
        if value is not None:
            values[name], sources[name] = value, source
    if target is not None:
        if values.get("OPSPROOF_TARGET") != target:
            sources["OPSPROOF_TARGET"] = COMMAND_LINE
        values["OPSPROOF_TARGET"] = target
    target_name = values.get("OPSPROOF_TARGET", "embedded")
    if target_name not in BUILTIN_TARGETS:  # a named target (targets.toml): its own variables, its own evidence
        _apply_named(targets_mod.get(target_name), values, sources, layer)
    chosen = values.get("OPSPROOF_TARGET", "embedded")
    if chosen == "embedded":
        stack_files = dict(read_env(paths.stack_env_file()))
        stack_files.update(read_env(paths.plane_dir() / "env"))
        for name in _aliases():  # the choice of target is made above; the stack's files only fill in the rest
            if name not in values and name != "OPSPROOF_TARGET" and stack_files.get(name):
                values[name], sources[name] = stack_files[name], STACK_FILE
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(map(str, err["loc"]))
        where = f" (from {sources[loc]})" if loc in sources else ""
        raise UsageError(f"bad setting {loc}{where}: {err['msg']}") from None
    for name, field in Settings.model_fields.items():
        if field.alias and field.alias not in sources and getattr(settings, name) is not None \
                and field.default is not None:
            sources[field.alias] = DEFAULT
    settings._sources = sources
    settings._env_file = str(env_path) if env_path else None
    settings._name = target_name
    if settings.target != "embedded" and settings.db_url is None:
        raise UsageError(_missing_db_url(settings))
    return settings


def _apply_named(named, values: dict[str, str], sources: dict[str, str], layer) -> None:
    """Fill the settings from the variables the named target names (environment > .env, like any setting); its
    kind becomes OPSPROOF_TARGET. A variable it names but nobody set is an error (exit 2), never a fallback to the
    generic SUPABASE_* settings or the embedded stack."""
    from_file = f"targets.toml:{named.name}"
    values["OPSPROOF_TARGET"] = named.settings_kind
    for alias, var in named.env_names().items():
        value, source = layer(var)
        if value is None:
            if alias == "SUPABASE_DB_URL" or named.kind == "supabase":
                raise UsageError(f"target {named.name}: {var} (its {alias}) is not set in the environment or .env")
            continue
        values[alias], sources[alias] = value, f"{var} from {source}"
    if named.kind == "supabase":  # the generic settings of another target must not leak into this one
        for alias in set(ENV_ALIASES_OF_TARGET) - set(named.env_names()):
            values.pop(alias, None)
            sources.pop(alias, None)
    if named.project_ref:
        values["SUPABASE_PROJECT_REF"], sources["SUPABASE_PROJECT_REF"] = named.project_ref, from_file
    if named.production:
        values["OPSPROOF_PRODUCTION"], sources["OPSPROOF_PRODUCTION"] = "true", from_file


def _export(env_path: Path | None, dotenv: dict[str, str]) -> None:
    """The .env keys the environment lacks go into os.environ (children inherit them, with the file's path)."""
    if env_path is None:
        return
    exported = set(filter(None, os.environ.get(EXPORTED_VAR, "").split(",")))
    for key, value in dotenv.items():
        if not os.environ.get(key):
            os.environ[key] = value
            exported.add(key)
    os.environ[ENV_FILE_VAR] = str(env_path)
    os.environ[EXPORTED_VAR] = ",".join(sorted(exported))


def load_settings(target: str | None = None) -> Settings:
    """Kept for callers of the old name: the one resolution, `resolve_settings`."""
    return resolve_settings(target)

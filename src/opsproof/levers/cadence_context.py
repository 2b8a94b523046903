"""What every cadence task is handed (CadenceContext), how it reports (journal records), and how it ends:
TaskFailed (a rehearsal found something wrong: fail) or TaskError (the task could not run: error)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsproof import paths
from opsproof.errors import OpsproofError, UsageError

ACTOR = "opsproof-cadence"
PARTITIONED = ("requests", "health_probes", "spans", "agent_logs")


class TaskFailed(OpsproofError):
    """A rehearsal ran and found something wrong: the task's verdict is fail."""


class TaskError(OpsproofError):
    """A task could not run (no scratch database, the ingest unreachable, pg_dump failed): its verdict is error."""


@dataclass
class CadenceContext:
    dsn: str                                   # the target (admin / service DSN)
    policy: Any                                # opsproof.policy.Policy
    target: str = "embedded"                   # settings.target
    project_dir: Path = field(default_factory=paths.project_dir)
    scratch_dsn: str | None = None             # the embedded stack's admin DSN (restore test)
    backups_dir: Path = field(default_factory=paths.backups_dir)
    ingest_url: str | None = None              # the running ingest (key rotation rehearsal, over HTTP)
    keys: dict[str, str] = field(default_factory=dict)   # OPSPROOF_KEY_<ACCOUNT> / N8N_SIGNING_KEY, in memory only
    run_id: str = field(default_factory=lambda: "cadence-" + uuid.uuid4().hex[:10])


def context_from_settings(settings, policy, **overrides) -> CadenceContext:
    from opsproof.envfile import read_env
    from opsproof.stack import secrets as stack_secrets

    if settings.db_url is None:
        raise UsageError("no target: run `opsproof stack up` or set SUPABASE_DB_URL")
    stack_env = read_env(paths.stack_env_file())
    plane_env = read_env(paths.plane_dir() / "env")
    keys = {}
    for account in stack_secrets.SERVICE_ACCOUNTS:
        env_key = stack_secrets.env_key_for(account)
        v = os.environ.get(env_key) or stack_env.get(env_key)
        if v:
            keys[account] = v
    if os.environ.get("N8N_SIGNING_KEY"):
        keys["n8n@"] = os.environ["N8N_SIGNING_KEY"]
    c = CadenceContext(
        dsn=settings.db_url.get_secret_value(), policy=policy, target=settings.target, project_dir=paths.project_dir(),
        scratch_dsn=stack_env.get("SUPABASE_DB_URL"),
        ingest_url=settings.ingest_url or plane_env.get("OPSPROOF_INGEST_URL"), keys=keys)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def record(name: str, measured: Any, threshold: Any, ok: bool, query: str = "", detail: Any = None) -> dict:
    """One journal record (opsproof.journal.Record) of what a task did or found."""
    return {"name": name, "measured": measured, "threshold": threshold, "verdict": "pass" if ok else "fail",
            "query": query, "detail": detail}

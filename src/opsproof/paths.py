"""Where things live: the project dir (supabase/, opsproof.toml) and the state dir (.opsproof/)."""

from __future__ import annotations

import os
from pathlib import Path


def project_dir() -> Path:
    """OPSPROOF_PROJECT_DIR, else the nearest ancestor of cwd holding supabase/migrations, else the source checkout."""
    explicit = os.environ.get("OPSPROOF_PROJECT_DIR")
    if explicit:
        return Path(explicit).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "supabase" / "migrations").is_dir():
            return candidate
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """OPSPROOF_HOME, else <project>/.opsproof."""
    explicit = os.environ.get("OPSPROOF_HOME")
    return Path(explicit).resolve() if explicit else project_dir() / ".opsproof"


def stack_dir() -> Path:
    return state_dir() / "stack"


def stack_env_file() -> Path:
    return stack_dir() / "env"


def plane_dir() -> Path:
    return state_dir() / "plane"


def backups_dir() -> Path:
    return state_dir() / "backups"

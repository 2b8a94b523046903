"""The real Supabase CLI (npm `supabase`, pinned in package.json): migrations and advisors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from opsproof.errors import OpsproofError, UsageError
from opsproof.paths import project_dir


def cli_path() -> str:
    local = project_dir() / "node_modules" / ".bin" / "supabase"
    if local.exists():
        return str(local)
    found = shutil.which("supabase")
    if found:
        return found
    raise UsageError("Supabase CLI not found: run `npm ci` (package.json pins it) or `make setup`")


def _with_sslmode(url: str) -> str:
    if "sslmode=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DO_NOT_TRACK="1", SUPABASE_TELEMETRY_DISABLED="1")
    return subprocess.run(
        [cli_path(), *args, "--workdir", str(project_dir())],
        capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )


def _redact(text: str, url: str) -> str:
    from urllib.parse import urlsplit

    pw = urlsplit(url).password
    return text.replace(pw, "***") if pw else text


def db_push(db_url: str) -> str:
    """`supabase db push --remote=<url> --yes`: the same command a user runs against hosted Supabase."""
    url = _with_sslmode(db_url)
    res = _run(["db", "push", f"--remote={url}", "--yes"])
    if res.returncode != 0:
        msg = _redact((res.stderr or res.stdout).strip(), url)
        raise OpsproofError(f"supabase db push failed: {msg[-800:]}")
    return _redact(res.stdout + res.stderr, url)


def advisors(db_url: str, kind: str = "security") -> list[dict]:
    """Supabase's own advisors (Splinter lints) as a list of findings (dicts with level, name, detail...)."""
    url = _with_sslmode(db_url)
    res = _run(["db", "advisors", f"--remote={url}", "--type", kind, "--output-format", "json"])
    if res.returncode != 0:
        raise OpsproofError(f"supabase db advisors failed: {_redact(res.stderr.strip(), url)[-800:]}")
    text = res.stdout.strip()
    if not text:
        return []
    data = json.loads(text)
    if isinstance(data, dict):
        for key in ("lints", "issues", "findings", "results"):
            if isinstance(data.get(key), list):
                return data[key]
        return [data] if data else []
    return list(data)


def migration_files() -> list[Path]:
    return sorted((project_dir() / "supabase" / "migrations").glob("*.sql"))

"""KEY=VALUE files: the stack's and plane's connection details (read_env/write_env) and a user's .env (read_dotenv)."""

from __future__ import annotations

import os
from pathlib import Path


def read_env(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def write_env(path: Path, values: dict[str, str]) -> None:
    """Write atomically with mode 0600 (the file holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for key, value in values.items():
            fh.write(f"{key}={value}\n")
    os.replace(tmp, path)


def read_dotenv(path: Path) -> dict[str, str]:
    """A user's .env file, parsed as python-dotenv (and pydantic-settings) do: `export`, quotes, comments.
    No interpolation; keys without a value or with an empty one are left out (empty = unset)."""
    from dotenv import dotenv_values

    if not os.access(path, os.R_OK):
        raise OSError("not readable")
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v}

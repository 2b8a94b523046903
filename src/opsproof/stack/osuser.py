"""Run server processes under an unprivileged OS account when we are root (initdb refuses root)."""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from opsproof.errors import UsageError

CANDIDATE_ACCOUNTS = ("postgres", "nobody")


@dataclass(frozen=True)
class RunAs:
    """Who the cluster runs as. uid None = the current (non-root) user."""

    name: str
    uid: int | None = None
    gid: int | None = None
    home: str = "/tmp"

    @property
    def dropping(self) -> bool:
        return self.uid is not None

    def preexec(self):
        if not self.dropping:
            return None
        uid, gid = self.uid, self.gid

        def _drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return _drop

    def chown(self, path: Path) -> None:
        if self.dropping:
            os.chown(path, self.uid, self.gid)

    def run(self, argv: list[str], *, env: dict | None = None, timeout: float = 120, cwd: str | None = None):
        full_env = dict(os.environ if env is None else env)
        full_env["HOME"] = self.home
        return subprocess.run(
            argv, env=full_env, preexec_fn=self.preexec(), capture_output=True, text=True,
            timeout=timeout, cwd=cwd or self.home,
        )


def resolve(preferred: str | None = None) -> RunAs:
    """Non-root: run as ourselves. Root: the named/first existing unprivileged account."""
    if os.geteuid() != 0:
        return RunAs(name=pwd.getpwuid(os.geteuid()).pw_name)
    names = (preferred,) if preferred else CANDIDATE_ACCOUNTS
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            continue
        return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise UsageError(
        "running as root and no unprivileged account to run PostgreSQL under "
        "(create one: useradd --system postgres, or set OPSPROOF_PG_USER)"
    )


def can_traverse(path: Path, who: RunAs) -> bool:
    """True when `who` can reach `path` (x on every ancestor) — checked by mode bits."""
    if not who.dropping:
        return True
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == who.uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == who.gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True

"""Run server processes under an unprivileged OS account when we are root (initdb refuses root)."""

from __future__ import annotations

import os
import pwd
import stat
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


def reaches(path: Path, who: RunAs) -> bool:
    """True when `who` can enter the existing directory `path`: asked of the kernel as that account (ACLs,
    mount options and every ancestor included), falling back to the mode bits if that cannot be run."""
    if not who.dropping:
        return True
    try:
        return who.run(["test", "-x", str(path)], timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return can_traverse(path, who)


def private_dir(path: Path, who: RunAs) -> Path:
    """Create `path` (its parent must exist, e.g. /var/tmp) as a 0700 directory owned by `who`. An existing one is
    reused only when it is a real directory (not a link) owned by `who` or by us: a shared temp dir is writable
    by everyone, and a name someone else planted must never receive the cluster's files."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        owners = {os.geteuid()} | ({who.uid} if who.dropping else set())
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
            raise UsageError(f"{path} exists but is not a directory owned by {who.name}: refusing to keep the "
                             "cluster there (remove it, or point OPSPROOF_HOME at a directory the server account "
                             "can reach)")
    os.chmod(path, 0o700)
    who.chown(path)
    return path

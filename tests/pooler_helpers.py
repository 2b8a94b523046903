"""A real PgBouncer (Debian package `pgbouncer`) in front of a Postgres, for tests: its own ini and userlist in a
temp dir, a free loopback port, run as an unprivileged OS account when we are root (PgBouncer refuses root).

Auth never depends on a superuser: the userlist holds the roles' passwords (taken from the DSNs the caller
already has), PgBouncer verifies the client with SCRAM and logs in to the server with the same password.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsproof.stack.osuser import resolve as resolve_runas


def pgbouncer_binary() -> str | None:
    for cand in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """`with PgBouncer(server_dsn, mode="transaction") as pb: pb.dsn(server_dsn)` -> the same DSN via the pooler."""

    server_dsn: str = field(repr=False)
    mode: str = "transaction"  # transaction | session
    extra_dsns: Iterable[str] = field(default=(), repr=False)  # more roles to put in the userlist
    port: int = 0
    dir: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def _write_config(self) -> None:
        server = conninfo_to_dict(self.server_dsn)
        users = {}
        for d in (self.server_dsn, *self.extra_dsns):
            info = conninfo_to_dict(d)
            if info.get("user") and info.get("password"):
                users[info["user"]] = info["password"]
        self.dir = Path(tempfile.mkdtemp(prefix=f"opsproof-pgbouncer-{self.mode}-"))
        self.port = self.port or free_port()
        (self.dir / "userlist.txt").write_text("".join(f"{_q(u)} {_q(p)}\n" for u, p in users.items()))
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
* = host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir / 'userlist.txt'}
pool_mode = {self.mode}
max_client_conn = 200
default_pool_size = 20
min_pool_size = 0
server_lifetime = 3600
server_idle_timeout = 60
ignore_startup_parameters = extra_float_digits
logfile = {self.dir / 'pgbouncer.log'}
pidfile = {self.dir / 'pgbouncer.pid'}
""")
        runas = resolve_runas()
        for p in (self.dir, *self.dir.iterdir()):
            runas.chown(p)
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
        self._runas = runas

    def start(self, timeout: float = 15) -> "PgBouncer":
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self._write_config()
        self.proc = subprocess.Popen([binary, str(self.dir / "pgbouncer.ini")], preexec_fn=self._runas.preexec(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        while True:  # ready when it accepts TCP connections on its port (or it died: say why)
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}: {out[-800:]}{self.log()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not listen on {self.port} within {timeout}s: {self.log()[-800:]}")
                time.sleep(0.05)

    def dsn(self, dsn: str | None = None) -> str:
        """The given DSN (default: the server DSN) with host/port replaced by the pooler's."""
        return make_conninfo(dsn or self.server_dsn, host="127.0.0.1", port=str(self.port))

    def url(self, dsn: str | None = None) -> str:
        """The same as a postgresql:// URL (what SUPABASE_DB_URL usually holds)."""
        from urllib.parse import quote

        info = conninfo_to_dict(dsn or self.server_dsn)
        return (f"postgresql://{quote(info['user'], safe='')}:{quote(info.get('password') or '', safe='')}"
                f"@127.0.0.1:{self.port}/{info.get('dbname') or 'postgres'}")

    def log(self) -> str:
        try:
            return (self.dir / "pgbouncer.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # immediate shutdown (SIGINT waits for clients)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stdout:
            proc.stdout.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PgBouncer":
        return self if self.proc else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

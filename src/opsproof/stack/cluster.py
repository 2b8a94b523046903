"""One PostgreSQL instance (primary or streaming replica) under .opsproof/stack/, driven by pg_ctl."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from opsproof.errors import OpsproofError
from opsproof.stack.osuser import RunAs

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "synchronous_commit": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "timezone": "UTC",
}


@dataclass
class Instance:
    name: str
    datadir: Path
    logfile: Path
    port: int
    bindir: Path
    runas: RunAs

    def _bin(self, tool: str) -> str:
        return str(self.bindir / tool)

    def exists(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def options(self) -> str:
        opts = [f"-p {self.port}"]
        opts += [f"-c {k}={v}" if v else f"-c {k}=''" for k, v in SERVER_SETTINGS.items()]
        return " ".join(opts)

    def start(self, timeout: float = 60) -> None:
        if self.running():
            return
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        if not self.logfile.exists():
            self.logfile.touch()
        self.runas.chown(self.logfile)
        res = self.runas.run(
            [self._bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-o", self.options(),
             "-w", "-t", str(int(timeout)), "start"],
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            tail = self.logfile.read_text()[-600:] if self.logfile.exists() else ""
            raise OpsproofError(f"{self.name} failed to start on port {self.port}: {res.stderr.strip() or tail.strip()}")

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.running():
            return
        self.runas.run([self._bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"],
                       timeout=timeout + 10)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running():
            pid = self.pid()
            if pid:
                os.kill(pid, 9)

    def destroy(self) -> None:
        self.stop(mode="immediate")
        if self.datadir.exists():
            shutil.rmtree(self.datadir)

"""Start/stop/inspect the plane's components as real OS processes.

Each component is `python -m opsproof.plane.<name>` in its own session/process group
(start_new_session=True), with <base>/<name>.pid ("<pid> <start-time-ticks>", so a recycled pid is
never mistaken for ours) and <base>/<name>.log. `down` SIGTERMs each process group, waits, then
SIGKILLs what is left, so children go too. Nothing is restarted automatically: a crashed component
shows as down in `status` until the next `up` (which starts only what is not running).
The chosen ports/URLs go to <base>/env (KEY=VALUE), which the components and the suite read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from pydantic import ValidationError

from opsproof import paths
from opsproof.envfile import read_env, write_env
from opsproof.errors import OpsproofError, UsageError
from opsproof.plane import settings as plane_settings
from opsproof.stack.ports import free_port

COMPONENTS = ("sink", "trace_view", "ingest", "worker", "relay", "replayer", "gate", "traffic")
HTTP_COMPONENTS = {"sink": "OPSPROOF_SINK_URL", "trace_view": "OPSPROOF_TRACE_VIEW_URL", "ingest": "OPSPROOF_INGEST_URL"}
TRACE_PATH = "/trace/{trace_id}"


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    alive: bool
    heartbeat_age_s: float | None


def _start_ticks(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


class Supervisor:
    def __init__(self, base_dir: Path, stack_env: Path | None = None) -> None:
        self.base = Path(base_dir)
        self.stack_env = stack_env

    # -- files -----------------------------------------------------------------------------------
    def pidfile(self, name: str) -> Path:
        return self.base / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.base / f"{name}.log"

    @property
    def env_file(self) -> Path:
        return self.base / "env"

    def read_pid(self, name: str) -> tuple[int, str] | None:
        try:
            pid, ticks = self.pidfile(name).read_text().split()
            return int(pid), ticks
        except (OSError, ValueError):
            return None

    def alive(self, name: str) -> int | None:
        rec = self.read_pid(name)
        if rec and _start_ticks(rec[0]) == rec[1]:
            return rec[0]
        return None

    # -- settings --------------------------------------------------------------------------------
    def settings(self) -> plane_settings.PlaneSettings:
        try:
            return plane_settings.load(self.base, self.stack_env)
        except ValidationError as exc:
            raise UsageError(plane_settings.one_line(exc).removeprefix("opsproof plane: ")) from None

    def _plane_env(self) -> dict[str, str]:
        """Ports/URLs: kept from a previous up (so a partial restart keeps them), else free ports."""
        env = read_env(self.env_file)
        s = self.settings()
        taken: set[int] = set()
        for comp, key in HTTP_COMPONENTS.items():
            port_key = f"OPSPROOF_{comp.upper()}_PORT"
            if key in env and port_key in env:
                continue
            port = getattr(s, f"{comp}_port") or free_port(avoid=taken)
            taken.add(port)
            env[port_key] = str(port)
            env[key] = f"http://127.0.0.1:{port}"
        env.setdefault("OPSPROOF_API_URL", env["OPSPROOF_INGEST_URL"])
        env.setdefault("OPSPROOF_RELAY_URL", env["OPSPROOF_SINK_URL"] + "/outbox")
        if not s.alert_webhook_url:
            env.setdefault("ALERT_WEBHOOK_URL", env["OPSPROOF_SINK_URL"] + "/slack")
        # trace links open the trace view of ops.spans, unless a trace UI is configured (process env or stack env)
        stack_env = self.stack_env or Path(os.environ.get("OPSPROOF_STACK_ENV") or paths.stack_env_file())
        if os.environ.get("TRACE_LINK_TEMPLATE") or read_env(stack_env).get("TRACE_LINK_TEMPLATE"):
            env.pop("TRACE_LINK_TEMPLATE", None)
        else:
            env["TRACE_LINK_TEMPLATE"] = env["OPSPROOF_TRACE_VIEW_URL"] + TRACE_PATH
        env["OPSPROOF_PLANE_DIR"] = str(self.base)
        return env

    # -- up/down/status --------------------------------------------------------------------------
    def up(self, log=print, wait_s: float = 30.0, components: tuple[str, ...] = COMPONENTS) -> dict:
        self.base.mkdir(parents=True, exist_ok=True)
        running = {c: self.alive(c) for c in components}
        if all(running.values()):
            log(f"plane already running ({len(running)} components)")
            return {"started": [], "running": list(running)}
        s = self.settings()
        self._check_db(s)
        env = self._plane_env()
        write_env(self.env_file, env)
        child_env = {**os.environ, **plane_settings.layered_env(self.base, self.stack_env), **env,
                     "PYTHONUNBUFFERED": "1"}
        if self.stack_env:
            child_env["OPSPROOF_STACK_ENV"] = str(self.stack_env)
        started = []
        t_start = time.time()
        for name in components:
            if running[name]:
                continue
            self._spawn(name, child_env)
            started.append(name)
            if name in HTTP_COMPONENTS:
                self._wait_http(name, env[HTTP_COMPONENTS[name]], wait_s)
        self._wait_heartbeats(s, started, t_start, wait_s)
        log(f"plane up: started {', '.join(started)}; env -> {self.env_file}")
        return {"started": started, "running": [c for c in components if c not in started]}

    def _check_db(self, s) -> None:
        try:
            with psycopg.connect(s.db_url, connect_timeout=5) as conn:
                conn.execute("select 1 from ops.heartbeats limit 1")
        except psycopg.Error as exc:
            raise OpsproofError(f"plane: target database not usable ({type(exc).__name__}); is the stack up?") from None

    def _spawn(self, name: str, env: dict) -> int:
        logf = self.logfile(name).open("ab")
        proc = subprocess.Popen([sys.executable, "-m", f"opsproof.plane.{name}"], env=env, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(self.base))
        logf.close()
        ticks = None
        for _ in range(50):
            ticks = _start_ticks(proc.pid)
            if ticks:
                break
            time.sleep(0.01)
        self.pidfile(name).write_text(f"{proc.pid} {ticks or 0}\n")
        return proc.pid

    def _wait_http(self, name: str, url: str, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self.alive(name):
                raise OpsproofError(f"plane: {name} exited at start; see {self.logfile(name)}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise OpsproofError(f"plane: {name} not answering on {url} after {wait_s:.0f}s; see {self.logfile(name)}")

    def _wait_heartbeats(self, s, names: list[str], since: float, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        pending = set(names)
        with psycopg.connect(s.db_url, autocommit=True, connect_timeout=5) as conn:
            while pending and time.monotonic() < deadline:
                for name in list(pending):
                    if not self.alive(name):
                        raise OpsproofError(f"plane: {name} exited at start; see {self.logfile(name)}")
                    row = conn.execute("select extract(epoch from beat_at), pid from ops.heartbeats where component = %s",
                                       (f"plane.{name}",)).fetchone()
                    if row and float(row[0]) >= since - 1 and row[1] == self.alive(name):
                        pending.discard(name)
                time.sleep(0.1)
        if pending:
            raise OpsproofError(f"plane: no heartbeat from {', '.join(sorted(pending))} within {wait_s:.0f}s")

    def down(self, log=print, grace_s: float = 10.0) -> list[str]:
        stopped = []
        pids = {}
        for name in COMPONENTS:
            pid = self.alive(name)
            rec = self.read_pid(name)
            if pid is None and rec and _start_ticks(rec[0]) is None and _group_alive(rec[0]):
                pid = rec[0]  # the leader died but left children in its group: they are ours, stop them too
            if pid:
                pids[name] = pid
                _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
            time.sleep(0.05)
        for name, pid in pids.items():
            if _group_alive(pid):
                _killpg(pid, signal.SIGKILL)
            stopped.append(name)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
            time.sleep(0.05)
        left = [n for n, p in pids.items() if _group_alive(p)]
        for name in COMPONENTS:
            self.pidfile(name).unlink(missing_ok=True)
        if left:
            raise OpsproofError(f"plane: could not stop {', '.join(left)}")
        log(f"plane down: stopped {', '.join(stopped) or 'nothing (not running)'}")
        return stopped

    def status(self) -> list[ComponentStatus]:
        beats: dict[str, float] = {}
        try:
            s = self.settings()
            with psycopg.connect(s.db_url, connect_timeout=3) as conn:
                for comp, age in conn.execute(
                        "select component, extract(epoch from now() - beat_at) from ops.heartbeats "
                        "where component like 'plane.%'").fetchall():
                    beats[comp.removeprefix("plane.")] = float(age)
        except (psycopg.Error, OpsproofError):
            pass
        out = []
        for name in COMPONENTS:
            rec = self.read_pid(name)
            pid = self.alive(name)
            out.append(ComponentStatus(name, rec[0] if rec else None, pid is not None, beats.get(name)))
        return out


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process still in process group `pgid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False

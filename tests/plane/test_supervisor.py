"""`plane up | down | status | logs` as the real command: processes, pid files, idempotency, no leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from plane_helpers import wait_for

from opsproof.envfile import read_env, write_env
from opsproof.plane.supervisor import COMPONENTS


def _cli(*args, base: Path, stack_env: Path, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "OPSPROOF_", "ALERT_", "N8N_"))}
    full.update({"OPSPROOF_PLANE_CYCLE_S": "0.5", "OPSPROOF_PROBE_INTERVAL_S": "1"}, **env)
    return subprocess.run([sys.executable, "-m", "opsproof.plane.cli", *args, "--dir", str(base),
                           *(["--stack-env", str(stack_env)] if args[0] != "logs" else [])],
                          env=full, capture_output=True, text=True, timeout=120)


def _group_members(pgids: set[int]) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) in pgids:
                out.append(int(entry.name))
    return out


def test_up_is_idempotent_status_shows_a_killed_component_and_down_leaves_nothing(plane_db, clean, tmp_path):
    base, stack_env = tmp_path / "plane", tmp_path / "stack.env"
    write_env(stack_env, {"SUPABASE_DB_URL": plane_db.primary, "OPSPROOF_REPLICA_DB_URL": plane_db.replica,
                          "SUPABASE_JWT_SECRET": "s" * 40, "N8N_SIGNING_KEY": "n" * 64})
    try:
        up = _cli("up", base=base, stack_env=stack_env)
        assert up.returncode == 0, up.stderr + up.stdout
        env = read_env(base / "env")
        for key in ("OPSPROOF_INGEST_URL", "OPSPROOF_SINK_URL", "OPSPROOF_API_URL", "OPSPROOF_RELAY_URL",
                    "ALERT_WEBHOOK_URL"):
            assert env[key].startswith("http://127.0.0.1:"), key
        assert httpx.get(env["OPSPROOF_INGEST_URL"] + "/healthz").json()["ok"]
        pids = {c: int((base / f"{c}.pid").read_text().split()[0]) for c in COMPONENTS}
        assert all(_group_members({p}) for p in pids.values())
        st = _cli("status", base=base, stack_env=stack_env)
        assert st.returncode == 0, st.stdout
        assert all(c in st.stdout for c in COMPONENTS) and "DOWN" not in st.stdout

        again = _cli("up", base=base, stack_env=stack_env)
        assert again.returncode == 0 and "already running" in again.stdout
        assert {c: int((base / f"{c}.pid").read_text().split()[0]) for c in COMPONENTS} == pids

        # the traffic generator's writes go through the relay to the sink: the plane is live end to end
        wait_for(lambda: httpx.get(env["OPSPROOF_SINK_URL"] + "/received", params={"path": "/outbox"}).json()["count"] > 0,
                 timeout=20, what="relayed traffic at the sink")

        os.kill(pids["relay"], signal.SIGKILL)
        time.sleep(0.3)
        st = _cli("status", base=base, stack_env=stack_env)
        assert st.returncode == 1
        line = next(ln for ln in st.stdout.splitlines() if "relay" in ln)
        assert "DOWN" in line and str(pids["relay"]) in line
        time.sleep(1.5)
        st2 = _cli("status", base=base, stack_env=stack_env)
        assert "DOWN" in next(ln for ln in st2.stdout.splitlines() if "relay" in ln), "no silent restart"

        logs = _cli("logs", "worker", base=base, stack_env=stack_env)
        assert logs.returncode == 0 and "worker pool up" in logs.stdout
        assert not any("n" * 64 in (base / f"{c}.log").read_text() for c in COMPONENTS), "a secret reached a log"
    finally:
        down = _cli("down", base=base, stack_env=stack_env)
    assert down.returncode == 0, down.stderr
    time.sleep(0.2)
    assert _group_members(set(pids.values())) == [], "processes left behind after down"
    assert not list(base.glob("*.pid"))
    st = _cli("status", base=base, stack_env=stack_env)
    assert st.returncode == 1


def test_bad_settings_one_line_exit_2(plane_db, tmp_path):
    base, stack_env = tmp_path / "plane", tmp_path / "stack.env"
    write_env(stack_env, {"SUPABASE_DB_URL": plane_db.primary, "N8N_SIGNING_KEY": "n" * 64})
    res = _cli("up", base=base, stack_env=stack_env, OPSPROOF_PLANE_CYCLE_S="soon")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "OPSPROOF_PLANE_CYCLE_S" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "opsproof.plane.worker"], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "OPSPROOF_STACK_ENV": str(tmp_path / "none"),
                              "OPSPROOF_PLANE_DIR": str(base), "MAX_RETRY_ATTEMPTS": "-1",
                              "SUPABASE_DB_URL": plane_db.primary})
    assert res.returncode == 2 and "MAX_RETRY_ATTEMPTS" in res.stderr and res.stderr.strip().count("\n") == 0

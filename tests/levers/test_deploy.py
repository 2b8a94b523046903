"""deploy/: the crontab, the systemd units and the GitHub Actions workflow parse and say what they should."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_OPSPROOF = REPO / ".venv" / "bin" / "opsproof"


def _cron_field_ok(field: str, lo: int, hi: int) -> bool:
    for part in field.split(","):
        m = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not m:
            return False
        if m.group(1) != "*":
            nums = [int(x) for x in m.group(1).split("-")]
            if any(n < lo or n > hi for n in nums):
                return False
    return True


def _crontab() -> tuple[dict[str, str], list[str]]:
    """(the crontab's environment assignments, each job's command), parsed as cron does."""
    env, jobs = {}, []
    for ln in (DEPLOY / "crontab").read_text().splitlines():
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", s)
        if m:
            env[m.group(1)] = m.group(2).strip().strip('"')  # cron does not expand variables here
            continue
        parts = s.split(None, 5)
        assert len(parts) == 6, f"not a cron line: {ln!r}"
        for f, (lo, hi) in zip(parts[:5], ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))):
            assert _cron_field_ok(f, lo, hi), f"bad cron field {f!r} in {ln!r}"
        jobs.append(parts[5])
    return env, jobs


def test_crontab_lines_parse_and_cover_every_schedule():
    env, jobs = _crontab()
    commands = [re.search(r"opsproof (daily|cadence \w+)", j).group(1) for j in jobs]
    assert sorted(commands) == ["cadence daily", "cadence monthly", "cadence weekly", "daily"]
    assert all("flock" in j for j in jobs), "every job takes the same lock (one writer of today's pack)"
    assert len({re.search(r"flock -w \d+ (\S+)", j).group(1) for j in jobs}) == 1
    # cron's PATH lacks node where nodesource/nvm put it: the crontab sets one that has it (written out)
    assert "$" not in env["PATH"] and {"/usr/local/bin", "/usr/bin"} <= set(env["PATH"].split(":"))
    assert env["SHELL"] == "/bin/sh"
    text = (DEPLOY / "crontab").read_text()
    # Debian's cron ignores CRON_TZ: the file says so and how to get UTC
    assert "CRON_TZ" in text and "Debian" in text and "timedatectl set-timezone Etc/UTC" in text


FAKE_OPSPROOF = """#!/bin/sh
# stands in for .venv/bin/opsproof: records what the job gave it and whether the job's lock is held
if flock -n "$OPSPROOF_DIR/.opsproof/cron.lock" true; then lock=free; else lock=held; fi
echo "fake-opsproof args=[$*] target=$OPSPROOF_TARGET lock=$lock node=$(command -v node || echo none) cwd=$(pwd)"
"""


def test_every_cron_job_runs_from_a_clean_environment_for_a_hosted_target(tmp_path):
    """Each job's command line, run as cron runs it (SHELL -c, only the crontab's variables, HOME/LOGNAME), in a
    checkout with no .opsproof/ and no reports/ (a hosted target: the embedded stack never ran): the job creates
    its lock and log folders itself, holds the lock while opsproof runs, and finds node on its PATH."""
    env, jobs = _crontab()
    for i, job in enumerate(jobs):
        root = tmp_path / f"checkout{i}"
        (root / ".venv" / "bin").mkdir(parents=True)
        fake = root / ".venv" / "bin" / "opsproof"
        fake.write_text(FAKE_OPSPROOF)
        fake.chmod(0o755)
        cron_env = dict(env, OPSPROOF_DIR=str(root), HOME=str(tmp_path), LOGNAME="opsproof",
                        OPSPROOF_TARGET="env")  # the target's settings come from the checkout's .env in real use
        res = subprocess.run([env["SHELL"], "-c", job], env=cron_env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{job}: exit {res.returncode}: {res.stderr}"
        assert not res.stdout and not res.stderr, "a job's output goes to its log, not to cron's mail"
        assert (root / ".opsproof" / "cron.lock").is_file()
        log = (root / "reports" / "cron.log").read_text()
        want = re.search(r"bin/opsproof ((?:cadence )?\w+)", job).group(1)
        assert f"args=[{want}]" in log and "target=env" in log and f"cwd={root}" in log, log
        assert "lock=held" in log, "opsproof runs while the job holds the lock"
        if shutil.which("node", path=env["PATH"]) is None:
            pytest.skip("node is not installed in the crontab's PATH on this machine")
        assert "node=none" not in log, log


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key possibly repeated (SystemCallFilter=, ...)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text().splitlines():
        ln = raw.strip()
        if not ln or ln.startswith(("#", ";")):
            continue
        if ln.startswith("["):
            section = ln.strip("[]")
            out.setdefault(section, {})
            continue
        assert section, f"{path.name}: key outside a section: {ln!r}"
        key, eq, value = ln.partition("=")
        assert eq, f"{path.name}: not key=value: {ln!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def _units() -> list[Path]:
    return sorted((DEPLOY / "systemd").iterdir())


def _services() -> dict[str, dict]:
    return {p.name: _unit(p) for p in _units() if p.suffix == ".service"}


SANDBOX = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
           "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
           "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
           "SystemCallArchitectures": "native", "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes"}


def test_systemd_units_are_well_formed_and_sandboxed():
    names = {p.name for p in _units()}
    assert {"opsproof-monitor.service", "opsproof-monitor.timer", "opsproof-cadence@.service",
            "opsproof-cadence-daily.timer", "opsproof-cadence-weekly.timer", "opsproof-cadence-monthly.timer",
            "opsproof-stack.service", "opsproof-plane.service"} <= names
    for p in _units():
        u = _unit(p)
        assert "Unit" in u and u["Unit"].get("Description")
        if p.suffix == ".timer":
            unit = u["Timer"]["Unit"][0]
            assert unit.replace("@daily", "@").replace("@weekly", "@").replace("@monthly", "@") in names, unit
            assert u["Install"]["WantedBy"] == ["timers.target"]
            assert all(c.endswith(" UTC") for c in u["Timer"]["OnCalendar"])
    for name, u in _services().items():
        svc = u["Service"]
        assert "Conflicts" not in u["Unit"], f"{name}: Conflicts= stops a running unit; the lock is flock"
        assert svc["User"] == ["opsproof"] or svc.get("DynamicUser") == ["yes"], f"{name} runs as root"
        for key, value in SANDBOX.items():
            assert svc.get(key) == [value], f"{name}: {key}={svc.get(key)}"
        assert any(v.startswith("@system-service") for v in svc["SystemCallFilter"]), name
        assert "/var/lib/opsproof" in svc["ReadWritePaths"], name   # state, evidence, the lock
        env = " ".join(svc["Environment"])
        assert "PATH=/opt/opsproof/node_modules/.bin:/usr/local/bin:/usr/bin:/bin" in env, name
        assert "OPSPROOF_HOME=/var/lib/opsproof" in env, name
        assert svc["EnvironmentFile"] == ["-/etc/opsproof/env"], name


def test_systemd_runs_are_locked_oneshots_and_the_stack_and_plane_their_own_units():
    s = _services()
    locks = set()
    for name, cmd in (("opsproof-monitor.service", "opsproof daily"),
                      ("opsproof-cadence@.service", "opsproof cadence %i")):
        u = s[name]
        assert u["Service"]["Type"] == ["oneshot"]
        (start,) = u["Service"]["ExecStart"]
        m = re.match(r"^/usr/bin/flock --wait \d+ (\S+) /opt/opsproof/\.venv/bin/(opsproof .*)$", start)
        assert m and m.group(2).startswith(cmd), start
        assert "--evidence-dir=/var/lib/opsproof/evidence" in start
        locks.add(m.group(1))
        # ordered after the long-running units, but never pulling them in (a hosted target needs neither)
        after = " ".join(u["Unit"]["After"])
        assert "opsproof-stack.service" in after and "opsproof-plane.service" in after
        assert not any("opsproof-" in w for w in u["Unit"].get("Wants", []) + u["Unit"].get("Requires", []))
    assert len(locks) == 1 and next(iter(locks)).startswith("/var/lib/opsproof/"), locks
    stack, plane = s["opsproof-stack.service"]["Service"], s["opsproof-plane.service"]
    assert stack["Type"] == ["oneshot"] and stack["RemainAfterExit"] == ["yes"]
    assert stack["ExecStart"][0].endswith("opsproof stack up") and stack["ExecStop"][0].endswith("opsproof stack down")
    assert plane["Service"]["Restart"] == ["on-failure"] and plane["Service"]["Type"] == ["simple"]
    assert "opsproof plane up" in plane["Service"]["ExecStart"][0]
    assert "opsproof plane status" in plane["Service"]["ExecStart"][0]   # exits when a component dies: restarted
    assert plane["Service"]["ExecStop"][0].endswith("opsproof plane down")
    assert plane["Unit"]["Requires"] == ["opsproof-stack.service"]
    for name in ("opsproof-stack.service", "opsproof-plane.service"):
        assert s[name]["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_watch_is_a_long_running_service_restarted_always():
    w = _services()["opsproof-watch.service"]
    svc = w["Service"]
    assert svc["Type"] == ["simple"] and svc["Restart"] == ["always"]
    (start,) = svc["ExecStart"]
    assert start == "/opt/opsproof/.venv/bin/opsproof watch --evidence-dir=/var/lib/opsproof/evidence"
    assert not any("opsproof-" in v for v in w["Unit"].get("Wants", []) + w["Unit"].get("Requires", []))
    assert w["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_daily_command_runs_under_the_lock(tmp_path):
    """The daily unit's ExecStart, pointed at a fake opsproof and a temp state dir: opsproof runs holding the lock
    that every run unit takes (flock's exclusion does the rest; nothing is stopped)."""
    (start,) = _services()["opsproof-monitor.service"]["Service"]["ExecStart"]
    fake = tmp_path / "opsproof"
    lock = tmp_path / "state" / "run.lock"
    fake.write_text(f"#!/bin/sh\nif flock -n {lock} true; then echo free; else echo held; fi\necho \"$*\"\n")
    fake.chmod(0o755)
    (tmp_path / "state").mkdir()
    argv = start.replace("/opt/opsproof/.venv/bin/opsproof", str(fake)).replace("/var/lib/opsproof", str(tmp_path / "state"))
    res = subprocess.run(argv.split(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.splitlines()[0] == "held", res.stdout + res.stderr
    assert res.stdout.splitlines()[1].startswith("daily --evidence-dir=")


def _installed_copies(tmp_path: Path) -> list[str]:
    """The units as installed at /opt/opsproof, pointed at this checkout so ExecStart exists."""
    for p in _units():
        text = p.read_text().replace("/opt/opsproof/.venv/bin/opsproof", str(VENV_OPSPROOF)).replace(
            "WorkingDirectory=/opt/opsproof", f"WorkingDirectory={REPO}")
        (tmp_path / p.name).write_text(text)
        if p.name == "opsproof-cadence@.service":
            for inst in ("daily", "weekly", "monthly"):
                (tmp_path / f"opsproof-cadence@{inst}.service").write_text(text)
    return [f.name for f in sorted(tmp_path.iterdir()) if f.name != "opsproof-cadence@.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not available")
def test_systemd_analyze_verify(tmp_path):
    files = _installed_copies(tmp_path)
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *files], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    # and the check really checks: a broken unit is reported
    (tmp_path / "broken.service").write_text("[Service]\nType=oneshot\nExecStart=relative/path\n")
    bad = subprocess.run(["systemd-analyze", "verify", "--man=no", "broken.service"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 or bad.stderr.strip()
    for p in _units():
        for cal in re.findall(r"^OnCalendar=(.+)$", p.read_text(), re.M):
            cal_res = subprocess.run(["systemd-analyze", "calendar", cal], capture_output=True, text=True, timeout=30)
            assert cal_res.returncode == 0, f"{p.name}: {cal}: {cal_res.stderr}"


def _has_offline_security() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    res = subprocess.run(["systemd-analyze", "security", "--help"], capture_output=True, text=True, timeout=30)
    return "--offline" in res.stdout


@pytest.mark.skipif(not _has_offline_security(), reason="systemd-analyze security --offline needs systemd >= 250")
def test_systemd_analyze_security_at_most_5(tmp_path):
    files = [f for f in _installed_copies(tmp_path) if f.endswith(".service")]
    for name in files:
        res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "--threshold=50",
                              name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
        assert m, res.stdout[-500:] + res.stderr
        assert float(m.group(1)) <= 5.0, f"{name}: exposure {m.group(1)}"
    # and the measure measures: the root, unsandboxed unit of before scores UNSAFE
    (tmp_path / "bare.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "bare.service"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout).group(1)) > 9.0


def _parse_yaml(path: Path) -> dict:
    try:
        import yaml  # type: ignore

        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and True in doc:  # PyYAML speaks YAML 1.1: a bare `on:` key is the boolean true
            doc["on"] = doc.pop(True)
        return doc
    except ImportError:
        pass
    if not (REPO / "node_modules" / "yaml").is_dir() or shutil.which("node") is None:
        pytest.skip("no YAML parser (PyYAML or node_modules/yaml)")
    res = subprocess.run(["node", "-e", "const Y=require('yaml');const fs=require('fs');"
                          "const d=Y.parseDocument(fs.readFileSync(process.argv[1],'utf8'));"
                          "if(d.errors.length){console.error(d.errors[0].message);process.exit(1)}"
                          "console.log(JSON.stringify(d.toJS()))", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_github_workflow_runs_the_gate_and_uploads_the_pack():
    wf = _parse_yaml(DEPLOY / "github" / "opsproof-gate.yml")
    assert {"name", "on", "jobs"} <= set(wf)
    assert "pull_request" in wf["on"] and "push" in wf["on"]
    steps = wf["jobs"]["gate"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "opsproof gate" in runs or "pytest -m gate" in runs
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert upload and upload[0]["with"]["path"].startswith("reports/evidence") and upload[0]["if"] == "always()"
    assert all(isinstance(s, dict) and ("run" in s or "uses" in s) for s in steps)
    assert "pull_request_target" not in wf["on"], "a fork's code must never run with the project's secrets"
    assert any("opsproof doctor" in s.get("run", "") for s in steps)


def test_github_workflow_says_a_forks_pr_proves_the_embedded_stack_only():
    text = (DEPLOY / "github" / "opsproof-gate.yml").read_text()
    header = text[: text.index("name:")]
    assert "FORK PROVES THE EMBEDDED STACK ONLY" in header.upper() and "no" in header and "secrets" in header
    assert "${{ secrets.SUPABASE_DB_URL != '' && 'env' || 'embedded' }}" in text

"""deploy/: the crontab, the systemd units and the GitHub Actions workflow parse and say what they should."""

from __future__ import annotations

import configparser
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


def test_crontab_lines_parse_and_cover_every_schedule():
    jobs = []
    for ln in (DEPLOY / "crontab").read_text().splitlines():
        s = ln.strip()
        if not s or s.startswith("#") or re.match(r"^[A-Z_]+=", s):
            continue
        parts = s.split(None, 5)
        assert len(parts) == 6, f"not a cron line: {ln!r}"
        for f, (lo, hi) in zip(parts[:5], ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))):
            assert _cron_field_ok(f, lo, hi), f"bad cron field {f!r} in {ln!r}"
        jobs.append(parts[5])
    commands = [re.search(r"opsproof (daily|cadence \w+)", j).group(1) for j in jobs]
    assert sorted(commands) == ["cadence daily", "cadence monthly", "cadence weekly", "daily"]
    assert all("flock" in j for j in jobs), "every job takes the same lock (one writer of today's pack)"


def _units() -> list[Path]:
    return sorted((DEPLOY / "systemd").iterdir())


def test_systemd_units_are_well_formed_ini():
    names = {p.name for p in _units()}
    assert {"opsproof-monitor.service", "opsproof-monitor.timer", "opsproof-cadence@.service",
            "opsproof-cadence-daily.timer", "opsproof-cadence-weekly.timer", "opsproof-cadence-monthly.timer"} <= names
    for p in _units():
        cp = configparser.ConfigParser(strict=True, interpolation=None)
        cp.optionxform = str
        cp.read_string(p.read_text())
        assert "Unit" in cp
        if p.suffix == ".timer":
            unit = cp["Timer"]["Unit"]
            assert unit.replace("@daily", "@").replace("@weekly", "@").replace("@monthly", "@") in names, unit
            assert cp["Install"]["WantedBy"] == "timers.target"
        else:
            assert cp["Service"]["Type"] == "oneshot" and "opsproof" in cp["Service"]["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not available")
def test_systemd_analyze_verify(tmp_path):
    """The units as installed at /opt/opsproof, pointed at this checkout so ExecStart exists."""
    for p in _units():
        text = p.read_text().replace("/opt/opsproof/.venv/bin/opsproof", str(VENV_OPSPROOF)).replace(
            "WorkingDirectory=/opt/opsproof", f"WorkingDirectory={REPO}")
        (tmp_path / p.name).write_text(text)
        if p.name == "opsproof-cadence@.service":
            for inst in ("daily", "weekly", "monthly"):
                (tmp_path / f"opsproof-cadence@{inst}.service").write_text(text)
    files = [f.name for f in sorted(tmp_path.iterdir()) if f.name != "opsproof-cadence@.service"]
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


def _parse_yaml(path: Path) -> dict:
    try:
        import yaml  # type: ignore

        return yaml.safe_load(path.read_text())
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

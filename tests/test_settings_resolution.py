"""One resolution of settings for every entry point: environment > .env > the embedded stack's files.

Each command runs in a subprocess whose environment holds nothing of opsproof's (PATH, HOME, LANG only) and
whose current directory holds the `.env`. A configured target is used, and never replaced by the embedded
default: no command creates a stack under OPSPROOF_HOME, and what is measured is named (host, port, database,
where each setting came from) in the results, the manifest and the HTML report, never a secret.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "dotenv-only-pw-4711"
DB = "opsproof_dotenv_db"
KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")


def scrubbed_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in KEEP if k in os.environ}
    env.update(extra)
    return env


def opsproof(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opsproof.cli", *args], cwd=cwd, env=env or scrubbed_env(),
                          capture_output=True, text=True, timeout=timeout)


def write_dotenv(where: Path, home: Path, **settings: str) -> Path:
    lines = {"OPSPROOF_HOME": str(home), "OPSPROOF_PROJECT_DIR": str(REPO), "OPSPROOF_NO_ALLURE_HTML": "1",
             **settings}
    path = where / ".env"
    path.write_text("# written by test_settings_resolution\n" + "".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections for as long as the test runs (bound, never listening)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def project(tmp_path):
    """A working directory for the .env, a fresh OPSPROOF_HOME (must stay without a stack), an evidence root."""
    work = tmp_path / "work"
    work.mkdir()
    return work, tmp_path / "home", tmp_path / "evidence"


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert len(err.splitlines()) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    return err


def assert_nothing_embedded(home: Path, evidence: Path) -> None:
    assert not (home / "stack").exists(), "an embedded stack was created"
    assert not (home / "plane").exists(), "the embedded plane was started"
    assert not list(evidence.glob("????-??-??")), "a pack was written"


ENTRY_POINTS = {
    "daily": ("daily", "--evidence-dir={ev}"),
    "gate": ("gate", "--evidence-dir={ev}"),
    "drills": ("drills", "--evidence-dir={ev}"),
    "acceptance": ("acceptance", "--evidence-dir={ev}"),
    "cadence": ("cadence", "daily", "--evidence-dir={ev}"),
    "incident": ("incident", "list"),
    "levers": ("levers", "list"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_dotenv_only_target_is_used_by_every_entry_point(entry, project, closed_port):
    """OPSPROOF_TARGET=env + SUPABASE_DB_URL only in .env: the command goes to that (unreachable) target: exit 2,
    one line naming host, port, database and that the settings came from .env; no embedded stack, no pack."""
    work, home, ev = project
    write_dotenv(work, home, OPSPROOF_TARGET="env",
                 SUPABASE_DB_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed_port}/{DB}")
    args = [a.format(ev=ev) for a in ENTRY_POINTS[entry]]
    proc = opsproof(*args, cwd=work)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = one_line_error(proc)
    assert f"127.0.0.1:{closed_port}/{DB}" in err, err
    assert "OPSPROOF_TARGET from .env" in err and "SUPABASE_DB_URL from .env" in err, err
    assert PASSWORD not in proc.stdout + proc.stderr
    assert_nothing_embedded(home, ev)


@pytest.mark.parametrize("entry", ["daily", "gate", "cadence", "levers"])
def test_configured_target_without_db_url_never_falls_back_to_embedded(entry, project):
    work, home, ev = project
    write_dotenv(work, home, OPSPROOF_TARGET="env")
    args = [a.format(ev=ev) for a in ENTRY_POINTS[entry]]
    proc = opsproof(*args, cwd=work)
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert "SUPABASE_DB_URL is not set" in err and "OPSPROOF_TARGET=env (from .env)" in err, err
    assert_nothing_embedded(home, ev)


def test_environment_beats_dotenv(project, closed_port):
    """The same setting in both: the environment's value is the one used, and the source says so."""
    work, home, ev = project
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    try:
        env_port = other.getsockname()[1]
        write_dotenv(work, home, OPSPROOF_TARGET="env",
                     SUPABASE_DB_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed_port}/{DB}")
        env = scrubbed_env(SUPABASE_DB_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{env_port}/from_env_db")
        proc = opsproof("gate", f"--evidence-dir={ev}", cwd=work, env=env)
    finally:
        other.close()
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert f"127.0.0.1:{env_port}/from_env_db" in err and "SUPABASE_DB_URL from environment" in err, err
    assert "OPSPROOF_TARGET from .env" in err, err
    assert_nothing_embedded(home, ev)


RESOLVE = ("import json; from opsproof.config import resolve_settings; import sys; "
           "print(json.dumps(resolve_settings(*sys.argv[1:]).describe()))")


def resolve(cwd: Path, *target: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", RESOLVE, *target], cwd=cwd, env=scrubbed_env(**env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_precedence_environment_then_dotenv_then_stack_files_then_default(project):
    work, home, _ = project
    (home / "stack").mkdir(parents=True)
    (home / "stack" / "env").write_text(
        "OPSPROOF_TARGET=embedded\nSUPABASE_DB_URL=postgresql://postgres:stackpw12345@127.0.0.1:5999/postgres\n"
        "SUPABASE_URL=http://127.0.0.1:5998\n")
    write_dotenv(work, home, SUPABASE_URL="http://dotenv.example:8000")
    d = resolve(work)  # embedded (default): the DSN from the stack file, SUPABASE_URL from .env
    assert d["kind"] == "embedded" and d["port"] == 5999
    assert d["sources"]["OPSPROOF_TARGET"] == "default"
    assert d["sources"]["SUPABASE_DB_URL"] == "embedded stack file"
    assert d["sources"]["SUPABASE_URL"] == ".env" and d["supabase_url"] == "http://dotenv.example:8000"
    assert d["env_file"] == str((work / ".env").resolve())
    d = resolve(work, SUPABASE_URL="http://environ.example:8000")
    assert d["sources"]["SUPABASE_URL"] == "environment" and d["supabase_url"] == "http://environ.example:8000"
    assert "stackpw12345" not in json.dumps(d)

    # a non-embedded target never reads the stack files
    write_dotenv(work, home, OPSPROOF_TARGET="env",
                 SUPABASE_DB_URL="postgresql://postgres:x12345678@db.example.org:6543/app")
    d = resolve(work)
    assert (d["kind"], d["host"], d["port"], d["database"]) == ("env", "db.example.org", 6543, "app")
    assert d["sources"]["OPSPROOF_TARGET"] == ".env" and d["sources"]["SUPABASE_DB_URL"] == ".env"
    assert "SUPABASE_URL" not in d["sources"]
    # the environment's choice of target beats the .env's; the command line beats both
    assert resolve(work, OPSPROOF_TARGET="embedded")["sources"]["OPSPROOF_TARGET"] == "environment"
    d = resolve(work, "embedded")
    assert d["kind"] == "embedded" and d["sources"]["OPSPROOF_TARGET"] == "command line"
    assert d["sources"]["SUPABASE_DB_URL"] == ".env"  # .env still beats the stack's file
    # OPSPROOF_ENV_FILE names the file explicitly (a child process re-reads the same one)
    elsewhere = work / "sub"
    elsewhere.mkdir()
    d = resolve(elsewhere, OPSPROOF_ENV_FILE=str(work / ".env"))
    assert d["kind"] == "env" and d["sources"]["SUPABASE_DB_URL"] == ".env"


def test_bad_policy_to_daily_is_exit_2_before_anything_starts(project):
    work, home, ev = project
    write_dotenv(work, home)  # the embedded default: a good policy would bring a stack up
    bad = work / "bad.toml"
    bad.write_text("[slo\nuptime_pct_min = 99.95\n")
    for policy, needle in ((bad, "not valid TOML"), (work / "missing.toml", "policy file not found"),
                           (work, "policy")):
        proc = opsproof("daily", f"--policy={policy}", f"--evidence-dir={ev}", cwd=work)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert needle in one_line_error(proc)
        assert_nothing_embedded(home, ev)
        assert not ev.exists()


def test_bad_evidence_dir_and_window_to_daily_are_exit_2_before_anything_starts(project):
    work, home, _ = project
    write_dotenv(work, home)
    blocker = work / "a-file"
    blocker.write_text("x")
    for args, needle in (([f"--evidence-dir={blocker}"], "not a directory"),
                         ([f"--evidence-dir={blocker}/sub"], "cannot be created"),
                         (["--window=forever", f"--evidence-dir={work}/ev"], "window"),
                         (["--target=hosted", f"--evidence-dir={work}/ev"], "unknown target 'hosted'")):
        proc = opsproof("daily", *args, cwd=work)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert needle in one_line_error(proc)
        assert not (home / "stack").exists()


@pytest.fixture
def restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_daily_hands_target_policy_and_evidence_dir_to_cadence_and_pytest(project, monkeypatch, restore_environ):
    """The embedded daily run: its cadence step and its pytest run get the same --target, --policy, --evidence-dir."""
    from opsproof import runner

    work, home, ev = project
    write_dotenv(work, home)
    policy = work / "policy.toml"
    policy.write_text((REPO / "opsproof.toml").read_text())
    for k in list(os.environ):
        if k.startswith(("OPSPROOF_", "SUPABASE_")):
            monkeypatch.delenv(k)
    monkeypatch.chdir(work)
    calls = []
    monkeypatch.setattr(runner, "ensure_embedded", lambda **kw: calls.append(["ensure_embedded"]))
    monkeypatch.setattr(runner.subprocess, "call", lambda argv, **kw: calls.append(list(argv)) or 0)
    assert runner.run_suite("daily", ["--policy", "policy.toml", f"--evidence-dir={ev}", "-x"]) == 0
    assert calls[0] == ["ensure_embedded"]
    cadence, suite = calls[1], calls[2]
    want = ["--target=embedded", f"--policy={policy.resolve()}", f"--evidence-dir={ev.resolve()}"]
    assert cadence[-5:] == ["cadence", "daily", *want]
    plugin = ["--opsproof-suite=daily", "--opsproof-target=embedded", f"--opsproof-policy={policy.resolve()}",
              f"--opsproof-evidence-dir={ev.resolve()}"]
    assert suite[3:5] == ["-m", "daily"] and all(w in suite for w in plugin) and suite[-1] == "-x"
    assert os.environ["OPSPROOF_HOME"] == str(home) and os.environ["OPSPROOF_ENV_FILE"] == str((work / ".env").resolve())


# -- against the test session's stack: what was measured is named in every record of the run ----------------

def test_gate_on_a_dotenv_target_names_it_in_results_manifest_and_report(stack, project):
    work, home, ev = project
    dsn = stack.admin_dsn()
    from opsproof.config import _dsn_summary

    want = _dsn_summary(dsn)
    write_dotenv(work, home, OPSPROOF_TARGET="env", SUPABASE_DB_URL=dsn)
    proc = opsproof("gate", f"--evidence-dir={ev}", cwd=work, timeout=900)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (home / "stack").exists()
    pack = sorted(p for p in ev.glob("????-??-??") if p.is_dir())[-1]
    results = json.loads((pack / "results-gate.json").read_text())
    target = results["target"]
    assert (target["kind"], target["host"], target["port"], target["database"]) == (
        "env", want["host"], want["port"], want["database"])
    assert target["sources"]["SUPABASE_DB_URL"] == ".env" and target["sources"]["OPSPROOF_TARGET"] == ".env"
    meta = json.loads((pack / "manifest.json").read_text())["metadata"]
    assert meta["target"] == "env" and meta["target_detail"] == target
    assert meta["host"] == f"{want['host']}:{want['port']}/{want['database']}"
    html = (pack / "report-gate.html").read_text()
    assert "Target measured" in html and f"{want['host']}:{want['port']}/{want['database']}" in html
    password = dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    for f in (pack / "results-gate.json", pack / "manifest.json", pack / "report-gate.html"):
        assert password not in f.read_text()
    assert password not in proc.stdout + proc.stderr


def test_plain_pytest_gate_on_a_dotenv_target_records_that_target(stack, project):
    """`pytest -m gate` run by hand (no opsproof command) from a directory holding the .env: the plugin resolves the
    same way, measures the .env's target and records it as such (not "embedded")."""
    work, home, ev = project
    write_dotenv(work, home, OPSPROOF_TARGET="env", SUPABASE_DB_URL=stack.admin_dsn())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO),
                           "-q", "-m", "gate", f"--opsproof-evidence-dir={ev}", str(REPO / "checks")],
                          cwd=work, env=scrubbed_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (home / "stack").exists()
    pack = sorted(p for p in ev.glob("????-??-??") if p.is_dir())[-1]
    meta = json.loads((pack / "manifest.json").read_text())["metadata"]
    assert meta["target"] == "env" and meta["target_detail"]["sources"]["SUPABASE_DB_URL"] == ".env"
    assert meta["target_detail"]["env_file"] == str((work / ".env").resolve())


def test_cadence_levers_incident_on_a_dotenv_target(stack, project):
    work, home, ev = project
    write_dotenv(work, home, OPSPROOF_TARGET="env", SUPABASE_DB_URL=stack.admin_dsn())
    proc = opsproof("cadence", "daily", "--only", "ttl_cleanup", f"--evidence-dir={ev}", "--json", cwd=work)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    meta = json.loads((Path(out["pack"]) / "manifest.json").read_text())["metadata"]
    detail = meta["runs"]["cadence-daily"]["target_detail"]
    assert detail["kind"] == "env" and detail["sources"]["SUPABASE_DB_URL"] == ".env"
    assert detail["port"] == int(stack.admin_dsn().rsplit(":", 1)[1].split("/")[0])
    for args in (("levers", "list", "--json"), ("incident", "list", "--json")):
        proc = opsproof(*args, cwd=work)
        assert proc.returncode == 0, proc.stderr[-2000:]
        json.loads(proc.stdout)
    assert not (home / "stack").exists()


def test_dotenv_state_dir_holds_for_every_subcommand(stack, stack_home, project):
    """OPSPROOF_HOME from .env holds for `opsproof stack` too: the same stack the suite commands would use."""
    work, _, _ = project
    write_dotenv(work, stack_home)
    proc = opsproof("stack", "status", "--json", cwd=work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    status, _ = json.JSONDecoder().raw_decode(proc.stdout)
    assert status["healthy"] is True and status["port"] == int(stack.admin_dsn().rsplit(":", 1)[1].split("/")[0])

"""`opsproof doctor` and `opsproof --version`: ready on the embedded default; each thing a test breaks is named
with its fix and exit 1; bad input is exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsproof import doctor

REPO = Path(__file__).resolve().parents[1]
# settings the doctor resolves; cleared so the test's own environment decides
SETTINGS_VARS = ("OPSPROOF_TARGET", "SUPABASE_DB_URL", "OPSPROOF_REPLICA_DB_URL", "SUPABASE_URL", "SUPABASE_ANON_KEY",
                 "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_ACCESS_TOKEN", "SUPABASE_PROJECT_REF",
                 "ALERT_WEBHOOK_URL", "TRACE_LINK_TEMPLATE", "OPSPROOF_SIGNING_KEY", "OPSPROOF_PRODUCTION",
                 "OPSPROOF_DOTENV_KEYS", "OPSPROOF_ADVISORS_SOURCE", "OPSPROOF_PROJECT_DIR")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No inherited target settings; an empty .env; a state dir of our own."""
    for k in SETTINGS_VARS:
        monkeypatch.delenv(k, raising=False)
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    monkeypatch.setenv("OPSPROOF_ENV_FILE", str(env_file))
    monkeypatch.setenv("OPSPROOF_HOME", str(tmp_path / "home"))
    return monkeypatch


def _lines(target=None, evidence_dir=None) -> dict[str, doctor.Line]:
    return {ln.name: ln for ln in doctor.diagnose(target, evidence_dir)}


def _keygen(path: Path) -> Path:
    from opsproof.evidence import signing

    signing.generate(path)
    return path


def _unreachable_url() -> str:
    return f"postgresql://postgres:not-a-secret-pw@127.0.0.1:{_free_port()}/postgres"


# -- the CLI: version, ready on the embedded default, bad input ---------------------------------------------

def _cli(args: list[str], env: dict, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opsproof.cli", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=120)


def _base_env(tmp_path: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    (tmp_path / "empty.env").write_text("")
    env.update(OPSPROOF_HOME=str(home), OPSPROOF_ENV_FILE=str(tmp_path / "empty.env"))
    return env


def test_version(tmp_path):
    from opsproof import __version__

    res = _cli(["--version"], _base_env(tmp_path, tmp_path / "home"))
    assert res.returncode == 0 and res.stdout.strip() == f"opsproof {__version__}", res.stderr


def test_doctor_is_ready_on_the_embedded_default(stack, stack_home, tmp_path):
    res = _cli(["doctor", f"--evidence-dir={tmp_path / 'evidence'}"], _base_env(tmp_path, stack_home))
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    rows = {ln.split()[1]: ln.split()[0] for ln in out.splitlines()[1:-1] if ln[:4].strip() in ("ok", "warn", "FAIL")}
    required = ("settings", "dsn", "pooler", "privileges", "migrations", "advisors", "evidence", "signing")
    assert all(rows.get(name) == "ok" for name in required), out
    assert set(rows) >= {"node", "webhook", "traces"}, out
    assert "embedded target 127.0.0.1:" in out and "SUPABASE_DB_URL from embedded stack file" in out  # sources
    n = len(doctor.local_migrations())
    assert f"{n}/{n} applied, latest " in out
    assert "direct connection" in out and "executes" in out
    assert all("optional" in ln for ln in out.splitlines() if ln.startswith("warn"))  # warnings are labeled
    assert out.splitlines()[-1].startswith("opsproof doctor: ready")
    assert not (tmp_path / "evidence").exists(), "the doctor creates nothing"
    assert stack.env()["POSTGRES_PASSWORD"] not in out + res.stderr


def test_unknown_target_is_bad_input_exit_2(tmp_path):
    res = _cli(["doctor", "--target", "no-such-target"], _base_env(tmp_path, tmp_path / "home"))
    assert res.returncode == 2 and "no-such-target" not in res.stdout, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "unknown target 'no-such-target'" in res.stderr


# -- each broken prerequisite: the line names the fix and the run is not ready --------------------------------

def test_unreachable_dsn_names_the_fix(clean_env, tmp_path):
    clean_env.setenv("OPSPROOF_TARGET", "env")
    clean_env.setenv("SUPABASE_DB_URL", _unreachable_url())
    clean_env.setenv("OPSPROOF_SIGNING_KEY", str(_keygen(tmp_path / "k.pem")))
    lines = _lines(evidence_dir=tmp_path / "ev")
    dsn = lines["dsn"]
    assert dsn.status == doctor.FAIL and "unreachable" in dsn.detail and "SUPABASE_DB_URL (from environment)" in dsn.fix
    assert {lines[n].status for n in ("pooler", "privileges", "migrations")} == {doctor.SKIP}
    assert doctor.exit_code(list(lines.values())) == 1
    out: list[str] = []
    assert doctor.run(evidence_dir=tmp_path / "ev", out=out.append) == 1
    assert "not-a-secret-pw" not in "\n".join(out) and "NOT ready" in out[-1]


def test_embedded_without_a_stack_says_stack_up(clean_env, tmp_path):
    dsn = _lines(evidence_dir=tmp_path / "ev")["dsn"]
    assert dsn.status == doctor.FAIL and "opsproof stack up" in dsn.fix


def test_unwritable_evidence_dir_names_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = doctor.check_evidence(blocker / "evidence")
    assert line.status == doctor.FAIL and "--evidence-dir=" in line.fix and "cannot be created" in line.detail
    line = doctor.check_evidence(blocker)
    assert line.status == doctor.FAIL and "not a directory" in line.detail
    ok = doctor.check_evidence(tmp_path / "new" / "evidence")
    assert ok.status == doctor.OK and "will be created" in ok.detail and not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root writes anywhere: the file-in-the-way cases above cover it
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        line = doctor.check_evidence(ro)
        assert line.status == doctor.FAIL and "not writable" in line.detail


def test_signing_key_missing_names_the_fix(clean_env, tmp_path):
    clean_env.setenv("OPSPROOF_TARGET", "env")
    clean_env.setenv("SUPABASE_DB_URL", _unreachable_url())
    line = _lines(evidence_dir=tmp_path / "ev")["signing"]
    assert line.status == doctor.FAIL and "unsigned" in line.detail and "opsproof evidence keygen" in line.fix
    clean_env.setenv("OPSPROOF_SIGNING_KEY", str(tmp_path / "no-such-key.pem"))
    line = _lines(evidence_dir=tmp_path / "ev")["signing"]
    assert line.status == doctor.FAIL and "no-such-key.pem" in line.detail and "keygen" in line.fix
    clean_env.setenv("OPSPROOF_SIGNING_KEY", str(_keygen(tmp_path / "good.pem")))
    os.chmod(tmp_path / "good.pem", 0o600)
    assert _lines(evidence_dir=tmp_path / "ev")["signing"].status == doctor.OK


def test_webhook_and_trace_links(clean_env, tmp_path):
    clean_env.setenv("OPSPROOF_TARGET", "env")
    clean_env.setenv("SUPABASE_DB_URL", _unreachable_url())
    clean_env.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_free_port()}/services/T000/B000/hook-secret-path")
    clean_env.setenv("TRACE_LINK_TEMPLATE", "http://127.0.0.1:1/trace")
    lines = _lines(evidence_dir=tmp_path / "ev")
    hook, traces = lines["webhook"], lines["traces"]
    assert hook.status == doctor.FAIL and "unreachable" in hook.detail and "ALERT_WEBHOOK_URL" in hook.fix
    assert "hook-secret-path" not in hook.render()
    assert traces.status == doctor.FAIL and "{trace_id}" in traces.fix


def test_advisors_cli_or_management_api(clean_env, tmp_path):
    clean_env.setenv("OPSPROOF_PROJECT_DIR", str(tmp_path))  # no node_modules here
    clean_env.setenv("PATH", "/usr/bin:/bin")
    clean_env.setenv("OPSPROOF_TARGET", "env")
    clean_env.setenv("SUPABASE_DB_URL", _unreachable_url())
    from opsproof.config import resolve_settings

    line = doctor.check_advisors(resolve_settings())
    assert line.status == doctor.FAIL and "SEC-006" in line.detail and "npm ci" in line.fix
    clean_env.setenv("SUPABASE_ACCESS_TOKEN", "sbp_" + "0" * 40)
    clean_env.setenv("SUPABASE_PROJECT_REF", "abcdefghijklmnopqrst")
    line = doctor.check_advisors(resolve_settings())
    assert line.status == doctor.OK and "Management API" in line.detail and "sbp_" not in line.render()


def test_transaction_pooler_port_warns_that_drills_need_the_session_url():
    line = doctor.check_pooler(None, doctor.Facts({}, 6543))
    assert line.status == doctor.WARN and line.optional and "session-mode URL" in line.fix


# -- against the stack: a database without the contract; a real PgBouncer in transaction mode ------------------

def _superuser(stack) -> str:
    return getattr(stack, "superuser_dsn", stack.admin_dsn)()


@pytest.fixture
def empty_db(stack):
    name = f"doctor_empty_{uuid.uuid4().hex[:8]}"
    su = _superuser(stack)
    with psycopg.connect(su, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    user_dsn = make_conninfo(stack.admin_dsn(), dbname=name)
    try:
        yield name, user_dsn, make_conninfo(su, dbname=name)
    finally:
        with psycopg.connect(su, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def test_missing_migrations_name_the_push(clean_env, tmp_path, empty_db):
    _, user_dsn, su_dsn = empty_db
    info = conninfo_to_dict(user_dsn)
    url = f"postgresql://{info['user']}:{info['password']}@127.0.0.1:{info['port']}/{info['dbname']}"
    clean_env.setenv("OPSPROOF_TARGET", "env")
    clean_env.setenv("SUPABASE_DB_URL", url)
    clean_env.setenv("OPSPROOF_SIGNING_KEY", str(_keygen(tmp_path / "k.pem")))
    lines = _lines(evidence_dir=tmp_path / "ev")
    assert lines["dsn"].status == doctor.OK
    mig, priv = lines["migrations"], lines["privileges"]
    assert mig.status == doctor.FAIL and "no migration history" in mig.detail and "supabase db push" in mig.fix
    assert priv.status == doctor.FAIL and "no ops schema" in priv.detail
    # all but the newest applied: the line names the missing file
    local = doctor.local_migrations()
    newest = max(local)
    with psycopg.connect(su_dsn, autocommit=True) as conn:
        conn.execute("create schema supabase_migrations")
        conn.execute("create table supabase_migrations.schema_migrations (version text primary key)")
        conn.execute("grant usage on schema supabase_migrations to public")
        conn.execute("grant select on supabase_migrations.schema_migrations to public")
        for v in local:
            if v != newest:
                conn.execute("insert into supabase_migrations.schema_migrations values (%s)", (v,))
    mig = _lines(evidence_dir=tmp_path / "ev")["migrations"]
    assert mig.status == doctor.FAIL and f"{len(local) - 1}/{len(local)} applied" in mig.detail
    assert local[newest] in mig.detail and info["password"] not in mig.render()


def test_transaction_pooler_is_detected_through_pgbouncer(clean_env, stack, tmp_path):
    from pooler_helpers import PgBouncer, pgbouncer_binary

    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer not installed (.ci/run installs it)")
    dsn = stack.admin_dsn()
    with PgBouncer(dsn, mode="transaction") as pb:
        clean_env.setenv("OPSPROOF_TARGET", "env")
        clean_env.setenv("SUPABASE_DB_URL", pb.url())
        lines = _lines(evidence_dir=tmp_path / "ev")
        assert lines["dsn"].status == doctor.OK, lines["dsn"].render()
        pooler = lines["pooler"]
        assert pooler.status == doctor.WARN and "transaction-mode" in pooler.detail, pooler.render()
        assert lines["migrations"].status == doctor.OK, lines["migrations"].render()
    with PgBouncer(dsn, mode="session") as pb:
        clean_env.setenv("SUPABASE_DB_URL", pb.url())
        pooler = _lines(evidence_dir=tmp_path / "ev")["pooler"]
        assert pooler.status == doctor.OK and "session-mode pooler" in pooler.detail, pooler.render()

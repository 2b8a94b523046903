"""Named targets (targets.toml): names of variables, never secrets; the one settings resolution; each target its own
evidence chain; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsproof import targets
from opsproof.config import resolve_settings
from opsproof.errors import UsageError
from suite_runner import REPO, run_suite

GOOD = """
[targets.staging]
kind = "supabase"
db_url_env = "STAGING_DB_URL"
supabase_url_env = "STAGING_SUPABASE_URL"
project_ref = "stagingref0001"
production = false

[targets.live]
kind = "supabase"
db_url_env = "LIVE_DB_URL"
production = true
"""


@pytest.fixture
def targets_file(tmp_path, monkeypatch):
    f = tmp_path / "targets.toml"
    f.write_text(GOOD)
    for k in ("SUPABASE_DB_URL", "SUPABASE_URL", "OPSPROOF_TARGET", "OPSPROOF_ENV_FILE", "OPSPROOF_DOTENV_KEYS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(targets.FILE_VAR, str(f))
    monkeypatch.chdir(tmp_path)
    return f


@pytest.mark.parametrize("body,needle", [
    ('[targets.x]\nkind = "supabase"\ndb_url_env = "postgresql://u:pw@h/db"\n', "NAME of an environment variable"),
    ('[targets.x]\nkind = "supabase"\n', "needs db_url_env"),
    ('[targets.env]\nkind = "supabase"\ndb_url_env = "A"\n', "built in"),
    ('[targets.x]\nkind = "hosted"\ndb_url_env = "A"\n', "targets.x.kind"),
    ('[targets.x]\nkind = "supabase"\ndb_url_env = "A"\npassword = "hunter2hunter2"\n', "targets.x.password"),
    ('[target.x]\n', "unknown key"),
    ('[targets.x\n', "not valid TOML"),
])
def test_a_bad_targets_file_is_one_line_exit_2(body, needle, tmp_path):
    f = tmp_path / "t.toml"
    f.write_text(body)
    with pytest.raises(UsageError) as exc:
        targets.load(f)
    assert needle in str(exc.value) and exc.value.exit_code == 2 and "\n" not in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_a_named_target_reads_its_own_variables_and_nothing_else(targets_file, monkeypatch):
    monkeypatch.setenv("STAGING_DB_URL", "postgresql://ops:s3cr3t-pass@db.staging.example:6543/postgres")
    monkeypatch.setenv("SUPABASE_URL", "https://someone-else.supabase.co")  # another target's: never borrowed
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "generic-service-role-key-not-staging")
    with pytest.raises(UsageError, match="STAGING_SUPABASE_URL"):  # named by the target, so required
        resolve_settings("staging")
    monkeypatch.setenv("STAGING_SUPABASE_URL", "https://stagingref0001.supabase.co")
    s = resolve_settings("staging")
    assert (s.name, s.target, s.host()) == ("staging", "env", "db.staging.example:6543/postgres")
    assert s.supabase_url == "https://stagingref0001.supabase.co" and s.service_role_key is None and s.project_ref == "stagingref0001" and s.production is False
    assert s.source("SUPABASE_DB_URL") == "STAGING_DB_URL from environment"
    d = s.describe()
    assert d["name"] == "staging" and "s3cr3t-pass" not in json.dumps(d) and "staging (env) target" in s.describe_line()
    monkeypatch.setenv("LIVE_DB_URL", "postgresql://ops:pw@db.live.example:5432/postgres")
    monkeypatch.setenv("OPSPROOF_TARGET", "live")
    live = resolve_settings()
    assert live.name == "live" and live.production is True


def test_unknown_target_and_unset_variable_name_the_fix(targets_file, monkeypatch):
    with pytest.raises(UsageError, match="unknown target 'prod' .*known: embedded, env, live, staging"):
        resolve_settings("prod")
    with pytest.raises(UsageError, match="STAGING_DB_URL .* is not set"):
        resolve_settings("staging")


def test_each_named_target_keeps_its_own_evidence_chain(stack, stack_home, tmp_path):
    f = tmp_path / "targets.toml"
    f.write_text(GOOD)
    env = {targets.FILE_VAR: str(f), "STAGING_DB_URL": stack.admin_dsn(),
           "STAGING_SUPABASE_URL": "http://127.0.0.1:9/"}
    ev = tmp_path / "ev"
    proc, _ = run_suite(stack_home, ev, "-m", "gate", "--opsproof-target=staging", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:]
    packs = sorted((ev / "staging").glob("????-??-??"))
    assert packs and not list(ev.glob("????-??-??")), "a named target's pack goes to <root>/<name>/"
    results = json.loads((packs[-1] / "results-gate.json").read_text())
    assert results["target"]["name"] == "staging" and results["green"]
    manifest = json.loads((packs[-1] / "manifest.json").read_text())
    assert manifest["metadata"]["target_name"] == "staging"
    assert stack.admin_dsn().rsplit("@", 1)[0].split(":")[-1] not in (packs[-1] / "results-gate.json").read_text()
    proc = run_suite(stack_home, ev, "-m", "gate", "--opsproof-target=nope", env=env)[0]
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stdout + proc.stderr
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "opsproof.cli", "evidence", "verify", str(ev / "staging")],
                         capture_output=True, text=True, cwd=REPO, env={**__import__("os").environ, **env,
                                                                         "OPSPROOF_HOME": str(stack_home)})
    assert res.returncode == 0, res.stdout + res.stderr

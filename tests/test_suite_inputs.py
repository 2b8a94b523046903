"""Bad input to the suite: one clear line, non-zero exit (2), no pack that claims green."""

from __future__ import annotations

import psycopg
import pytest

from suite_runner import run_suite


def _one_clear_line(proc, needle: str) -> None:
    out = proc.stdout + proc.stderr
    assert needle in out, out[-2000:]
    assert "Traceback" not in out, out[-2000:]


@pytest.mark.parametrize("content,needle", [
    ("[slo\nuptime_pct_min = 99.95", "not valid TOML"),
    ("[slo]\nuptime_pct_minimum = 99.95\n", "slo.uptime_pct_minimum"),
    ("[slo]\nuptime_pct_min = \"high\"\n", "slo.uptime_pct_min"),
    ("[budgets]\nagent_concurrency_max = 150.5\n", "budgets.agent_concurrency_max"),
])
def test_malformed_policy_is_exit_2_and_no_run(content, needle, stack, stack_home, tmp_path):
    policy = tmp_path / "bad.toml"
    policy.write_text(content)
    proc, results = run_suite(stack_home, tmp_path / "ev", "-m", "daily", f"--opsproof-policy={policy}")
    assert proc.returncode == 2
    _one_clear_line(proc, needle)
    assert results is None and not list((tmp_path / "ev").glob("????-??-??"))


@pytest.mark.parametrize("url,needle", [
    ("postgresql://postgres:x@127.0.0.1:1/postgres", "target unreachable"),
])
def test_unreachable_target_is_exit_2(url, needle, tmp_path):
    proc, results = run_suite(tmp_path / "nohome", tmp_path / "ev", "-m", "daily",
                              env={"OPSPROOF_TARGET": "env", "SUPABASE_DB_URL": url})
    assert proc.returncode == 2
    _one_clear_line(proc, needle)
    assert results is None


def test_wrong_credentials_is_exit_2_and_never_echo_the_password(stack, stack_home, tmp_path):
    url = stack.admin_dsn()
    bad = url.replace(url.split(":")[2].split("@")[0], "not-the-password-123")
    proc, results = run_suite(tmp_path / "nohome", tmp_path / "ev", "-m", "daily",
                              env={"OPSPROOF_TARGET": "env", "SUPABASE_DB_URL": bad})
    assert proc.returncode == 2
    _one_clear_line(proc, "refused the credentials")
    assert "not-the-password-123" not in proc.stdout + proc.stderr
    assert results is None


def test_missing_contract_is_exit_2_naming_what_is_missing(stack, tmp_path):
    with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
        conn.execute("drop database if exists opsproof_empty")
        conn.execute("create database opsproof_empty")
    try:
        url = stack.admin_dsn().rsplit("/", 1)[0] + "/opsproof_empty"
        proc, results = run_suite(tmp_path / "nohome", tmp_path / "ev", "-m", "daily",
                                  env={"OPSPROOF_TARGET": "env", "SUPABASE_DB_URL": url})
        assert proc.returncode == 2
        _one_clear_line(proc, "ops contract is missing on the target: ops.feature_flags")
        assert results is None
    finally:
        with psycopg.connect(stack.admin_dsn(), autocommit=True) as conn:
            conn.execute("drop database if exists opsproof_empty")


def test_embedded_target_not_up_says_how_to_start_it(tmp_path):
    proc, results = run_suite(tmp_path / "nohome", tmp_path / "ev", "-m", "daily")
    assert proc.returncode == 2
    _one_clear_line(proc, "opsproof stack up")

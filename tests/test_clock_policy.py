"""The one clock (frozen with freezegun), window/date parsing, and the policy's validation."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from freezegun import freeze_time

from opsproof import clock, policy
from opsproof.errors import UsageError


@freeze_time("2026-03-01 23:59:30")
def test_today_and_now_come_from_the_frozen_clock():
    assert clock.today() == date(2026, 3, 1)
    assert clock.now().isoformat() == "2026-03-01T23:59:30+00:00"
    assert clock.parse_date(None) == date(2026, 3, 1)


@pytest.mark.parametrize("text,expected", [("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)),
                                           ("7d", timedelta(days=7)), (" 6h ", timedelta(hours=6))])
def test_window_parsing(text, expected):
    assert clock.parse_window(text) == expected


@pytest.mark.parametrize("bad", ["", "0h", "24", "1w", "-1h", "h"])
def test_bad_window_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        clock.parse_window(bad)


def test_bad_date_is_a_usage_error():
    with pytest.raises(UsageError):
        clock.parse_date("2026-13-01")


def test_repo_policy_holds_the_seed_numbers(tmp_path):
    p = policy.load("opsproof.toml")
    assert p.flags["autonomy.emergencyStop"] is False and p.flags["autonomy.mode"] == "FULL"
    assert (p.budgets.agent_concurrency_max, p.budgets.replay_batch_items_max, p.budgets.replay_max_bytes,
            p.budgets.replay_fail_rate_pct_max) == (150, 50, 2 * 1024 * 1024, 20)
    assert (p.slo.uptime_pct_min, p.slo.success_pct_min, p.slo.p95_ms_max) == (99.95, 98.0, 2500)
    assert p.evidence.retention_days == 35 and p.security.rotation_max_days == 90
    assert len(p.sha256) == 64


def test_policy_overrides_and_defaults(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[slo]\np95_ms_max = 1800\n")
    p = policy.load(f)
    assert p.slo.p95_ms_max == 1800 and p.slo.uptime_pct_min == 99.95


@pytest.mark.parametrize("content", ["[nope]\nx = 1\n", "[slo]\np95_ms_max = 'fast'\n", "not toml ["])
def test_policy_errors_are_one_line_usage_errors(tmp_path, content):
    f = tmp_path / "p.toml"
    f.write_text(content)
    with pytest.raises(UsageError) as exc:
        policy.load(f)
    assert "\n" not in str(exc.value) and str(f) in str(exc.value)

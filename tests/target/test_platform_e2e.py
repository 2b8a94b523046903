"""End to end: the daily suite through the CLI with the hosted sources pointed at a local server that replays the
recorded platform answers (replay_server.py), against the test session's database.

Proves the wiring, not Supabase: every control that has a platform source must have used it (its record names the
source) and the server must have been asked; the pack stays green.
"""

from __future__ import annotations

import pytest

from replay_server import ReplayServer
from suite_runner import run_suite, verdicts
from supabase_recordings import ACCESS_TOKEN, ANON_KEY, REF, SERVICE_KEY


def _results(evidence_dir, results):
    """The run's results (run_suite's, or the newest results.json anywhere under the evidence dir: a pack may sit
    in a per-target folder)."""
    if results is not None:
        return results
    import json

    files = sorted(evidence_dir.rglob("results*.json"), key=lambda f: f.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


def _records(results: dict, control: str) -> list[dict]:
    return [r for c in results["controls"] if c["id"] == control for r in c.get("records") or []]


def test_daily_uses_the_platform_sources(stack, stack_home, tmp_path):
    policy = tmp_path / "gateway.toml"
    policy.write_text('[slo]\nsource = "gateway"\n')
    with ReplayServer(stack.admin_dsn(), SERVICE_KEY, ACCESS_TOKEN) as replay:
        env = {"SUPABASE_URL": replay.url, "SUPABASE_API_URL": replay.url, "SUPABASE_ACCESS_TOKEN": ACCESS_TOKEN,
               "SUPABASE_PROJECT_REF": REF, "SUPABASE_ANON_KEY": ANON_KEY, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
               "OPSPROOF_ADVISORS_SOURCE": "management-api"}
        proc, results = run_suite(stack_home, tmp_path / "evidence", "-m", "daily", f"--opsproof-policy={policy}",
                                  env=env)
        results = _results(tmp_path / "evidence", results)
        calls = {path for _, path in replay.calls}
        users_left = dict(replay.users)
    assert results is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    v = verdicts(results)
    sources = {
        "CAD-001": {"management-api"},
        "SLO-002": {"management-api:logs"},
        "SLO-003": {"management-api:logs"},
        "RES-001": {"metrics-api"},
        "RES-002": {"metrics-api"},
        "SEC-006": {"management-api"},
        "SEC-001": {"sql", "postgrest-api"},
    }
    for control, want in sources.items():
        assert v.get(control) == "pass", (control, v.get(control), proc.stdout[-2000:])
        got = {r.get("source") for r in _records(results, control)}
        assert got == want, (control, got)
    not_green = sorted(f"{c['id']} {c['verdict']}: {(c.get('message') or '')[:200]}"
                       for c in results["controls"] if c["verdict"] != "pass")
    assert not not_green, not_green
    ref = f"/v1/projects/{REF}"
    assert {f"{ref}/database/backups", f"{ref}/analytics/endpoints/logs.all", f"{ref}/advisors/security",
            "/customer/v1/privileged/metrics", "/auth/v1/admin/users", "/auth/v1/token"} <= calls
    assert any(p.startswith("/rest/v1/") for p in calls)
    assert users_left == {}, "SEC-001's test users must be deleted"

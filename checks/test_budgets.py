"""Budgets: configured limits within policy, and observed use in the window within them."""

from __future__ import annotations

import pytest

from opsproof.measure import ops as measure

CONFIGURED = [
    # (budget key in ops.budgets, policy attribute)
    ("agent.concurrency", "agent_concurrency_max"),
    ("replay.batch_items", "replay_batch_items_max"),
    ("replay.max_bytes", "replay_max_bytes"),
    ("replay.fail_rate_pct", "replay_fail_rate_pct_max"),
]


@pytest.fixture(scope="module")
def configured(target):
    return measure.budgets(target)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control(id="BUD-001", title="Configured budget is within policy", severity="high",
                     frameworks={"SOC2": ["CC7.1"], "ISO27001": ["A.8.6"]})
@pytest.mark.parametrize("key,attr", CONFIGURED, ids=[c[0] for c in CONFIGURED])
def test_configured_budget_within_policy(key, attr, configured, policy, evidence):
    evidence.require(key in configured, f"budget {key} is missing from ops.budgets")
    evidence.check(key, configured[key], "<=", getattr(policy.budgets, attr), query=measure.QUERIES["budgets"])


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control(id="BUD-002", title="Observed agent concurrency stays within the budget", severity="high",
                     frameworks={"SOC2": ["CC7.1"], "ISO27001": ["A.8.6"]})
def test_observed_agent_concurrency(target, configured, policy, window, evidence):
    health = measure.agent_health(target, *window.args)
    evidence.require(health.tasks > 0, f"no agent tasks in the {window.label} window: cannot observe concurrency")
    limit = min(policy.budgets.agent_concurrency_max, configured.get("agent.concurrency", 1e12))
    evidence.check("peak concurrent agent tasks", health.peak_concurrency, "<=", int(limit),
                   query=measure.QUERIES["agent_health"])


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control(id="BUD-003", title="Observed DLQ replay batches stay within the rails", severity="high",
                     frameworks={"SOC2": ["CC7.1"], "ISO27001": ["A.8.6"]})
def test_observed_replay_use(target, policy, window, evidence):
    dlq = measure.dlq_health(target, *window.args)
    evidence.require(dlq.replays > 0, f"no DLQ replays in the {window.label} window: cannot observe replay use")
    b = policy.budgets
    q = measure.QUERIES["dlq_health"]
    evidence.check("largest replay batch (items)", dlq.max_batch_items, "<=", b.replay_batch_items_max, query=q)
    evidence.check("largest replay batch (bytes)", dlq.max_batch_bytes, "<=", b.replay_max_bytes, query=q)
    evidence.check("replay fail rate", dlq.fail_pct, "<=", b.replay_fail_rate_pct_max, query=q, unit="%")

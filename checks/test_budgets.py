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
    """The Measurement of ops.budgets (key -> value) with the statement that read it."""
    return measure.budgets(target)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control("BUD-001")
@pytest.mark.parametrize("key,attr", CONFIGURED, ids=[c[0] for c in CONFIGURED])
def test_configured_budget_within_policy(key, attr, configured, policy, evidence):
    evidence.require(key in configured.result, f"budget {key} is missing from ops.budgets")
    evidence.check(key, configured.result[key], "<=", getattr(policy.budgets, attr), query=configured.query)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control("BUD-002")
def test_observed_agent_concurrency(target, configured, policy, window, evidence):
    m = measure.agent_health(target, *window.args)
    health = m.result
    evidence.require(health.tasks > 0, f"no agent tasks in the {window.label} window: cannot observe concurrency")
    limit = min(policy.budgets.agent_concurrency_max, configured.result.get("agent.concurrency", 1e12))
    evidence.check("peak concurrent agent tasks", health.peak_concurrency, "<=", int(limit), query=m.query)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.budgets
@pytest.mark.control("BUD-003")
def test_observed_replay_use(target, configured, policy, window, evidence):
    m = measure.dlq_health(target, *window.args)
    dlq = m.result
    evidence.require(dlq.replays > 0, f"no DLQ replays in the {window.label} window: cannot observe replay use")
    b = policy.budgets
    q = m.query

    def rail(key, pol):  # observed use stays within what is configured AND within the policy (budget drift)
        return min(pol, configured.result.get(key, pol))

    evidence.check("largest replay batch (items)", dlq.max_batch_items, "<=",
                   rail("replay.batch_items", b.replay_batch_items_max), query=q)
    evidence.check("largest replay batch (bytes)", dlq.max_batch_bytes, "<=", rail("replay.max_bytes", b.replay_max_bytes),
                   query=q)
    evidence.check("replay fail rate", dlq.fail_pct, "<=", rail("replay.fail_rate_pct", b.replay_fail_rate_pct_max),
                   query=q, unit="%")

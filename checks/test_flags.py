"""Guardrail flags: every required flag holds its policy value — on the *effective* flags (an unexpired override counts)."""

from __future__ import annotations

import json

import pytest

from opsproof.measure import ops as measure
from opsproof.recorder import MeasurementError, same_json


def pytest_generate_tests(metafunc):
    if "flag_key" in metafunc.fixturenames:
        from opsproof.suite_state import state_of

        st = state_of(metafunc.config)
        keys = sorted(st.policy.flags) if st else []
        metafunc.parametrize("flag_key", keys)


@pytest.fixture(scope="module")
def flags(target):
    return measure.effective_flags(target)


@pytest.fixture(scope="module")
def budgets(target):
    return measure.budgets(target)


@pytest.mark.daily
@pytest.mark.gate
@pytest.mark.flags
@pytest.mark.control("FLG-001")
def test_required_flag(flag_key, flags, budgets, policy, evidence):
    evidence.artifact("flags.json", {
        "effective_flags": {k: f.model_dump(mode="json") for k, f in flags.result.items()},
        "budgets": budgets.result,
        "policy": {"flags": policy.flags, "budgets": policy.budgets.model_dump()},
    })
    state = flags.result.get(flag_key)
    if state is None:
        raise MeasurementError(f"flag {flag_key} is missing from ops.feature_flags")
    expected = policy.flags[flag_key]
    ok = same_json(state.value, expected)
    evidence.record(name=flag_key, measured=state.value, threshold=f"== {json.dumps(expected)}", verdict=ok,
                    query=flags.query,
                    detail={"base_value": state.base_value, "overridden": state.overridden,
                            "override_owner": state.override_owner, "updated_by": state.updated_by})
    if not ok:
        who = (f"override by {state.override_owner} ({state.override_reason}) until {state.override_expires_at}"
               if state.overridden else f"last changed by {state.updated_by} at {state.updated_at}")
        raise AssertionError(f"{flag_key} drifted: expected {json.dumps(expected)}, "
                             f"effective {json.dumps(state.value)}; {who}")

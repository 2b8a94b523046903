"""The per-minute rollup the SLO and outbox-lag measurements read (migration 20261203001100) is current and gap-free.

SLO-002/003 and WCH-001 read ops.rollup_minute / ops.rollup_hour for every whole minute the rollup answers and raw
rows for the rest, so their numbers stay right when the rollup falls behind; what a stale or holed rollup breaks is
the claim that they are cheap and read from the rollup. That is an ERROR here, never a pass: a watermark older
than `telemetry.rollup_max_lag_s`, a minute of the window missing below it, or a dirty minute (raw rows changed
after rolling) waiting longer than that for its re-roll.
"""

from __future__ import annotations

import pytest

from opsproof.measure import ops as measure


@pytest.mark.daily
@pytest.mark.telemetry
@pytest.mark.control("TEL-008")
def test_rollup_current_and_gap_free(target, policy, window, evidence):
    m = measure.rollup_status(target, *window.args)
    st = m.result
    evidence.artifact("rollup_status.json", st.model_dump(mode="json"))
    limit = policy.telemetry.rollup_max_lag_s
    evidence.require(st.rolled_until is not None,
                     "ops.rollup_state has no watermark: ops.rollup_refresh() has never run on this target")
    detail = {"rolled_from": st.rolled_from, "rolled_until": st.rolled_until, "last_run_at": st.last_run_at,
              "gap_minutes": st.gap_minutes, "dirty_minutes": st.dirty_minutes,
              "unrolled_minutes": st.unrolled_minutes, "window_minutes": st.window_minutes}
    lag_ok = st.lag_s is not None and st.lag_s <= limit
    dirty_ok = st.oldest_dirty_age_s is None or st.oldest_dirty_age_s <= limit
    evidence.record(name="rollup lag (now - watermark)", measured=st.lag_s, threshold=f"<= {limit:g} s",
                    verdict=lag_ok, query=m.query, detail=detail)
    evidence.record(name="rollup gaps in the window", measured=st.gaps, threshold="== 0", verdict=st.gaps == 0,
                    query=m.query, detail=detail)
    evidence.record(name="oldest dirty minute waiting for a re-roll", measured=st.oldest_dirty_age_s,
                    threshold=f"<= {limit:g} s", verdict=dirty_ok, query=m.query, detail=detail)
    problems = []
    if not lag_ok:
        problems.append(f"the rollup is {st.lag_s} s behind (watermark {st.rolled_until}; policy <= {limit:g} s)")
    if st.gaps:
        problems.append(f"{st.gaps} minute(s) of the window missing from the rollup (first: {st.gap_minutes[:3]})")
    if not dirty_ok:
        problems.append(f"a minute changed {st.oldest_dirty_age_s} s ago is still not re-rolled")
    evidence.require(not problems, "; ".join(problems) + ": run `select ops.rollup_refresh()` and schedule it "
                                   "(docs/contract.md, Rollups)")

"""DRL-003 Replay rails: the DLQ replayer refuses a batch of 51 items, a batch of 2 MB + 1 byte, and any
batch while the running fail rate is above 20% -- each a hard stop with an audit row and zero items
replayed -- and replays a batch within the rails (whose tasks the worker pool then runs).

The refused batches' DLQ items are drill-made and live only inside the drill's transaction (created,
refused, removed, committed): the running replayer never sees them, while the refusal rows
(ops.dlq_replays status 'refused') and audit rows are committed. The fail-rate step needs a replay fail
rate above 20% on the target; creating that for real would halt the plane's own auto-replay (and turn the
daily watchlist red) for an hour, so that step runs in a transaction that is rolled back after the
refusal has been observed, and the drill commits its own audit row of what it saw (docs/drills.md).
"""

from __future__ import annotations

import math
import time

import pytest

from opsproof.levers import workload
from opsproof.levers.common import audit, connection
from opsproof.measure import audit_chain, dlq
from opsproof.measure import ops as measure_ops
from opsproof.plane.replayer import replay_batch, running_fail_rate

WINDOW = "1 hour"
MIN_SAMPLE = 5


def _proof(conn, res, ids: list[int], run_id: str) -> dict:
    """What a hard stop must look like: refused, nothing replayed, a refusal row and an audit row."""
    replayed = dlq.replayed_items(conn, ids).result
    tasks = dlq.rails_tasks_created(conn, run_id).result
    row = dlq.replay_row(conn, res.replay_row_id).result if res.replay_row_id else None
    aud = audit_chain.entry(conn, res.audit_id).result if res.audit_id else None
    return {"status": res.status, "reason": res.reason, "items": res.items, "bytes": res.bytes,
            "replayed_items": replayed + len(res.replayed_ids), "tasks_created": tasks,
            "refusal_row": list(row.values()) if row else None, "audit_row": list(aud.values()) if aud else None,
            "audit_id": res.audit_id}


def _assert_hard_stop(evidence, what: str, proof: dict, reason_has: str) -> None:
    ok = (proof["status"] == "refused" and reason_has in (proof["reason"] or "") and proof["replayed_items"] == 0
          and proof["tasks_created"] == 0 and proof["refusal_row"] and proof["refusal_row"][0] == "refused"
          and proof["audit_row"] and proof["audit_row"][0] == "dlq.replay.refused")
    evidence.record(name=f"{what}: hard stop", measured=proof, threshold="refused, 0 replayed, refusal + audit row",
                    verdict=bool(ok))
    if not ok:
        missing = []
        if proof["status"] != "refused":
            missing.append(f"the replayer did not refuse (status {proof['status']!r})")
        elif reason_has not in (proof["reason"] or ""):
            missing.append(f"refused for the wrong reason ({proof['reason']!r}, expected one about {reason_has!r})")
        if proof["replayed_items"]:
            missing.append(f"{proof['replayed_items']} item(s) were replayed")
        if proof["tasks_created"]:
            missing.append(f"{proof['tasks_created']} task(s) were re-queued")
        if not proof["refusal_row"]:
            missing.append("no ops.dlq_replays refusal row")
        if not proof["audit_row"]:
            missing.append("no audit row")
        raise AssertionError(f"{what}: the rail did NOT hold: " + "; ".join(missing))


@pytest.mark.drill
@pytest.mark.control("DRL-003")
def test_replay_rails(target, suite, drill_session, steady_state, drill_record, evidence, request, plane_settings):
    run_id = suite.run_id
    drill_record.plan([
        "51 drill DLQ items -> ask for one batch (refused) -> remove them, in one transaction",
        "one drill DLQ item of 2 MB + 1 byte -> ask (refused) -> remove it, in one transaction",
        "poison DLQ items replayed until the running fail rate passes 20% -> ask (refused) -> roll back",
        "3 drill DLQ items (kind quote) -> ask (replayed) -> the worker runs the re-created tasks",
    ], request.config)
    dsn = drill_session.dsn
    budgets = measure_ops.budgets(target).result
    max_items = int(budgets.get("replay.batch_items", 50))
    max_bytes = int(budgets.get("replay.max_bytes", 2 * 1024 * 1024))
    max_fail = float(budgets.get("replay.fail_rate_pct", 20))
    drill_record.intervals(batch_items_max=max_items, max_bytes=max_bytes, fail_rate_pct_max=max_fail)
    small = {"kind": "quote", "payload": {"drill": run_id, "rails": True}, "drill": run_id}

    # 1. too many items
    with connection(dsn) as conn, conn.transaction():
        ids = workload.insert_dlq(conn, [dict(small) for _ in range(max_items + 1)], run_id, "replay rails: count")
        res = replay_batch(conn, ids=ids, requested_by="dlq@", run_id=run_id)
        count_proof = _proof(conn, res, ids, run_id)
        workload.discard_dlq(conn, ids, run_id, "replay rails: drill items of a refused batch")
    drill_record.step("batch.items", requested=max_items + 1, **count_proof)
    _assert_hard_stop(evidence, f"batch of {max_items + 1} items", count_proof, "replay.batch_items")

    # 2. too many bytes
    with connection(dsn) as conn, conn.transaction():
        big = workload.padded_payload(conn, run_id, max_bytes + 1, kind="quote")
        ids = workload.insert_dlq(conn, [big], run_id, "replay rails: size")
        res = replay_batch(conn, ids=ids, requested_by="dlq@", run_id=run_id)
        size_proof = _proof(conn, res, ids, run_id)
        workload.discard_dlq(conn, ids, run_id, "replay rails: drill items of a refused batch")
    drill_record.step("batch.bytes", requested_bytes=max_bytes + 1, **size_proof)
    evidence.check("bytes asked for", size_proof["bytes"], "==", max_bytes + 1)
    _assert_hard_stop(evidence, f"batch of {max_bytes + 1} bytes", size_proof, "replay.max_bytes")

    # 3. running fail rate above the rail (rolled back: see the module docstring)
    with connection(dsn) as conn:
        with conn.transaction(force_rollback=True):
            rate0, sample0 = running_fail_rate(conn, WINDOW)
            failed0 = round(rate0 * sample0 / 100)
            # k poison items (no task, no kind: their replay fails) so that (failed0+k)/(sample0+k) > max_fail
            frac = max_fail / 100.0
            k = max(MIN_SAMPLE - sample0, math.floor((frac * sample0 - failed0) / (1 - frac)) + 1, 1)
            poison_batches = []
            left = k
            while left > 0:
                n = min(left, max_items)
                pids = workload.insert_dlq(conn, [{"drill": run_id, "poison": True} for _ in range(n)], run_id,
                                           "replay rails: poison items (rolled back)")
                r = replay_batch(conn, ids=pids, requested_by="dlq@", run_id=run_id)
                poison_batches.append({"items": n, "status": r.status, "failed": r.failed})
                left -= n
            rate, sample = running_fail_rate(conn, WINDOW)
            ids = workload.insert_dlq(conn, [dict(small)], run_id, "replay rails: fail rate")
            res = replay_batch(conn, ids=ids, requested_by="dlq@", run_id=run_id, window=WINDOW, min_sample=MIN_SAMPLE)
            rate_proof = _proof(conn, res, ids, run_id)
            rate_proof.update(fail_rate_pct=round(rate, 2), sample=sample, poison_batches=poison_batches,
                              rolled_back=True)
    with connection(dsn) as conn:
        audit(conn, action="drill.replay_rails.fail_rate", target="ops.dlq",
              reason="fail-rate rail observed (scratch rolled back)", run_id=run_id,
              detail={"fail_rate_pct": rate_proof["fail_rate_pct"], "sample": sample, "refusal": rate_proof["reason"],
               "status": rate_proof["status"], "replayed_items": rate_proof["replayed_items"],
               "refusal_audit_id_in_rolled_back_txn": rate_proof["audit_id"]})
    drill_record.step("batch.fail_rate", **rate_proof)
    evidence.check("running fail rate set up", rate_proof["fail_rate_pct"], ">", max_fail, unit="%")
    _assert_hard_stop(evidence, f"batch at a running fail rate of {rate_proof['fail_rate_pct']}%", rate_proof,
                      "running fail rate")

    # 4. within the rails: replays, and the worker runs the re-created tasks
    with connection(dsn) as conn, conn.transaction():
        ids = workload.insert_dlq(conn, [dict(small) for _ in range(3)], run_id, "replay rails: within the rails")
        res = replay_batch(conn, ids=ids, requested_by="dlq@", run_id=run_id)
    cycle = float(plane_settings.cycle_s)
    deadline = time.monotonic() + 10 * cycle + 5
    ran = 0
    while time.monotonic() < deadline:
        ran = dlq.rails_tasks_succeeded(target, run_id).result
        if ran >= 3:
            break
        time.sleep(0.2)
    drill_record.step("batch.within_rails", status=res.status, items=res.items, replayed=len(res.replayed_ids),
                      audit_id=res.audit_id, tasks_succeeded=ran)
    drill_record.measure("refused_batches", 3, "batches", "== 3")
    drill_record.measure("items_replayed_by_refused_batches",
                         count_proof["replayed_items"] + size_proof["replayed_items"] + rate_proof["replayed_items"],
                         "items", "== 0")
    drill_record.measure("within_rails_replayed", len(res.replayed_ids), "items", "== 3")
    evidence.check("batch within the rails: items replayed", len(res.replayed_ids), "==", 3,
                   detail={"status": res.status, "reason": res.reason})
    evidence.check("replayed tasks run by the worker pool", ran, "==", 3)

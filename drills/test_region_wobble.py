"""DRL-002 Region wobble: the real replica lags (WAL replay paused on the standby); the health gate fails
exactly 3 consecutive probes and cuts reads over to the primary (not after 2), traffic keeps flowing,
replay resumes, reads return to the replica; no acknowledged write is lost or read stale."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from opsproof import clock
from opsproof.measure import routing

from opsproof.plane.traffic import acknowledged_ids, drive, lost_writes

TRAFFIC_RATE = 10.0  # write+read pairs per second from the drill's own client (the plane's traffic also runs)


def _wait(pred, timeout: float, step: float = 0.1):
    return clock.wait_until(pred, timeout, step)


@pytest.mark.drill
@pytest.mark.control("DRL-002")
def test_region_wobble(target, suite, plane_settings, drill_session, steady_state, drill_record, evidence, request,
                       tmp_path):
    p = float(plane_settings.probe_interval_s)
    need = int(plane_settings.failures_to_cutover)
    api = plane_settings.ingest_url
    drill_record.intervals(probe_interval_s=p, failures_to_cutover=need, probes_to_return=plane_settings.probes_to_return)
    drill_record.plan([
        f"send {TRAFFIC_RATE:g} write+read pairs/s through the API front for the whole drill",
        f"pause WAL replay on the standby (pg_wal_replay_pause; audited, lease {drill_session.lease_s:g}s)",
        "resume WAL replay after the cutover has held for 2 probe intervals",
    ], request.config)
    evidence.require(api is not None, "no API front (OPSPROOF_INGEST_URL): cannot drive traffic")
    evidence.require(drill_session.replica_dsn is not None, "no replica configured (OPSPROOF_REPLICA_DB_URL)")
    log = tmp_path / "traffic.jsonl"
    stop = threading.Event()
    counts: dict = {}
    traffic = threading.Thread(target=lambda: counts.update(drive(api, TRAFFIC_RATE, stop, log)), daemon=True)
    traffic.start()
    timeout = (need + 3) * p + 5
    try:
        time.sleep(2 * p)
        drill_record.step("traffic.baseline", reads_on=routing.replica_reads_on(target).result)
        probe0 = routing.last_probe_id(target).result

        # 1. wobble: the standby stops replaying while the primary keeps taking writes
        t_pause = routing.db_clock(target).result
        drill_session.pause_replica("region wobble drill: make the replica lag")
        drill_record.step("replica.pause", t_pause=t_pause)
        cut = _wait(lambda: routing.replica_routed_to(target, "primary").result, timeout)
        if not cut:
            raise AssertionError(f"the health gate did NOT cut reads over to the primary within {timeout:g}s of the "
                                 f"replica lagging (probe every {p:g}s, cutover after {need} failures)")
        t_cut = cut[0]["changed_at"]
        probed = routing.replica_probes(target, probe0, t_cut)
        probes = probed.result
        audited = routing.cutover_audit(target, t_pause)
        cut_audit = audited.result
        drill_record.step("cutover", t_cutover=t_cut, probes=[{"ts": r["ts"], "ok": r["ok"], "detail": r["detail"]}
                                                                 for r in probes])
        time.sleep(2 * p)  # traffic keeps running on the primary

        # 2. recover
        t_resume = routing.db_clock(target).result
        drill_session.resume_replica("region wobble drill: replica healthy again")
        drill_record.step("replica.resume", t_resume=t_resume)
        back = _wait(lambda: routing.replica_routed_to(target, "replica", changed_after=t_cut).result, timeout)
        if not back:
            raise AssertionError(f"reads did NOT return to the replica within {timeout:g}s of replay resuming")
        t_back = back[0]["changed_at"]
        drill_record.step("returned", t_return=t_back)
        time.sleep(2 * p)
    finally:
        stop.set()
        traffic.join(15)

    # 3. what the traffic saw
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    acked = acknowledged_ids(log)
    reads = [r for r in lines if r.get("op") == "read"]
    stale = [r["id"] for r in reads if r.get("status") != 200]
    served = Counter(r.get("read_from") for r in reads)
    lost = lost_writes(api, log)
    failed_before_cut = []
    for r in probes:  # the run of failures that led to the cutover
        failed_before_cut = failed_before_cut + [r] if not r["ok"] else []
    ttc = (t_cut - t_pause).total_seconds()
    ttr = (t_back - t_resume).total_seconds()
    drill_record.measure("time_to_cutover_s", round(ttc, 3), "s")
    drill_record.measure("time_to_recover_s", round(ttr, 3), "s")
    drill_record.measure("failed_probes_before_cutover", len(failed_before_cut), "probes", f"== {need}")
    drill_record.measure("acknowledged_writes", len(acked), "writes")
    drill_record.measure("lost_writes", len(lost), "writes", "== 0")
    drill_record.measure("stale_or_missed_reads", len(stale), "reads", "== 0")
    drill_record.measure("reads_served_from", dict(served))
    drill_record.step("traffic.verified", counts=counts, acked=len(acked), reads=len(reads), lost=lost[:20],
                      stale=stale[:20], served=dict(served))

    evidence.require(len(acked) > 0 and len(reads) > 0, "the drill's traffic got no acknowledged write through")
    evidence.check("consecutive failed probes at the cutover", len(failed_before_cut), "==", need,
                   detail={"probes": [(str(r["ts"]), r["ok"], r["detail"]) for r in probes]}, query=probed.query)
    evidence.check("cutover audit row: consecutive failures", (cut_audit[0]["detail"] or {}).get("consecutive_failures")
                   if cut_audit else None, "==", need, query=audited.query)
    evidence.check("time to cutover", round(ttc, 3), "<=", (need + 2) * p + 2, unit="s")
    evidence.check("time to recover", round(ttr, 3), "<=", (plane_settings.probes_to_return + 2) * p + 2, unit="s")
    evidence.check("reads served from the primary while cut over", served.get("primary", 0), ">", 0)
    evidence.check("acknowledged writes lost", len(lost), "==", 0, detail={"lost_ids": lost[:50]})
    evidence.check("reads that missed an acknowledged write", len(stale), "==", 0, detail={"ids": stale[:50]})
    evidence.check("traffic errors", counts.get("errors", 0), "==", 0)

"""Cadence health: fresh verified backup, agent_logs within TTL, partitions ahead, audit hash chain intact."""

from __future__ import annotations

import pytest

from opsproof import clock
from opsproof.errors import OpsproofError
from opsproof.evidence import anchor as audit_anchor
from opsproof.evidence.signing import trusted_keys
from opsproof.measure import backups as measure_backups

FW = {"SOC2": ["A1.2", "CC7.4"], "ISO27001": ["A.8.13"]}


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control(id="CAD-001", title="Latest verified backup is fresher than policy", severity="high",
                     frameworks=FW)
def test_backup_freshness(target, settings, policy, evidence):
    """A backup counts only when opsproof re-establishes it in this run (measure/backups.py): its file
    reads, its sha256 matches and `pg_restore --list` lists it -- or the Supabase Management API lists it
    COMPLETED. A row's `verified` flag alone never counts."""
    api = None
    if settings.access_token is not None and settings.project_ref:
        from opsproof.target.http import ManagementApi

        def api():
            return ManagementApi(settings.access_token, settings.project_ref)

    reading = measure_backups.measure(target, management_api=api)
    limit = policy.cadence.backup_max_age_hours
    query = "; ".join(reading.ran)
    detail = {"verified": reading.newest.summary() if reading.newest else None,
              "not_counted": [c.summary() for c in reading.unverified], "sources": reading.sources}
    not_counted = "; ".join(f"{c.ref}: {c.why}" for c in reading.unverified)
    evidence.require(reading.newest is not None,
                     "no backup could be verified in this run"
                     + (f" -- {not_counted}" if not_counted else " (ops.backups is empty and no platform backups)"))
    age_h = reading.age_hours(clock.now())
    ok = age_h <= limit
    evidence.record(name="latest re-verified backup age", measured=age_h, threshold=f"<= {limit} h", verdict=ok,
                    query=query, detail=detail)
    assert ok, (f"latest re-verified backup age: measured {age_h} h, required <= {limit} h "
                f"({reading.newest.ref}, {reading.newest.how})"
                + (f"; newer backups that could not be verified: {not_counted}" if not_counted else ""))


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control(id="CAD-002", title="No agent_logs older than the TTL", severity="medium", frameworks=FW)
def test_agent_logs_ttl(target, policy, evidence):
    sql = ("select count(*) from ops.agent_logs where ts < now() - make_interval(days => %s)")
    stale = target.value(sql, (policy.cadence.agent_logs_ttl_days,))
    evidence.require(target.value("select count(*) > 0 from ops.agent_logs"), "ops.agent_logs is empty: "
                     "a zero would prove nothing")
    evidence.check(f"agent_logs older than {policy.cadence.agent_logs_ttl_days} d", stale, "==", 0, query=sql)


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control(id="CAD-003", title="Daily partitions exist for today and the days ahead", severity="medium",
                     frameworks=FW)
@pytest.mark.parametrize("table", ["requests", "health_probes", "spans", "agent_logs"])
def test_partitions_ahead(table, target, policy, evidence):
    sql = ("select count(*) from generate_series(current_date, current_date + %s, interval '1 day') d "
           "where to_regclass(format('ops.%%s_%%s', %s::text, to_char(d, 'YYYYMMDD'))) is null")
    missing = target.value(sql, (policy.cadence.partitions_ahead_days, table))
    evidence.check(f"missing ops.{table} partitions (today..+{policy.cadence.partitions_ahead_days})", missing, "==", 0,
                   query=sql)


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control(id="CAD-004", title="The audit log hash chain verifies", severity="critical",
                     frameworks={"SOC2": ["CC7.2", "CC4.1"], "ISO27001": ["A.8.15"]})
def test_audit_chain(target, settings, suite, evidence):
    """The chain verifies by itself AND extends the head recorded in the newest earlier pack for this
    target (evidence/anchor.py): a row rewritten with every later hash recomputed, or a deleted tail,
    still verifies by itself but moves the anchored head. Today's head goes into audit_anchor.json."""
    digest_sql = ("select id, at, actor, action, target, reason, run_id, hash from ops.audit_log "
                  "where at > now() - interval '24 hours' order by id")
    evidence.artifact("audit_digest.json", {"last_24h": target.rows(digest_sql)})
    head_sql = ("select (select count(*) from ops.audit_log) as rows, a.id, a.hash "
                "from ops.audit_log a order by a.id desc limit 1")
    head = target.rows(head_sql)
    sql = "select * from ops.verify_audit_chain()"
    row = target.rows(sql)[0]
    host = settings.host()
    try:
        prev = audit_anchor.previous_anchor(suite.root, suite.day, host, trusted_keys(None, settings))
    except OpsproofError as exc:
        evidence.require(False, f"cannot read the previous audit anchor: {exc}")
    anchor_name = "audit chain extends the previous pack's anchor"
    if not head and prev is not None:  # emptied after an anchor: that is a finding, not a missing measurement
        evidence.record(name=anchor_name, measured={"anchor_pack": prev.pack, "rows_then": prev.anchor["rows"],
                                                    "rows_now": 0}, threshold="extends the anchor", verdict=False,
                        query=head_sql)
        raise AssertionError(f"audit chain broken: ops.audit_log is empty, the anchor in {prev.pack} recorded "
                             f"{prev.anchor['rows']} rows up to id {prev.anchor['last_id']}")
    evidence.require(bool(head) and row["rows_checked"] > 0, "ops.audit_log is empty: nothing to verify")
    evidence.artifact(audit_anchor.ANCHOR, audit_anchor.make(
        head[0]["id"], head[0]["hash"], head[0]["rows"], target=host, at=clock.now().isoformat(),
        chain_ok=bool(row["ok"]), query=head_sql))
    evidence.record(name="audit chain", measured=row, threshold="ok", verdict=bool(row["ok"]), query=sql)

    problems: list[str] = []
    if prev is None:
        evidence.record(name=anchor_name, measured=f"no earlier pack for {host} in {suite.root}: first day, "
                        "nothing to extend (the chain is checked by itself)", threshold="extends the anchor",
                        verdict=True, query=head_sql)
    else:
        a = prev.anchor
        q = ("select (select hash from ops.audit_log where id = %s) as hash, "
             "(select count(*) from ops.audit_log where id <= %s) as up_to, "
             "(select count(*) from ops.audit_log) as total")
        now_row = target.rows(q, (a["last_id"], a["last_id"]))[0]
        problems = audit_anchor.compare(a, now_row["hash"], now_row["up_to"], now_row["total"])
        evidence.record(name=anchor_name, measured={"anchor_pack": prev.pack, "anchored_id": a["last_id"],
                                                    "rows_then": a["rows"], "rows_now": now_row["total"],
                                                    "problems": problems},
                        threshold=f"row {a['last_id']} unchanged, rows up to it = {a['rows']}",
                        verdict=not problems, query=q)
    assert row["ok"], f"audit chain broken at id {row['first_bad_id']}: {row['reason']}"
    assert not problems, (f"audit chain broken: it does not extend the anchor in {prev.pack}: "
                          + "; ".join(problems))

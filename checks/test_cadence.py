"""Cadence health: fresh verified backup, agent_logs within TTL, partitions ahead, audit hash chain intact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from opsproof import clock

FW = {"SOC2": ["A1.2", "CC7.4"], "ISO27001": ["A.8.13"]}


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control(id="CAD-001", title="Latest verified backup is fresher than policy", severity="high",
                     frameworks=FW)
def test_backup_freshness(target, policy, evidence):
    sql = ("select taken_at, kind, location, bytes, sha256 from ops.backups where verified "
           "order by taken_at desc limit 1")
    rows = target.rows(sql)
    evidence.require(bool(rows), "no verified backup recorded in ops.backups")
    b = rows[0]
    age_h = round((clock.now() - b["taken_at"]).total_seconds() / 3600, 2)
    local = Path(b["location"])
    if local.is_absolute() and b["sha256"]:
        # a row for a local file must have the real file behind it, unchanged
        evidence.require(local.exists(), f"backup row points at {local}, which does not exist")
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        evidence.require(digest == b["sha256"], f"backup file {local.name} does not match its recorded sha256")
    evidence.check("latest verified backup age", age_h, "<=", policy.cadence.backup_max_age_hours, unit=" h",
                   query=sql, detail={"kind": b["kind"], "bytes": b["bytes"], "location": local.name})


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
def test_audit_chain(target, evidence):
    digest_sql = ("select id, at, actor, action, target, reason, run_id, hash from ops.audit_log "
                  "where at > now() - interval '24 hours' order by id")
    evidence.artifact("audit_digest.json", {"last_24h": target.rows(digest_sql)})
    sql = "select * from ops.verify_audit_chain()"
    row = target.rows(sql)[0]
    evidence.require(row["rows_checked"] > 0, "ops.audit_log is empty: nothing to verify")
    evidence.record(name="audit chain", measured=row, threshold="ok", verdict=bool(row["ok"]), query=sql)
    assert row["ok"], f"audit chain broken at id {row['first_bad_id']}: {row['reason']}"

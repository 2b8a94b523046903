"""Cadence health: fresh verified backup, agent_logs within TTL, partitions ahead, audit hash chain intact."""

from __future__ import annotations

import pytest

from opsproof import clock
from opsproof.errors import OpsproofError
from opsproof.evidence import anchor as audit_anchor
from opsproof.evidence.signing import trusted_keys
from opsproof.measure import audit_chain, cadence
from opsproof.measure import backups as measure_backups



@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control("CAD-001")
def test_backup_freshness(target, settings, policy, evidence):
    """A backup counts only when opsproof re-establishes it in this run (measure/backups.py): its file
    reads, its sha256 matches and `pg_restore --list` lists it -- or the Supabase Management API lists it
    COMPLETED. A row's `verified` flag alone never counts."""
    api = None
    if settings.access_token is not None and settings.project_ref:
        from opsproof.target.http import from_settings

        def api():
            return from_settings(settings)

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
                    query=query, detail=detail, source=reading.newest.source)
    assert ok, (f"latest re-verified backup age: measured {age_h} h, required <= {limit} h "
                f"({reading.newest.ref}, {reading.newest.how})"
                + (f"; newer backups that could not be verified: {not_counted}" if not_counted else ""))


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control("CAD-002")
def test_agent_logs_ttl(target, policy, evidence):
    m = cadence.agent_logs_ttl(target, policy.cadence.agent_logs_ttl_days)
    evidence.require(m.result["present"], "ops.agent_logs is empty: "
                     "a zero would prove nothing")
    evidence.check(f"agent_logs older than {policy.cadence.agent_logs_ttl_days} d", m.result["stale"], "==", 0,
                   query=m.query)


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control("CAD-003")
@pytest.mark.parametrize("table", ["requests", "health_probes", "spans", "agent_logs"])
def test_partitions_ahead(table, target, policy, evidence):
    m = cadence.partitions_missing(target, table, policy.cadence.partitions_ahead_days)
    evidence.check(f"missing ops.{table} partitions (today..+{policy.cadence.partitions_ahead_days})", m.result, "==",
                   0, query=m.query)


@pytest.mark.daily
@pytest.mark.cadence
@pytest.mark.control("CAD-004")
def test_audit_chain(target, settings, suite, evidence):
    """The chain verifies by itself AND extends the head recorded in the newest earlier pack for this
    target (evidence/anchor.py): a row rewritten with every later hash recomputed, or a deleted tail,
    still verifies by itself but moves the anchored head. Today's head goes into audit_anchor.json."""
    evidence.artifact("audit_digest.json", {"last_24h": audit_chain.recent(target, hours=24).result})
    head_m = audit_chain.head(target)
    head, head_sql = head_m.result, head_m.query
    chain = audit_chain.verify(target)
    row = chain.result
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
    evidence.require(head is not None and row["rows_checked"] > 0, "ops.audit_log is empty: nothing to verify")
    evidence.artifact(audit_anchor.ANCHOR, audit_anchor.make(
        head["id"], head["hash"], head["rows"], target=host, at=clock.now().isoformat(),
        chain_ok=bool(row["ok"]), query=head_sql))
    evidence.record(name="audit chain", measured=row, threshold="ok", verdict=bool(row["ok"]), query=chain.query)

    problems: list[str] = []
    if prev is None:
        evidence.record(name=anchor_name, measured=f"no earlier pack for {host} in {suite.root}: first day, "
                        "nothing to extend (the chain is checked by itself)", threshold="extends the anchor",
                        verdict=True, query=head_sql)
    else:
        a = prev.anchor
        anchored = audit_chain.anchored_row(target, a["last_id"])
        now_row = anchored.result
        problems = audit_anchor.compare(a, now_row["hash"], now_row["up_to"], now_row["total"])
        evidence.record(name=anchor_name, measured={"anchor_pack": prev.pack, "anchored_id": a["last_id"],
                                                    "rows_then": a["rows"], "rows_now": now_row["total"],
                                                    "problems": problems},
                        threshold=f"row {a['last_id']} unchanged, rows up to it = {a['rows']}",
                        verdict=not problems, query=anchored.query)
    assert row["ok"], f"audit chain broken at id {row['first_bad_id']}: {row['reason']}"
    assert not problems, (f"audit chain broken: it does not extend the anchor in {prev.pack}: "
                          + "; ".join(problems))


@pytest.mark.weekly
@pytest.mark.cadence
@pytest.mark.control("CAD-005")
def test_canary_sanity(target, policy, window, evidence):
    """The canary ramp: every canary.* flag of the policy holds its value and is not overridden; the canary tasks of
    the window (7 days on the weekly run) succeed at the watchlist's rate and carry their trace."""
    from opsproof.measure import canary
    from opsproof.measure import ops as measure_ops

    want = {k: v for k, v in policy.flags.items() if k.startswith("canary.")}
    evidence.require(bool(want), "the policy names no canary.* flag: nothing to hold the canary ramp to")
    flags = measure_ops.effective_flags(target)
    off = {}
    for k, v in sorted(want.items()):
        f = flags.result.get(k)
        if f is None:
            off[k] = "missing from ops.feature_flags"
        elif f.overridden or f.value != v:
            off[k] = {"value": f.value, "policy": v, "overridden": f.overridden, "override_owner": f.override_owner}
    evidence.record(name="canary flags off policy or overridden", measured=len(off), threshold="== 0",
                    verdict=not off, query=flags.query, detail=off or sorted(want))

    tasks = canary.canary_tasks(target, *window.args)
    evidence.require(tasks.result["finished"] > 0,
                     f"no canary task finished in the {window.label} window: the canary's health cannot be shown")
    success_min = policy.watchlist.agent_success_pct_min
    success_ok = tasks.result["success_pct"] >= success_min
    evidence.record(name="canary task success", measured=tasks.result["success_pct"], threshold=f">= {success_min}%",
                    verdict=success_ok, query=tasks.query, detail=tasks.result)
    cov = measure_ops.trace_coverage(target, *window.args)
    evidence.require(cov.result.canary_tasks > 0 and cov.result.coverage_pct is not None,
                     f"no finished canary task in the {window.label} window: trace coverage cannot be shown")
    cov_min = policy.watchlist.trace_coverage_pct_min
    cov_ok = cov.result.coverage_pct >= cov_min
    evidence.record(name="canary trace coverage", measured=cov.result.coverage_pct, threshold=f">= {cov_min}%",
                    verdict=cov_ok, query=cov.query, detail={"missing": cov.result.missing})
    problems = ([f"canary flags off policy: {off}"] if off else []) + (
        [f"canary task success: measured {tasks.result['success_pct']}%, required >= {success_min}%"]
        if not success_ok else []) + (
        [f"canary trace coverage: measured {cov.result.coverage_pct}%, required >= {cov_min}%"] if not cov_ok else [])
    assert not problems, "; ".join(problems)


@pytest.mark.weekly
@pytest.mark.cadence
@pytest.mark.control("CAD-006")
def test_no_secret_in_evidence_reports_logs(suite, settings, evidence):
    """Every secret opsproof holds (database passwords, JWT secret, service keys, API tokens) is looked for --
    with its encoded variants -- in the evidence root, the reports, the plane's and the stack's logs. The record
    names files, never a secret."""
    from pathlib import Path

    from opsproof import paths
    from opsproof.evidence.secrets import find_secrets

    secrets = settings.secret_values()
    evidence.require(bool(secrets), "no secret known to look for: an empty scan would prove nothing")
    candidates = [Path(suite.root), Path(str(suite.config.rootpath)) / "reports", paths.plane_dir(),
                  paths.stack_dir() / "logs"]
    locations: list[Path] = []
    for p in candidates:  # a location inside another one is scanned once
        p = p.resolve()
        if p.exists() and not any(p == q or q in p.parents for q in locations):
            locations = [q for q in locations if p not in q.parents] + [p]
    evidence.require(bool(locations), f"none of the locations to scan exists: {[str(p) for p in candidates]}")
    hits = sorted({f"{loc}/{rel}" for loc in locations for rel, _ in find_secrets(loc, secrets)})
    evidence.record(name="files holding an opsproof secret", measured=len(hits), threshold="== 0", verdict=not hits,
                    query=f"evidence/secrets.py find_secrets({len(secrets)} secrets and their encodings) over "
                          + ", ".join(str(p) for p in locations),
                    detail={"files": hits[:50], "locations": [str(p) for p in locations], "secrets": len(secrets)})
    assert not hits, f"{len(hits)} file(s) hold an opsproof secret (names only): {hits[:5]}"

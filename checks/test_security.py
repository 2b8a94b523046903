"""Security: tenant isolation (RLS), portals x roles, service-account rotation, Supabase's advisors."""

from __future__ import annotations

import pytest

from opsproof.levers.scratch import advisor_canary, canary_name
from opsproof.measure import advisors as advisor_scan
from opsproof.measure import security as measure



@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control("SEC-002")
def test_rls_enabled_everywhere(target, suite, policy, evidence):
    schemas = list(policy.security.exposed_schemas)
    m = measure.rls_tables(target, schemas)
    rows = m.result
    evidence.require(len(rows) > 0, f"no tables found in the exposed schemas {schemas}")
    # SEC-006's advisor canary of THIS run (its name carries the run id) is RLS-less on purpose; under
    # xdist it may exist while this check runs. Any other RLS-less table counts, another run's canary included.
    own_canary = canary_name(suite.run_id)
    without = [r["table_name"] for r in rows if not r["rls"] and r["table_name"] != own_canary]
    evidence.check("tables without RLS", len(without), "==", 0, query=m.query,
                   detail={"tables_checked": len(rows), "without_rls": without, "left_aside": own_canary})


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control("SEC-004")
def test_service_account_rotation(target, policy, evidence):
    m = measure.service_account_keys(target)
    rows = m.result
    expected = policy.security.service_accounts
    missing = [a for a in expected if a not in rows]
    evidence.require(not missing, f"service accounts missing from ops.service_accounts: {missing}")
    ages = {a: round(float(rows[a]["age_days"]), 2) for a in expected}
    keyless = [a for a in expected if not rows[a]["has_key"]]
    # a rotation date in the future is not a rotation: it would hide an old key for as long as it lies
    future = {a: d for a, d in ages.items() if d < -1 / 24}
    evidence.require(not future, f"rotated_at lies in the future (days from now): "
                                 f"{ {a: -d for a, d in future.items()} }: cannot establish the key's age")
    evidence.record(name="accounts", measured=ages, threshold=f"<= {policy.security.rotation_max_days} d",
                    verdict=not keyless and max(ages.values()) <= policy.security.rotation_max_days, query=m.query)
    assert not keyless, f"service accounts without a registered key: {keyless}"
    stale = {a: d for a, d in ages.items() if d > policy.security.rotation_max_days}
    assert not stale, f"keys older than {policy.security.rotation_max_days} days: measured {stale}"


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control("SEC-005")
def test_kill_switch_account_least_privilege(target, policy, evidence):
    m = measure.service_account_permissions(target)
    perms = m.result
    acct = policy.security.kill_switch_account
    evidence.require(acct in perms, f"{acct} missing from ops.service_accounts")
    holders = sorted(a for a, p in perms.items() if "flags:autonomy.emergencyStop" in p)
    evidence.record(name="kill switch holders", measured={"holders": holders, acct: perms[acct]},
                    threshold=f"only {acct}, holding only flags:autonomy.emergencyStop",
                    verdict=holders == [acct] and perms[acct] == ["flags:autonomy.emergencyStop"], query=m.query)
    assert holders == [acct], f"kill switch holders: measured {holders}, required only {acct}"
    assert perms[acct] == ["flags:autonomy.emergencyStop"], f"{acct} holds more: measured {perms[acct]}"


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control("SEC-006")
def test_supabase_advisors(target, settings, suite, policy, evidence):
    # the positive control is a write: a lever creates this run's RLS-less canary, the measurement only reads
    with advisor_canary(target, suite.run_id) as canary:
        m = advisor_scan.scan_target(settings, canary)
    scan = m.result
    evidence.artifact("advisors.json", {"findings": scan.findings, "canary_table": scan.canary_table,
                                        "canary_reported": scan.canary_reported, "source": m.source})
    evidence.require(scan.canary_reported, f"the advisors did not report the RLS-less canary {scan.canary_table}: "
                                           "they did not scan the target, so 'no ERROR' would prove nothing")
    errors = [f"{f.get('name')}: {f.get('detail')}" for f in scan.findings
              if str(f.get("level", "")).upper() == policy.security.advisors_fail_level]
    evidence.check("advisor ERROR findings", len(errors), "==", 0, query=m.query, detail=errors[:20], source=m.source)


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control("SEC-001")
def test_cross_tenant_reads_are_zero(target, settings, suite, policy, evidence):
    """Every principal (anon, each role of each tenant, strangers, malformed tokens) x every exposed relation and
    callable function (measure/tenancy.py). A leak or an unjudgeable SECURITY DEFINER function fails; a zero that
    no owner reads through the same path is an error, never a pass."""
    from opsproof.measure import tenancy

    m = tenancy.cross_tenant_matrix(target, schemas=policy.security.exposed_schemas,
                                    allowlist=policy.security.isolation_allowlist)
    evidence.artifact("rls_matrix.json", m.evidence())
    evidence.require(len(m.tenants) >= 2 and m.tables,
                     "need >= 2 tenants and tenant-scoped relations to test isolation")
    failures = m.failures()
    evidence.record(name="cross-tenant reads and unjudged SECURITY DEFINER functions", measured=len(failures),
                    threshold="== 0", verdict=not failures, query="measure/tenancy.py: RELATIONS_SQL, FUNCTIONS_SQL",
                    detail={**m.summary(), "first": failures[:10]}, source="sql")
    api_unproven: list[str] = []
    if settings.supabase_url and settings.anon_key is not None and settings.service_role_key is not None:
        # the same matrix through the real API: PostgREST as users Auth signed in (measure/tenancy_api.py)
        from opsproof.levers.api_users import signed_in_users
        from opsproof.measure import tenancy_api

        tenants = list(m.tenants[:2])
        with signed_in_users(target, settings, [(t, r) for t in tenants for r in tenancy.HUMAN_ROLES],
                             suite.run_id) as users:
            am = tenancy_api.matrix(settings, users, tenancy_api.relations_of(m), tenants)
        api = am.result
        evidence.artifact("rls_matrix_api.json", api.evidence())
        evidence.require(api.relations and len(api.not_exposed) < len(api.relations),
                         "the API exposes none of the tenant-scoped relations: isolation through it cannot be shown")
        failures += api.failures()
        api_unproven = api.unproven()
        evidence.record(name="cross-tenant reads through the API (PostgREST, signed-in users)",
                        measured=len(api.leaks), threshold="== 0", verdict=not api.leaks, query=am.query,
                        detail={**api.summary(), "first": api.failures()[:10]}, source=am.source)
    assert not failures, (f"isolation broken: measured {len(m.leaks)} cross-tenant reads and {len(m.unjudged)} "
                          f"unjudged SECURITY DEFINER functions, required 0; first: {failures[:3]}")
    evidence.require(not m.unproven(), "zero cross-reads are not meaningful where no owner reads its own rows "
                                       f"through the same path: {m.unproven()[:5]}")
    evidence.require(not api_unproven, "zero cross-reads through the API are not meaningful where no signed-in "
                                       f"owner reads its own rows through it: {api_unproven[:5]}")


@pytest.mark.daily
@pytest.mark.weekly  # the weekly portal audit IS this check
@pytest.mark.security
@pytest.mark.control("SEC-003")
def test_portal_matrix_equals_role_matrix(target, suite, evidence):
    from pathlib import Path

    from opsproof.measure import tenancy

    source = Path(str(suite.config.rootpath)) / "role-matrix.md"
    try:
        expected = tenancy.parse_role_matrix(source)
    except (OSError, ValueError) as exc:
        from opsproof.recorder import MeasurementError

        raise MeasurementError(f"cannot read the role matrix: {exc}") from None
    roles = sorted({r for _, r in expected})
    evidence.require(len({p for p, _ in expected}) == 20 and len(roles) == 8,
                     f"role-matrix.md must hold 20 portals x 8 roles, has {len({p for p, _ in expected})} x {len(roles)}")
    by_function = tenancy.portal_access_as_roles(target, roles)
    diff = tenancy.matrix_diff(expected, by_function)
    # the data path too: where a portal owns tenant tables, its roles read rows and the others read none
    reach = tenancy.portal_table_reach(target, roles)
    diff += [f"{p} x {r}: data path disagrees (reads rows: {v})" for (p, r), v in sorted(reach.items())
             if expected.get((p, r)) != v]
    evidence.artifact("portal_matrix.json", {"cells": len(expected), "data_path_cells": len(reach), "diff": diff})
    evidence.check("portal x role cells that differ from role-matrix.md", len(diff), "==", 0,
                   query=f"{tenancy.PORTAL_ACCESS_SQL}  -- as each role's JWT",
                   detail=diff[:20])

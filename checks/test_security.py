"""Security: tenant isolation (RLS), portals x roles, service-account rotation, Supabase's advisors."""

from __future__ import annotations

import pytest

from opsproof.measure import advisors as advisor_scan

FW_ACCESS = {"SOC2": ["CC6.1", "CC6.3"], "ISO27001": ["A.5.15", "A.8.3"]}

RLS_SQL = ("select n.nspname || '.' || c.relname as table_name, c.relrowsecurity as rls "
           "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
           "where n.nspname = any(%s) and c.relkind in ('r', 'p') order by 1")


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-002", title="RLS is enabled on every table of the exposed schemas", severity="critical",
                     frameworks=FW_ACCESS)
def test_rls_enabled_everywhere(target, suite, policy, evidence):
    from opsproof.levers.scratch import canary_name

    schemas = list(policy.security.exposed_schemas)
    rows = target.rows(RLS_SQL, (schemas,))
    evidence.require(len(rows) > 0, f"no tables found in the exposed schemas {schemas}")
    # SEC-006's advisor canary of THIS run (its name carries the run id) is RLS-less on purpose; under
    # xdist it may exist while this check runs. Any other RLS-less table counts, another run's canary included.
    own_canary = canary_name(suite.run_id)
    without = [r["table_name"] for r in rows if not r["rls"] and r["table_name"] != own_canary]
    evidence.check("tables without RLS", len(without), "==", 0, query=RLS_SQL,
                   detail={"tables_checked": len(rows), "without_rls": without, "left_aside": own_canary})


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-004", title="Every service account's key was rotated within the limit",
                     severity="high", frameworks={"SOC2": ["CC6.1"], "ISO27001": ["A.5.17"]})
def test_service_account_rotation(target, policy, evidence):
    sql = ("select name, key_fingerprint is not null as has_key, "
           "extract(epoch from now() - rotated_at) / 86400 as age_days from ops.service_accounts order by name")
    rows = {r["name"]: r for r in target.rows(sql)}
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
                    verdict=not keyless and max(ages.values()) <= policy.security.rotation_max_days, query=sql)
    assert not keyless, f"service accounts without a registered key: {keyless}"
    stale = {a: d for a, d in ages.items() if d > policy.security.rotation_max_days}
    assert not stale, f"keys older than {policy.security.rotation_max_days} days: measured {stale}"


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-005", title="Only the kill-switch account may flip the kill switch, and it may do nothing else",
                     severity="high", frameworks={"SOC2": ["CC6.3"], "ISO27001": ["A.8.2"]})
def test_kill_switch_account_least_privilege(target, policy, evidence):
    sql = "select name, permissions from ops.service_accounts order by name"
    perms = {r["name"]: list(r["permissions"]) for r in target.rows(sql)}
    acct = policy.security.kill_switch_account
    evidence.require(acct in perms, f"{acct} missing from ops.service_accounts")
    holders = sorted(a for a, p in perms.items() if "flags:autonomy.emergencyStop" in p)
    evidence.record(name="kill switch holders", measured={"holders": holders, acct: perms[acct]},
                    threshold=f"only {acct}, holding only flags:autonomy.emergencyStop",
                    verdict=holders == [acct] and perms[acct] == ["flags:autonomy.emergencyStop"], query=sql)
    assert holders == [acct], f"kill switch holders: measured {holders}, required only {acct}"
    assert perms[acct] == ["flags:autonomy.emergencyStop"], f"{acct} holds more: measured {perms[acct]}"


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-006", title="Supabase security advisors report no ERROR (and provably scanned)",
                     severity="critical", frameworks={"SOC2": ["CC7.1"], "ISO27001": ["A.8.8"]})
def test_supabase_advisors(target, settings, suite, policy, evidence):
    scan = advisor_scan.scan(target, settings.db_url.get_secret_value(), suite.run_id)
    evidence.artifact("advisors.json", {"findings": scan.findings, "canary_table": scan.canary_table,
                                        "canary_reported": scan.canary_reported})
    evidence.require(scan.canary_reported, f"the advisors did not report the RLS-less canary {scan.canary_table}: "
                                           "they did not scan the target, so 'no ERROR' would prove nothing")
    errors = [f"{f.get('name')}: {f.get('detail')}" for f in scan.findings
              if str(f.get("level", "")).upper() == policy.security.advisors_fail_level]
    evidence.check("advisor ERROR findings", len(errors), "==", 0,
                   query="supabase db advisors --remote=<target> --type security --output-format json",
                   detail=errors[:20])


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-001", title="RLS: no API principal reads another tenant's rows through any exposed path",
                     severity="critical", frameworks=FW_ACCESS)
def test_cross_tenant_reads_are_zero(target, policy, evidence):
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
                    detail={**m.summary(), "first": failures[:10]})
    assert not failures, (f"isolation broken: measured {len(m.leaks)} cross-tenant reads and {len(m.unjudged)} "
                          f"unjudged SECURITY DEFINER functions, required 0; first: {failures[:3]}")
    evidence.require(not m.unproven(), "zero cross-reads are not meaningful where no owner reads its own rows "
                                       f"through the same path: {m.unproven()[:5]}")


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.control(id="SEC-003", title="Portal x role access in the database equals role-matrix.md, cell for cell",
                     severity="high", frameworks=FW_ACCESS)
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
                   query="select key, public.can_access_portal(key) from public.portals  -- as each role's JWT",
                   detail=diff[:20])

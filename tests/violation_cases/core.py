"""The original one-per-control violations: each breaks one thing with real SQL; only that control may go red."""

from violation_cases import Case

CASES = [
    Case(name="FLG-001/override", red={"FLG-001": "fail"},
         inject="insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at) values "
                "('autonomy.emergencyStop', 'true', 'violation-test', 't', 'inject', now() + interval '10 minutes')",
         undo="delete from ops.flag_overrides where owner = 'violation-test'",
         why="an unexpired override is the effective value, whatever the base table says"),
    Case(name="FLG-001/base", red={"FLG-001": "fail"},
         inject="update ops.feature_flags set value = 'false', updated_by = 'violation-test' where key = 'obs.otelEnabled'",
         undo="update ops.feature_flags set value = 'true', updated_by = 'migration' where key = 'obs.otelEnabled'",
         why="a required flag changed in the base table"),
    Case(name="BUD-001", red={"BUD-001": "fail"},
         inject="update ops.budgets set value = 200 where key = 'agent.concurrency'",
         undo="update ops.budgets set value = 150 where key = 'agent.concurrency'",
         why="a configured budget above the policy's maximum"),
    Case(name="BUD-002", red={"BUD-002": "fail"},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id) "
                "select 'violation', 'succeeded', now() - interval '3 hours', now() - interval '2 hours', "
                "now() - interval '1 hour', 'violation' from generate_series(1, 160)",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="160 tasks running at once against a budget of 150"),
    Case(name="BUD-003", red={"BUD-003": "fail"},
         inject="insert into ops.dlq_replays (items, bytes, failed, at, requested_by) "
                "values (60, 1000, 0, now() - interval '1 hour', 'violation')",
         undo="delete from ops.dlq_replays where requested_by = 'violation'",
         why="a replay batch of 60 items against a rail of 50"),
    Case(name="SLO-001", red={"SLO-001": "fail"},
         # every region down for 10 minutes (a replica-only failure is not downtime: the gate cuts over)
         inject="update ops.health_probes set ok = false, detail = 'violation:' || coalesce(detail, '') "
                "where ts >= now() - interval '3 hours' and ts < now() - interval '3 hours' + interval '10 minutes' "
                "and ok",
         undo="update ops.health_probes set ok = true, detail = nullif(substr(detail, 11), '') "
              "where detail like 'violation:%'",
         why="ten minutes of downtime in every region"),
    Case(name="SLO-002", red={"SLO-002": "fail"},
         inject="insert into ops.requests (ts, route, status, duration_ms, source) "
                "select now() - make_interval(secs => g), '/api/loads', 500, 50, 'violation' "
                "from generate_series(1, 400) g",
         undo="delete from ops.requests where source = 'violation'",
         why="400 server errors push the success rate under the SLO"),
    Case(name="SLO-003", red={"SLO-003": "fail"},
         inject="insert into ops.requests (ts, route, status, duration_ms, source) "
                "select now() - make_interval(secs => g), '/api/loads', 200, 9000, 'violation' "
                "from generate_series(1, 800) g",
         undo="delete from ops.requests where source = 'violation'",
         why="800 slow requests push p95 latency over the SLO"),
    Case(name="WCH-001", red={"WCH-001": "fail"},
         inject="insert into ops.outbox (created_at, published_at, topic) select now() - interval '2 hours', "
                "now() - interval '2 hours' + interval '20 seconds', 'violation' from generate_series(1, 6000)",
         undo="delete from ops.outbox where topic = 'violation'",
         why="6000 events published 20 s late"),
    Case(name="WCH-002", red={"WCH-002": "fail"},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id) "
                "select 'violation', 'failed', now() - interval '2 hours' + make_interval(secs => 2 * g), "
                "now() - interval '2 hours' + make_interval(secs => 2 * g), "
                "now() - interval '2 hours' + make_interval(secs => 2 * g + 1), 'violation' "
                "from generate_series(1, 400) g",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="400 failed agent tasks (one after another: no concurrency spike) push success under 98%"),
    Case(name="WCH-003", red={"WCH-003": "fail"},
         inject="insert into ops.dlq_replays (tenant_id, items, bytes, failed, at, requested_by) "
                "select '00000000-0000-0000-0000-000000000001', 1, 100, 0, now() - make_interval(mins => g), "
                "'violation' from generate_series(1, 3) g",
         undo="delete from ops.dlq_replays where requested_by = 'violation'",
         why="three replays of one tenant in a day against a strict maximum of 3"),
    Case(name="WCH-004", red={"WCH-004": "fail"},
         inject="insert into ops.ci_events (branch, kind, at, detail) values ('main', 'self_heal', "
                "now() - interval '1 hour', '{\"violation\": true}')",
         undo="delete from ops.ci_events where detail ? 'violation'",
         why="a CI self-heal trigger on main"),
    Case(name="WCH-005", red={"WCH-005": "fail"},
         inject="insert into ops.agent_tasks (kind, status, enqueued_at, started_at, finished_at, trace_id, canary) "
                "values ('violation', 'succeeded', now() - interval '1 hour', now() - interval '1 hour', "
                "now() - interval '59 minutes', 'violation', true)",
         undo="delete from ops.agent_tasks where kind = 'violation'",
         why="a canary task without its agent.task.execute span"),
    Case(name="WCH-006", red={"WCH-006": "fail"},
         inject="insert into ops.alerts (severity, source, title) values ('critical', 'violation', 'injected outage')",
         undo="delete from ops.alerts where source = 'violation'",
         why="an unresolved critical alert"),
    Case(name="CAD-001", red={"CAD-001": "fail"},
         inject="update ops.backups set taken_at = taken_at - interval '3 days'",
         undo="update ops.backups set taken_at = taken_at + interval '3 days'",
         why="the newest backup is three days old"),
    Case(name="CAD-002", red={"CAD-002": "fail"},
         inject="select ops.ensure_partitions('agent_logs', current_date - 20, current_date - 20); "
                "insert into ops.agent_logs (ts, level, message) values (now() - interval '20 days', 'info', 'violation')",
         undo="delete from ops.agent_logs where message = 'violation'",
         why="an agent log row older than the TTL"),
    Case(name="CAD-003", red={"CAD-003": "fail"},
         inject="do $$ begin execute format('drop table ops.requests_%s', to_char(current_date + 7, 'YYYYMMDD')); "
                "end $$",
         undo="select ops.ensure_partitions('requests', current_date, current_date + 7)",
         why="the partition seven days ahead is missing"),
    Case(name="CAD-004", red={"CAD-004": "fail"},
         inject="select ops.audit('violation-test', 'violation.test', 'ops.audit_log', 'to be tampered', 't', "
                "'{}'::jsonb); set session_replication_role = replica; "
                "update ops.audit_log set reason = 'tampered' where action = 'violation.test'",
         # restore the row (not delete it): the suite run appended rows chained after it
         undo="set session_replication_role = replica; update ops.audit_log set reason = 'to be tampered' "
              "where action = 'violation.test'; set session_replication_role = origin",
         superuser=True,  # only a superuser can bypass the chain's trigger
         why="an audit row rewritten behind the trigger's back"),
    Case(name="SEC-001", red={"SEC-001": "fail"},
         # the portal check stays (SEC-003's portal x role matrix is unchanged): only the tenant predicate goes
         inject="create policy violation_leak on public.loads for select to authenticated "
                "using ((select public.can_access_portal('dispatch')))",
         undo="drop policy violation_leak on public.loads",
         why="a permissive policy leaks every tenant's loads"),
    # an exposed table without RLS is one fault two controls see: our RLS check and Supabase's own advisors
    Case(name="SEC-002", red={"SEC-002": "fail", "SEC-006": "fail"},
         inject="alter table ops.ci_events disable row level security",
         undo="alter table ops.ci_events enable row level security",
         why="RLS switched off on one table of an exposed schema (the advisors' rls_disabled_in_public too)"),
    Case(name="SEC-003", red={"SEC-003": "fail"},
         inject="insert into public.portal_roles (portal_key, app_role) values ('financial', 'viewer')",
         undo="delete from public.portal_roles where portal_key = 'financial' and app_role = 'viewer'",
         why="the database grants a portal the role matrix does not"),
    Case(name="SEC-004", red={"SEC-004": "fail"},
         inject="update ops.service_accounts set rotated_at = rotated_at - interval '100 days' where name = 'ci@'",
         undo="update ops.service_accounts set rotated_at = rotated_at + interval '100 days' where name = 'ci@'",
         why="a key last rotated more than 90 days ago"),
    Case(name="SEC-005", red={"SEC-005": "fail"},
         inject="update ops.service_accounts set permissions = permissions || 'flags:autonomy.emergencyStop'::text "
                "where name = 'ci@'",
         undo="update ops.service_accounts set permissions = array_remove(permissions, 'flags:autonomy.emergencyStop') "
              "where name = 'ci@'",
         why="a second account may flip the kill switch"),
    Case(name="SEC-006", red={"SEC-006": "fail", "SEC-002": "fail"},
         inject="create table public.violation_no_rls (id int); grant select on public.violation_no_rls to anon",
         undo="drop table public.violation_no_rls",
         why="an exposed table without RLS (Supabase's advisors report an ERROR)"),
]

-- Tenant-keyed indexes on the tenant-tagged ops tables: RLS policies filter on tenant_id, and the
-- daily isolation matrix probes "rows of tenant X visible as tenant Y?" with one index probe per cell
-- instead of a scan of the whole table (measured: 17 s of a 24 s daily run at 10M requests without them).
create index if not exists requests_tenant on ops.requests (tenant_id);
create index if not exists spans_tenant on ops.spans (tenant_id);
create index if not exists agent_tasks_tenant on ops.agent_tasks (tenant_id);
create index if not exists outbox_tenant on ops.outbox (tenant_id);
create index if not exists dlq_tenant on ops.dlq (tenant_id);
create index if not exists dlq_replays_tenant on ops.dlq_replays (tenant_id);

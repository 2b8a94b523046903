-- opsproof ops contract: incident levers and the operational cadence. See docs/operations.md.
--
-- ops.flag_snapshots: snapshots of every base flag value (ops.feature_flags) and budget
-- (ops.budgets). The newest row with known_good = true is what `opsproof incident handle` with
-- type "rollback" reverts to. Rows are taken by `opsproof incident snapshot` (an operator's
-- "this is good") and by `opsproof cadence daily` when the flags and budgets match the policy.
-- Budgets are stored as text so a numeric comes back with exactly its scale.

create table if not exists ops.flag_snapshots (
  id          bigserial primary key,
  taken_at    timestamptz not null default now(),
  taken_by    text not null default current_user,
  reason      text not null,
  known_good  boolean not null default false,
  flags       jsonb not null,                    -- {"key": <jsonb value>}
  budgets     jsonb not null,                    -- {"key": "<numeric as text>"}
  check (jsonb_typeof(flags) = 'object' and jsonb_typeof(budgets) = 'object')
);
create index if not exists flag_snapshots_known_good on ops.flag_snapshots (taken_at desc) where known_good;

-- Operator data: the service role (opsproof) only. RLS on with no policy for the API roles.
alter table ops.flag_snapshots enable row level security;
revoke all on ops.flag_snapshots from public, anon, authenticated;
grant select, insert on ops.flag_snapshots to service_role;
revoke all on sequence ops.flag_snapshots_id_seq from public, anon, authenticated;
grant usage on sequence ops.flag_snapshots_id_seq to service_role;

-- Open incidents are looked up by status on every handle/resume.
create index if not exists incidents_open on ops.incidents (opened_at desc) where status = 'open';

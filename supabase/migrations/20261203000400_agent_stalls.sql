-- opsproof ops contract: stalled agent tasks.
--
-- ops.agent_health counts only finished tasks in its success rate, so a pool that stops finishing
-- work (tasks left 'queued' or 'running' for hours) would keep a perfect success rate. A task is
-- *stalled* when, at p_to, it has been queued (since enqueued_at) or running (since started_at) for
-- longer than p_after_s seconds. Every unfinished task enqueued before p_to counts, however old: a
-- task stuck since before the window is still stuck. One jsonb document, like every measurement.

create index if not exists agent_tasks_unfinished on ops.agent_tasks (enqueued_at)
  where status in ('queued', 'running');

create or replace function ops.agent_stalls(p_from timestamptz, p_to timestamptz, p_after_s double precision)
returns jsonb
language sql stable security invoker set search_path = '' as $$
with u as (
  select t.id, t.status,
         extract(epoch from p_to - case when t.status = 'running' then coalesce(t.started_at, t.enqueued_at)
                                        else t.enqueued_at end) as age_s
    from ops.agent_tasks t
   where t.status in ('queued', 'running') and t.enqueued_at < p_to
)
select jsonb_build_object(
  'window', jsonb_build_object('from', p_from, 'to', p_to),
  'stall_after_s', p_after_s,
  'unfinished', count(*),
  'stalled', count(*) filter (where u.age_s > p_after_s),
  'stalled_queued', count(*) filter (where u.age_s > p_after_s and u.status = 'queued'),
  'stalled_running', count(*) filter (where u.age_s > p_after_s and u.status = 'running'),
  'oldest_unfinished_s', round(coalesce(max(u.age_s), 0)::numeric, 3),
  'stalled_task_ids', coalesce((select jsonb_agg(x.id order by x.id)
                                  from (select u2.id from u u2 where u2.age_s > p_after_s
                                         order by u2.id limit 10) x), '[]'::jsonb)
)
from u
$$;

revoke all on function ops.agent_stalls(timestamptz, timestamptz, double precision) from public, anon;
grant execute on function ops.agent_stalls(timestamptz, timestamptz, double precision) to service_role, authenticated;

-- Partition maintenance is the cadence's (run as the project owner), never the API's: the schema's
-- default privileges had made these executable by anon and authenticated.
revoke execute on function ops.ensure_partitions(text, date, date) from public, anon, authenticated;
revoke execute on function ops.drop_partitions_before(text, date) from public, anon, authenticated;

"""The replica-pause lease as the contract records it (audit rows): one query, read by the lever that renews
it and by whatever heals a lapsed pause (the reference plane's health gate)."""

from __future__ import annotations

# pg_advisory_xact_lock(class, obj) taken by renewals and by whoever resumes an expired pause; the drill lock
# is (0x0D5F, 0x0D21) at session level.
PAUSE_LOCK = (0x0D5F, 0x0D22)

# The newest lever pause (last 7 days), its effective expiry (the pause row or its latest heartbeat) and
# whether a resume row follows it.
LEASE_SQL = """
with p as (
  select id, run_id, detail from ops.audit_log
   where action = 'replica.replay.pause' and at > now() - interval '7 days'
   order by id desc limit 1)
select p.id, p.run_id, p.detail->>'owner',
       greatest((p.detail->>'expires_at')::timestamptz,
                (select max((r.detail->>'expires_at')::timestamptz) from ops.audit_log r
                  where r.id > p.id and r.action = 'replica.replay.renew'
                    and r.detail->>'pause_audit_id' = p.id::text)) as expires_at,
       exists (select 1 from ops.audit_log r where r.id > p.id and r.action = 'replica.replay.resume') as resumed,
       now() as now
  from p
"""

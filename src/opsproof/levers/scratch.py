"""Short-lived scratch objects a check needs on the target (created and dropped in one call, audited)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from opsproof.levers.common import audit, connection

REASON = "advisors positive control"


def canary_name(run_id: str) -> str:
    """The advisors' canary table of one run (the other security controls leave exactly this one aside)."""
    return f"public.opsproof_advisor_canary_{run_id[:12].lower()}"


@contextmanager
def advisor_canary(where, run_id: str) -> Iterator[str]:
    """A table in `public` without RLS, granted like Supabase grants, that the advisors must report.

    Dropped on the way out whatever happens; the name carries the run id so a leftover is attributable.
    """
    name = canary_name(run_id)
    with connection(where) as conn, conn.transaction():
        conn.execute(f"create table if not exists {name} (id int)")
        conn.execute(f"grant select on {name} to anon, authenticated")
        audit(conn, action="advisors.canary.create", target=name, reason=REASON, run_id=run_id)
    try:
        yield name
    finally:
        with connection(where) as conn, conn.transaction():
            conn.execute(f"drop table if exists {name}")
            audit(conn, action="advisors.canary.drop", target=name, reason=REASON, run_id=run_id)

"""Short-lived scratch objects a check needs on the target (created and dropped in one call, audited)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg

from opsproof.target.db import Target


def _audit(conn: psycopg.Connection, action: str, target: str, run_id: str) -> None:
    if conn.execute("select to_regprocedure('ops.audit(text,text,text,text,text,jsonb,uuid)') is not null").fetchone()[0]:
        conn.execute("select ops.audit(%s, %s, %s, %s, %s, '{}'::jsonb, null)",
                     ("opsproof", action, target, "advisors positive control", run_id))


def canary_name(run_id: str) -> str:
    """The advisors' canary table of one run (the other security controls leave exactly this one aside)."""
    return f"public.opsproof_advisor_canary_{run_id[:12].lower()}"


@contextmanager
def advisor_canary(target: Target, run_id: str) -> Iterator[str]:
    """A table in `public` without RLS, granted like Supabase grants, that the advisors must report.

    Dropped on the way out whatever happens; the name carries the run id so a leftover is attributable.
    """
    name = canary_name(run_id)
    with target.connection() as conn:
        conn.execute(f"create table if not exists {name} (id int)")
        conn.execute(f"grant select on {name} to anon, authenticated")
        _audit(conn, "advisors.canary.create", name, run_id)
    try:
        yield name
    finally:
        with target.connection() as conn:
            conn.execute(f"drop table if exists {name}")
            _audit(conn, "advisors.canary.drop", name, run_id)

"""Supabase's own security advisors, with a positive control proving they actually scanned the target."""

from __future__ import annotations

from dataclasses import dataclass

from opsproof.levers.scratch import advisor_canary
from opsproof.stack.supabase_cli import advisors
from opsproof.target.db import Target


@dataclass
class AdvisorScan:
    findings: list[dict]          # everything the advisors reported, minus our canary
    canary_reported: bool         # the deliberately RLS-less canary table was reported
    canary_table: str


def scan(target: Target, db_url: str, run_id: str) -> AdvisorScan:
    """Run `supabase db advisors --type security` once while a scratch RLS-less table exists (then drop it)."""
    with advisor_canary(target, run_id) as canary:
        found = advisors(db_url, "security")
    short = canary.split(".", 1)[1]

    def about_canary(f: dict) -> bool:
        meta = f.get("metadata") or {}
        return meta.get("name") == short or short in (f.get("detail") or "")

    return AdvisorScan(findings=[f for f in found if not about_canary(f)],
                       canary_reported=any(about_canary(f) and f.get("level") == "ERROR" for f in found),
                       canary_table=canary)

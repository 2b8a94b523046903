"""Supabase's own security advisors, with a positive control proving they actually scanned the target.

The positive control (an RLS-less canary table) is a write: the caller creates it through a lever
(opsproof.levers.scratch.advisor_canary) and passes its name here; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsproof.measure.models import Measurement
from opsproof.stack.supabase_cli import advisors

COMMAND = "supabase db advisors --remote=<target> --type security --output-format json"


@dataclass
class AdvisorScan:
    findings: list[dict]          # everything the advisors reported, minus the canary
    canary_reported: bool         # the deliberately RLS-less canary table was reported (as an ERROR)
    canary_table: str


def about(finding: dict, table: str) -> bool:
    """Is this finding about `table` (schema-qualified)?"""
    short = table.split(".", 1)[-1]
    meta = finding.get("metadata") or {}
    return meta.get("name") == short or short in (finding.get("detail") or "")


def scan(db_url: str, canary_table: str) -> Measurement[AdvisorScan]:
    """Run `supabase db advisors --type security` once, while `canary_table` exists (the caller's lever)."""
    found = advisors(db_url, "security")
    result = AdvisorScan(findings=[f for f in found if not about(f, canary_table)],
                         canary_reported=any(about(f, canary_table) and f.get("level") == "ERROR" for f in found),
                         canary_table=canary_table)
    return Measurement(result, COMMAND, source="supabase-cli")

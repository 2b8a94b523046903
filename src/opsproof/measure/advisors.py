"""Supabase's own security advisors, with a positive control proving they actually scanned the target.

Two sources of the same lints (splinter): the npm Supabase CLI (`supabase db advisors`), or, when the CLI is not
installed (or OPSPROOF_ADVISORS_SOURCE=management-api), the Management API's `GET /v1/projects/{ref}/advisors/
security`. The measurement says which one ran.

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


API_REQUEST = "GET /v1/projects/{ref}/advisors/security"
API_SOURCE = "management-api"
CLI_SOURCE = "supabase-cli"


def _scan(found: list[dict], canary_table: str) -> AdvisorScan:
    return AdvisorScan(findings=[f for f in found if not about(f, canary_table)],
                       canary_reported=any(about(f, canary_table) and f.get("level") == "ERROR" for f in found),
                       canary_table=canary_table)


def scan(db_url: str, canary_table: str) -> Measurement[AdvisorScan]:
    """Run `supabase db advisors --type security` once, while `canary_table` exists (the caller's lever)."""
    return Measurement(_scan(advisors(db_url, "security"), canary_table), COMMAND, source=CLI_SOURCE)


def scan_api(api, canary_table: str) -> Measurement[AdvisorScan]:
    """The same lints from the Management API (`GET /v1/projects/{ref}/advisors/security`), while the canary exists."""
    found = [lint.model_dump(mode="json", exclude_none=True) for lint in api.security_advisors()]
    return Measurement(_scan(found, canary_table), API_REQUEST.format(ref=api.project_ref), source=API_SOURCE)


def cli_installed() -> bool:
    from opsproof.errors import UsageError
    from opsproof.stack.supabase_cli import cli_path

    try:
        cli_path()
    except UsageError:
        return False
    return True


def choose_source(settings) -> str:
    """OPSPROOF_ADVISORS_SOURCE (auto|cli|management-api); auto = the npm CLI when installed, else the
    Management API when configured. Neither available: a MeasurementError naming both ways."""
    from opsproof.recorder import MeasurementError

    wanted = getattr(settings, "advisors_source", "auto") or "auto"
    api_ok = getattr(settings, "access_token", None) is not None and bool(getattr(settings, "project_ref", None))
    if wanted == "cli" or (wanted == "auto" and cli_installed()):
        return CLI_SOURCE
    if api_ok:
        return API_SOURCE
    raise MeasurementError("no source for Supabase's advisors: the Supabase CLI is not installed (`npm ci`) and "
                           "the Management API is not configured (SUPABASE_ACCESS_TOKEN + SUPABASE_PROJECT_REF)"
                           if wanted == "auto" else
                           "OPSPROOF_ADVISORS_SOURCE=management-api needs SUPABASE_ACCESS_TOKEN + SUPABASE_PROJECT_REF")


def scan_target(settings, canary_table: str) -> Measurement[AdvisorScan]:
    """The advisors of the target from the chosen source (see choose_source)."""
    if choose_source(settings) == CLI_SOURCE:
        return scan(settings.db_url.get_secret_value(), canary_table)
    from opsproof.target.http import from_settings

    with from_settings(settings) as api:
        return scan_api(api, canary_table)

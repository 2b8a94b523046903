"""API SLOs from the gateway: success rate and p95 latency of the project's REST and Auth requests, read from
Supabase's edge logs through the Management API's logs query endpoint
(`GET /v1/projects/{ref}/analytics/endpoints/logs.all?sql=...&iso_timestamp_start=...&iso_timestamp_end=...`).

The logs SQL (the endpoint's BigQuery dialect over `edge_logs`) aggregates on the platform and returns one row
per query: requests, server errors (status >= 500, the contract's definition), p95 of `response.origin_time`
(ms), and the same counts over each burn-rate window. The platform accepts at most 24 hours per query: a longer
window is split into <= 24 h chunks; counts add up exactly, and the window's p95 is then reported as the LARGEST
chunk p95 (an upper bound, said in the document: never a better latency than some day had).

The document mirrors ops.slo_snapshot's keys that SLO-002/003 read (requests, success_pct, p95_ms,
error_budget.success, burn_rates), so the checks judge both sources the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from opsproof.measure.models import Measurement
from opsproof.recorder import MeasurementError

SOURCE = "management-api:logs"
ENDPOINT = "GET /v1/projects/{ref}/analytics/endpoints/logs.all"
MAX_CHUNK = timedelta(hours=24)
# the project's API traffic: PostgREST and GoTrue behind the gateway
PATH_RE = r"^/(rest|auth)/v1/"


def _ts(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def logs_sql(start: datetime, end: datetime, burn_since: dict[str, datetime]) -> str:
    """One aggregate over edge_logs for [start, end): the SQL sent to the logs query endpoint."""
    burn = "".join(
        f",\n  countif(t.timestamp >= timestamp '{_ts(since)}') as requests_{label},"
        f"\n  countif(t.timestamp >= timestamp '{_ts(since)}' and response.status_code >= 500) as errors_{label}"
        for label, since in burn_since.items())
    return (
        "select\n  count(*) as requests,\n  countif(response.status_code >= 500) as errors,\n"
        "  approx_quantiles(response.origin_time, 100)[offset(95)] as p95_ms" + burn + "\n"
        "from edge_logs as t\n"
        "  cross join unnest(t.metadata) as m\n"
        "  cross join unnest(m.request) as request\n"
        "  cross join unnest(m.response) as response\n"
        f"where t.timestamp >= timestamp '{_ts(start)}' and t.timestamp < timestamp '{_ts(end)}'\n"
        f"  and regexp_contains(request.path, r'{PATH_RE}')")


def _chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out, cur = [], start
    while cur < end:
        nxt = min(end, cur + MAX_CHUNK)
        out.append((cur, nxt))
        cur = nxt
    return out


def _int(row: dict, key: str) -> int:
    value = row.get(key)
    if value is None:
        raise MeasurementError(f"the logs query answered without {key!r}: cannot count the gateway's requests")
    return int(value)


def slo(api, start: datetime, end: datetime, success_target: float = 98.0,
        burn_hours: list[int] | tuple[int, ...] = (1, 6)) -> Measurement[dict]:
    """Success rate, p95 and burn rates of the REST/Auth traffic between start and end (see the module docstring)."""
    if end <= start:
        raise MeasurementError("the gateway SLO window is empty")
    burns = {f"{int(h)}h": max(start, end - timedelta(hours=int(h))) for h in sorted(set(burn_hours)) if int(h) > 0}
    requests = errors = 0
    p95s: list[float] = []
    burn_n = {k: 0 for k in burns}
    burn_err = {k: 0 for k in burns}
    statements = []
    for lo, hi in _chunks(start, end):
        in_chunk = {k: since for k, since in burns.items() if since < hi}
        sql = logs_sql(lo, hi, {k: max(lo, since) for k, since in in_chunk.items()})
        statements.append(f"{ENDPOINT.format(ref=api.project_ref)} [{lo.isoformat()} .. {hi.isoformat()}] sql=\n{sql}")
        rows = api.logs_query(sql, lo, hi)
        if len(rows) != 1:
            raise MeasurementError(f"the logs query returned {len(rows)} rows, expected one aggregate row")
        row = rows[0]
        n = _int(row, "requests")
        requests += n
        errors += _int(row, "errors")
        if n and row.get("p95_ms") is not None:
            p95s.append(float(row["p95_ms"]))
        for k in in_chunk:
            burn_n[k] += _int(row, f"requests_{k}")
            burn_err[k] += _int(row, f"errors_{k}")
    allowed = requests * (1 - success_target / 100)
    doc = {
        "source": SOURCE,
        "window": {"from": start.isoformat(), "to": end.isoformat(), "queries": len(statements)},
        "paths": PATH_RE,
        "requests": requests,
        "errors": errors,
        "success_pct": round(100.0 * (requests - errors) / requests, 4) if requests else None,
        "p95_ms": max(p95s) if p95s else None,
        "p95_how": ("approx_quantiles over the window" if len(statements) == 1
                    else f"largest of {len(statements)} per-24h p95s (an upper bound)"),
        "error_budget": {"success": {
            "target_pct": success_target, "allowed_failures": round(allowed, 4), "failures": errors,
            "remaining_pct": (None if requests == 0 else (100 if errors == 0 else None) if allowed == 0
                              else round(100 * (1 - errors / allowed), 4))}},
        "burn_rates": {k: (round((burn_err[k] / burn_n[k]) / (1 - success_target / 100), 4)
                           if burn_n[k] and success_target < 100 else None) for k in burns},
    }
    return Measurement(doc, "\n;\n".join(statements), source=SOURCE)

"""What a measurement returns: a `Measurement` (the result with the query that actually ran), and the documents
the ops measurement functions return (extra keys are kept, missing keys are errors)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg import sql as _sql
from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def render(statement: str, params: Any = ()) -> str:
    """The statement with its parameters rendered as SQL literals (what psql would run to get the same answer).

    Rendering is for the evidence; the statement itself was executed with bound parameters."""
    if not params:
        return statement.replace("%%", "%")
    seq = iter(params) if not isinstance(params, dict) else None

    def lit(m: re.Match) -> str:
        if m.group(0) == "%%":
            return "%"
        value = params[m.group(1)] if m.group(1) else next(seq)
        return _sql.Literal(value).as_string(None)

    return _PLACEHOLDER.sub(lit, statement)


@dataclass(frozen=True)
class Measurement(Generic[T]):
    """One measurement: its result and exactly what produced it.

    - `statement` + `params`: the text executed and its bound parameters (for SQL), or the command / request
      made (for other sources, params empty);
    - `source`: "sql", "management-api", "supabase-cli", ...;
    - `query`: what a check records as evidence: the statement with its parameters rendered.
    """

    result: T
    statement: str
    params: tuple = ()
    source: str = "sql"

    @property
    def query(self) -> str:
        return render(self.statement, self.params) if self.source == "sql" else self.statement


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class SloSnapshot(_Doc):
    requests: int
    success_pct: float | None
    p50_ms: float | None = None
    p95_ms: float | None
    p99_ms: float | None = None
    probes: int
    uptime_pct: float | None
    dlq_depth: int
    error_budget: dict[str, Any] = {}
    burn_rates: dict[str, Any] = {}
    # migration 20261203001100: where the request figures came from and how exact the percentiles are
    source: str | None = None                 # rollup | rollup+raw | raw
    p95_error_bound_pct: float | None = None  # p50/p95/p99 are within +- this % of percentile_cont
    rollup_lag_s: float | None = None
    rollup_gaps: int | None = None


class OutboxLag(_Doc):
    events: int
    published: int
    unpublished: int
    p50_s: float | None
    p95_s: float | None
    avg_s: float | None
    max_s: float | None = None


class RollupStatus(_Doc):
    """ops.rollup_status(p_from, p_to): the rollup's watermark, lag and gaps for a window (migration 20261203001100)."""

    rolled_from: Any = None
    rolled_until: Any = None
    lag_s: float | None = None
    gaps: int
    gap_minutes: list[Any] = []
    dirty_minutes: int = 0
    oldest_dirty_age_s: float | None = None
    window_minutes: int = 0
    unrolled_minutes: int = 0
    last_run_at: Any = None
    last_run: dict[str, Any] | None = None
    p95_error_bound_pct: float | None = None


class AgentHealth(_Doc):
    tasks: int
    finished: int
    succeeded: int
    failed: int
    quarantined: int
    success_pct: float | None
    quarantine_pct: float | None
    peak_concurrency: int | None
    canary_tasks: int = 0


class DlqHealth(_Doc):
    replays: int
    items: int
    failed: int
    fail_pct: float | None
    refused: int = 0
    max_batch_items: int | None
    max_batch_bytes: int | None
    max_replays_per_tenant_day: int | None
    depth: int = 0


class TraceCoverage(_Doc):
    canary_tasks: int
    with_span: int
    missing: int
    coverage_pct: float | None
    sample_trace_ids: list[str] = []


class CiHealth(_Doc):
    events: int
    self_heal_triggers: int


class FlagState(_Doc):
    key: str
    value: Any
    base_value: Any
    overridden: bool
    override_owner: str | None = None
    override_reason: str | None = None
    override_expires_at: Any = None
    updated_at: Any = None
    updated_by: str | None = None


class AgentStalls(_Doc):
    unfinished: int
    stalled: int
    stall_after_s: float
    oldest_unfinished_s: float | None = None
    stalled_task_ids: list[int] = []


class StreamFreshnessDoc(_Doc):
    """One stream of ops.telemetry_freshness (see the migration for each key's meaning)."""

    rows: int
    oldest_at: Any = None
    newest_at: Any = None
    newest_age_s: float | None
    previous_at: Any = None
    max_gap_s: float | None
    max_gap_from: Any = None
    max_gap_to: Any = None
    covered_minutes: int
    coverage_pct: float | None
    covered_hours: int
    hour_coverage_pct: float | None


class TelemetryFreshness(_Doc):
    window: dict[str, Any] = {}
    window_s: float
    window_minutes: int
    window_hours: int
    streams: dict[str, StreamFreshnessDoc]

"""OpenTelemetry for the reference plane: real SDK spans, exported into `ops.spans` (the contract table).

The plane's components create spans with `opentelemetry-sdk` (a `TracerProvider` per process, set up by
`setup_tracing()`), and a `BatchSpanProcessor` hands finished spans to `OpsSpansExporter`, an SDK
`SpanExporter` that writes them into `ops.spans` — the table WCH-005 (trace coverage), ACC-001 and the
trace view (`opsproof.plane.trace_view`) read. A user's services can export the same way or via OTLP to
their own backend (then WCH-005 reads that backend's query API: `[traces] backend` in the policy).

Contract columns (supabase/migrations/20261125000100_ops_core.sql, `ops.spans`):
  trace_id (32 hex), span_id (16 hex), parent_span_id, name, flow, tenant_id, task_id, canary,
  attributes (jsonb), started_at, duration_ms.
Span attributes that fill the typed columns (and are not repeated in `attributes`):
  `opsproof.flow` -> flow, `tenant.id` -> tenant_id, `task.id` -> task_id, `task.canary` -> canary.
Everything else lands in `attributes`, plus `service.name`, `span.kind`, `status` ("ok" | "error" | "unset")
and, for spans with an exception event, `error`.

Tasks carry their trace id in `ops.agent_tasks.trace_id`; `task_context()` turns it (and a W3C
`traceparent` stored with the task, when the task came in through the ingest) into the parent context of
the worker's span, with the SDK's own propagator.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timezone

import psycopg
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from psycopg.types.json import Jsonb

log = logging.getLogger("opsproof.plane.otel")

TYPED = {"opsproof.flow": "flow", "tenant.id": "tenant_id", "task.id": "task_id", "task.canary": "canary"}
INSERT_SQL = """insert into ops.spans (trace_id, span_id, parent_span_id, name, flow, tenant_id, task_id, canary,
                                      attributes, started_at, duration_ms)
                values (%s, %s, %s, %s, %s, %s::uuid, %s::bigint, %s, %s, %s, %s)
                on conflict do nothing"""
_HEX32 = re.compile(r"[0-9a-f]{32}")


def span_row(span: ReadableSpan) -> tuple:
    """One finished SDK span -> the ops.spans row (column order of INSERT_SQL)."""
    ctx = span.get_span_context()
    attrs = dict(span.attributes or {})
    typed = {col: attrs.pop(key, None) for key, col in TYPED.items()}
    attrs["service.name"] = (span.resource.attributes.get("service.name") if span.resource else None)
    attrs["span.kind"] = span.kind.name.lower() if span.kind is not None else None
    code = span.status.status_code if span.status else StatusCode.UNSET
    attrs["status"] = {StatusCode.OK: "ok", StatusCode.ERROR: "error"}.get(code, "unset")
    if code == StatusCode.ERROR and span.status.description and "error" not in attrs:
        attrs["error"] = span.status.description
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"),
            format(span.parent.span_id, "016x") if span.parent is not None else None,
            span.name, typed["flow"], typed["tenant_id"],
            typed["task_id"], bool(typed["canary"]), Jsonb(attrs),
            datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc), (end_ns - start_ns) / 1e6)


class OpsSpansExporter(SpanExporter):
    """SDK SpanExporter -> ops.spans. One connection (autocommit), re-opened after an error; a failed batch is
    reported FAILURE to the processor (the SDK drops it; the gap shows in WCH-005 and TEL freshness)."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5, app: str = "opsproof-plane-spans") -> None:
        self.dsn, self.connect_timeout_s, self.app = dsn, connect_timeout_s, app
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._shut = False
        self.exported = 0
        self.failed = 0

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout_s,
                                         application_name=self.app)
        return self._conn

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut:
            return SpanExportResult.FAILURE
        rows = [span_row(s) for s in spans]
        if not rows:
            return SpanExportResult.SUCCESS
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(INSERT_SQL, rows)
                self.exported += len(rows)
                return SpanExportResult.SUCCESS
            except psycopg.Error as exc:
                self.failed += len(rows)
                log.warning("span export of %d span(s) failed: %s", len(rows), type(exc).__name__)
                self._close()
                return SpanExportResult.FAILURE

    def _close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except psycopg.Error:
            pass
        self._conn = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            self._close()


def setup_tracing(service: str, dsn: str, *, schedule_delay_ms: int = 200, exporter: SpanExporter | None = None,
                  set_global: bool = True) -> TracerProvider:
    """A TracerProvider for this process: resource service.name=<service>, BatchSpanProcessor -> ops.spans.
    Flushed and shut down at interpreter exit (and by `shutdown_tracing()`, which the components call on stop)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=TaskIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter or OpsSpansExporter(dsn, app=f"{service}-spans"),
                                                   schedule_delay_millis=schedule_delay_ms,
                                                   max_export_batch_size=512))
    if set_global:
        trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)
    return provider


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Flush what is queued, then stop the exporter (idempotent)."""
    if provider is not None:
        provider.force_flush(5000)
        provider.shutdown()


def is_trace_id(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX32.fullmatch(value)) and value != "0" * 32


class TaskIdGenerator(RandomIdGenerator):
    """Random ids, except that a root span started inside `with_trace_id(tid)` gets trace id `tid`: a task's
    span is the root of the task's own trace (ops.agent_tasks.trace_id) when nothing upstream started it."""

    def generate_trace_id(self) -> int:
        want = _WANT_TRACE_ID.get()
        return want if want else super().generate_trace_id()


_WANT_TRACE_ID: contextvars.ContextVar[int] = contextvars.ContextVar("opsproof_want_trace_id", default=0)


def task_context(trace_id: str | None, traceparent: str | None = None) -> tuple[Context, int]:
    """(parent context, trace id for a root span) of a task's span.

    - a W3C `traceparent` stored with the task (the ingest injects its server span's context): extracted with
      the SDK's propagator, so the task's span is a child of the request that created it, on its trace;
    - else an empty context (a root span) and the task's trace id, which `TaskIdGenerator` gives that root;
    - a task without a W3C trace id: a root span on a new trace (0 = let the SDK choose).
    """
    if traceparent:
        ctx = extract({"traceparent": traceparent})
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid and (trace_id is None or format(sc.trace_id, "032x") == trace_id):
            return ctx, 0
    return Context(), (int(trace_id, 16) if is_trace_id(trace_id) else 0)


def start_task_span(tracer: trace.Tracer, name: str, trace_id: str | None, traceparent: str | None = None,
                    *, kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None) -> trace.Span:
    """Start (not activate) a span on the task's trace: child of its traceparent, else the trace's root."""
    ctx, root_tid = task_context(trace_id, traceparent)
    token = _WANT_TRACE_ID.set(root_tid)
    try:
        return tracer.start_span(name, context=ctx, kind=kind,
                                 attributes={k: v for k, v in (attributes or {}).items() if v is not None})
    finally:
        _WANT_TRACE_ID.reset(token)


__all__ = ["OpsSpansExporter", "setup_tracing", "shutdown_tracing", "span_row", "task_context", "start_task_span",
           "is_trace_id", "TaskIdGenerator",
           "SpanKind", "StatusCode"]

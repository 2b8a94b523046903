"""Trace coverage from a real trace backend's query API (WCH-005 when the policy's `[traces] backend` is not
"contract"): for the canary tasks of the window (ops.agent_tasks, their trace ids), ask the backend which of their
traces it holds an `agent.task.execute` span for.

- Jaeger query API: `GET <query_url>/api/traces?service=<service>&operation=<operation>&tags={"task.canary":"true"}
  &start=<µs>&end=<µs>&limit=<n>` -> {"data": [{"traceID", "spans": [{"traceID", "spanID", "operationName",
  "tags": [{"key", "type", "value"}], ...}], "processes": {...}}], "total", "limit", "offset", "errors"}.
- Tempo search API: `GET <query_url>/api/search?tags=<logfmt: service.name=… name=… task.canary=true>&start=<s>
  &end=<s>&limit=<n>` -> {"traces": [{"traceID", "rootServiceName", "rootTraceName", "startTimeUnixNano",
  "durationMs", "spanSet"?}], "metrics": {...}}. Tempo drops a trace id's leading zeros: ids are compared
  zero-padded to 32 hex digits, lower case.

The result is the same document as ops.trace_coverage (canary_tasks, with_span, missing, coverage_pct,
sample_trace_ids, missing_task_ids), with `source` "jaeger" | "tempo" and the URL(s) asked as the query. A backend
that cannot answer (transport error, non-2xx, a body not in the documented shape) is a MeasurementError: never a
pass. Read-only: one SQL read of the contract and HTTP GETs.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from urllib.parse import urlencode

import httpx

from opsproof.measure._db import rows as _rows
from opsproof.measure.models import Measurement, TraceCoverage
from opsproof.recorder import MeasurementError

CANARY_TASKS_SQL = ("select id, trace_id from ops.agent_tasks "
                    "where canary and finished_at >= %s and finished_at < %s order by id")
MAX_LIMIT = 5000


def canary_tasks(db, start: datetime, end: datetime) -> Measurement[list[dict]]:
    """The window's finished canary tasks ({"id", "trace_id"}), as ops.trace_coverage counts them."""
    return Measurement(_rows(db, CANARY_TASKS_SQL, (start, end)), CANARY_TASKS_SQL, (start, end))


def norm_trace_id(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    v = value.strip().lower()
    if len(v) > 32 or any(c not in "0123456789abcdef" for c in v):
        return None
    return v.zfill(32)


def _epoch(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def jaeger_request(cfg, start: datetime, end: datetime, limit: int) -> str:
    params = {"service": cfg.service, "operation": cfg.operation, "tags": json.dumps({"task.canary": "true"}),
              "start": int(_epoch(start) * 1_000_000), "end": int(_epoch(end) * 1_000_000), "limit": limit}
    return cfg.query_url.rstrip("/") + "/api/traces?" + urlencode(params)


def tempo_request(cfg, start: datetime, end: datetime, limit: int) -> str:
    tags = f"service.name={cfg.service} name={cfg.operation} task.canary=true"
    params = {"tags": tags, "start": int(_epoch(start)), "end": int(_epoch(end)) + 1, "limit": limit}
    return cfg.query_url.rstrip("/") + "/api/search?" + urlencode(params)


def jaeger_trace_ids(body: object, operation: str) -> set[str]:
    """Trace ids of the response's traces that hold a span named `operation` (the documented /api/traces shape)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise MeasurementError("jaeger: /api/traces answered without a `data` list")
    if body.get("errors"):
        raise MeasurementError(f"jaeger: /api/traces reported errors: {str(body['errors'])[:200]}")
    out = set()
    for t in body["data"]:
        if not isinstance(t, dict):
            raise MeasurementError("jaeger: a trace in `data` is not an object")
        spans = t.get("spans") or []
        if any(isinstance(s, dict) and s.get("operationName") == operation for s in spans):
            tid = norm_trace_id(t.get("traceID"))
            if tid:
                out.add(tid)
    return out


def tempo_trace_ids(body: object) -> set[str]:
    """Trace ids of the documented /api/search answer (the search already matched the span name and tags)."""
    if not isinstance(body, dict) or not isinstance(body.get("traces", []), list):
        raise MeasurementError("tempo: /api/search answered without a `traces` list")
    out = set()
    for t in body.get("traces") or []:
        tid = norm_trace_id(t.get("traceID") if isinstance(t, dict) else None)
        if tid:
            out.add(tid)
    return out


def backend_coverage(db, cfg, start: datetime, end: datetime, *,
                     client: httpx.Client | None = None) -> Measurement[TraceCoverage]:
    """WCH-005 on a trace backend: which of the window's canary tasks have their trace in Jaeger/Tempo."""
    if cfg.backend not in ("jaeger", "tempo"):
        raise MeasurementError(f"traces backend {cfg.backend!r} has no query API to ask")
    tasks_m = canary_tasks(db, start, end)
    tasks = tasks_m.result
    limit = min(max(100, 2 * len(tasks)), MAX_LIMIT)
    url = (jaeger_request if cfg.backend == "jaeger" else tempo_request)(cfg, start, end, limit)
    headers = {"Accept": "application/json"}
    if cfg.token_env:
        token = os.environ.get(cfg.token_env)
        if not token:
            raise MeasurementError(f"{cfg.backend}: {cfg.token_env} (traces.token_env) is not set")
        headers["Authorization"] = f"Bearer {token}"
    own = client is None
    client = client or httpx.Client(timeout=cfg.timeout_s)
    try:
        resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise MeasurementError(f"{cfg.backend}: GET {url} failed: {type(exc).__name__}") from None
    finally:
        if own:
            client.close()
    if not resp.is_success:
        raise MeasurementError(f"{cfg.backend}: GET {url} answered HTTP {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        raise MeasurementError(f"{cfg.backend}: GET {url} answered a body that is not JSON") from None
    found = jaeger_trace_ids(body, cfg.operation) if cfg.backend == "jaeger" else tempo_trace_ids(body)
    covered = [t for t in tasks if norm_trace_id(t["trace_id"]) in found]
    missing = [t for t in tasks if norm_trace_id(t["trace_id"]) not in found]
    n = len(tasks)
    doc = TraceCoverage(canary_tasks=n, with_span=len(covered), missing=len(missing),
                        coverage_pct=round(100.0 * len(covered) / n, 4) if n else None,
                        sample_trace_ids=[t["trace_id"] for t in covered[:3]],
                        missing_task_ids=[t["id"] for t in missing[:10]], backend=cfg.backend, url=url,
                        backend_traces=len(found), truncated=len(found) >= limit)
    return Measurement(doc, f"{tasks_m.query}; GET {url}", (), cfg.backend)

"""OpenTelemetry in the reference plane: real SDK spans exported into ops.spans, W3C traceparent propagation from
an ingest request to the worker's agent.task.execute span, and trace links that open the trace view."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from plane_helpers import free_port, wait_for

from opsproof.envfile import read_env, write_env
from opsproof.plane import span_export
from opsproof.plane.ingest import signed_headers
from opsproof.plane.supervisor import Supervisor
from opsproof.plane.trace_view import render_html, tree_order

KEY = "k" * 64  # plane_env's N8N_SIGNING_KEY
TENANT = "11111111-1111-1111-1111-111111111111"


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _spans(db, trace_id: str) -> dict[str, dict]:
    rows = db.execute("""select span_id, parent_span_id, name, flow, tenant_id::text, task_id, canary, attributes,
                                duration_ms from ops.spans where trace_id = %s""", (trace_id,)).fetchall()
    keys = ("span_id", "parent_span_id", "name", "flow", "tenant_id", "task_id", "canary", "attributes", "duration_ms")
    return {r[2] + ("#" + r[0] if r[2] == "?" else ""): dict(zip(keys, r)) for r in rows}


def test_sdk_spans_are_exported_into_ops_spans_in_batches_and_flushed_on_shutdown(clean):
    db = clean
    exporter = span_export.OpsSpansExporter(db.info.dsn)
    # a long schedule delay: nothing is exported until shutdown flushes the batch
    provider = span_export.setup_tracing("opsproof-test", "", exporter=exporter, set_global=False,
                                         schedule_delay_ms=60_000)
    tracer = provider.get_tracer("test")
    task_id = db.execute("""insert into ops.agent_tasks (kind, status, canary, enqueued_at, started_at, finished_at,
                                                         trace_id, tenant_id)
                            values ('quote', 'succeeded', true, now(), now(), now(), %s, %s) returning id""",
                         ("ab" * 16, TENANT)).fetchone()[0]
    parent = span_export.start_task_span(tracer, "agent.task.execute", "ab" * 16, attributes={
        "task.id": task_id, "tenant.id": TENANT, "task.canary": True, "opsproof.flow": "canary", "kind": "quote"})
    child = tracer.start_span("db.work", context=otel_trace.set_span_in_context(parent), kind=SpanKind.CLIENT)
    child.end()
    parent.set_status(Status(StatusCode.OK))
    parent.end()
    assert db.execute("select count(*) from ops.spans").fetchone()[0] == 0, "batched: not exported yet"
    provider.shutdown()  # flushes the BatchSpanProcessor, then closes the exporter's connection
    spans = _spans(db, "ab" * 16)
    assert set(spans) == {"agent.task.execute", "db.work"}
    ex, work = spans["agent.task.execute"], spans["db.work"]
    sc = parent.get_span_context()
    assert ex["span_id"] == format(sc.span_id, "016x") and ex["parent_span_id"] is None  # the task trace's root
    assert work["parent_span_id"] == ex["span_id"] and work["task_id"] is None
    assert (ex["flow"], ex["tenant_id"], ex["task_id"], ex["canary"]) == ("canary", TENANT, task_id, True)
    assert ex["attributes"]["status"] == "ok" and ex["attributes"]["kind"] == "quote"
    assert ex["attributes"]["service.name"] == "opsproof-test" and "task.id" not in ex["attributes"]
    assert ex["duration_ms"] >= work["duration_ms"] >= 0
    assert exporter.exported == 2 and exporter.failed == 0
    # WCH-005's SQL function reads the exported row unchanged
    cov = db.execute("select ops.trace_coverage(now() - interval '1 hour', now() + interval '1 hour')").fetchone()[0]
    assert (cov["canary_tasks"], cov["with_span"], cov["sample_trace_ids"]) == (1, 1, ["ab" * 16])


def test_exporter_reports_failure_when_the_database_is_unreachable():
    exporter = span_export.OpsSpansExporter(f"postgresql://nobody@127.0.0.1:{free_port()}/x", connect_timeout_s=1)
    provider = span_export.setup_tracing("t", "", exporter=exporter, set_global=False)
    provider.get_tracer("t").start_span("x").end()
    provider.shutdown()
    assert exporter.failed == 1 and exporter.exported == 0


def test_traceparent_from_an_ingest_request_reaches_the_workers_execute_span(clean, spawn):
    db = clean
    port = free_port()
    spawn("ingest", OPSPROOF_INGEST_PORT=port)
    spawn("worker", OPSPROOF_PLANE_CYCLE_S="0.3")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ok(url + "/healthz"), what="ingest up")
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    body = json.dumps({"workflow": "otel", "task": {"kind": "notify", "canary": True, "tenant_id": TENANT}}).encode()
    headers = {**signed_headers(KEY, body, "otel-1"), "traceparent": f"00-{trace_id}-{caller_span}-01"}
    r = httpx.post(url + "/webhooks/n8n", content=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["trace_id"] == trace_id and r.headers["x-trace-id"] == trace_id
    assert r.headers["traceparent"].split("-")[1] == trace_id
    task_id = r.json()["task_id"]
    wait_for(lambda: db.execute("select status from ops.agent_tasks where id = %s", (task_id,)).fetchone()[0]
             == "succeeded", timeout=20, what="the ingested task to run")
    # the canary's span is in ops.spans before its status commits; the ingest's batch follows within ~200 ms
    assert db.execute("select trace_id from ops.spans where task_id = %s and name = 'agent.task.execute'",
                      (task_id,)).fetchall() == [(trace_id,)]
    spans = wait_for(lambda: (s := _spans(db, trace_id)) and "POST /webhooks/n8n" in s and s, what="ingest span")
    server, execute = spans["POST /webhooks/n8n"], spans["agent.task.execute"]
    assert server["parent_span_id"] == caller_span and server["attributes"]["span.kind"] == "server"
    assert server["attributes"]["http.response.status_code"] == 201
    assert execute["parent_span_id"] == server["span_id"], "the execute span is the ingest span's child"
    assert (execute["task_id"], execute["canary"], execute["tenant_id"], execute["flow"]) == (task_id, True, TENANT,
                                                                                              "canary")
    task_tp = db.execute("select payload->>'traceparent' from ops.agent_tasks where id = %s", (task_id,)).fetchone()[0]
    assert task_tp == f"00-{trace_id}-{server['span_id']}-01"
    # the task's outbox event carries the execute span's context onward
    ev = db.execute("select payload->>'traceparent' from ops.outbox where topic = 'task.notify'").fetchone()[0]
    assert ev == f"00-{trace_id}-{execute['span_id']}-01"


def test_tree_order_and_html_escape():
    from datetime import datetime, timedelta, timezone

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    spans = [{"span_id": "b", "parent_span_id": "a", "name": "<child>", "started_at": t + timedelta(milliseconds=1),
              "duration_ms": 1.0, "task_id": 7, "flow": "agent", "canary": False, "attributes": {"status": "error"}},
             {"span_id": "a", "parent_span_id": "remote", "name": "root", "started_at": t, "duration_ms": 3.0,
              "task_id": None, "flow": None, "canary": False, "attributes": {}}]
    ordered = tree_order(spans)
    assert [(s["span_id"], s["depth"]) for s in ordered] == [("a", 0), ("b", 1)]
    page = render_html("t1", ordered)
    assert "&lt;child&gt;" in page and "<child>" not in page and "http" not in page.split("<body>")[0]
    assert 'class="err"' in page


@pytest.fixture
def plane(plane_db, clean, tmp_path, monkeypatch):
    """The real supervisor (`plane up`) with the components this test needs."""
    for key in ("TRACE_LINK_TEMPLATE", "ALERT_WEBHOOK_URL", "OPSPROOF_PLANE_DIR", "OPSPROOF_STACK_ENV"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OPSPROOF_PLANE_CYCLE_S", "0.3")
    monkeypatch.setenv("MAX_RETRY_ATTEMPTS", "1")
    stack_env = tmp_path / "stack.env"
    write_env(stack_env, {"SUPABASE_DB_URL": plane_db.primary, "OPSPROOF_REPLICA_DB_URL": plane_db.replica,
                          "N8N_SIGNING_KEY": KEY})
    sup = Supervisor(tmp_path / "plane", stack_env)
    try:
        sup.up(log=lambda *_: None, wait_s=30, components=("sink", "trace_view", "worker"))
        yield sup
    finally:
        sup.down(log=lambda *_: None)


def test_the_trace_link_of_a_real_alert_opens_the_spans_of_its_trace(plane, clean):
    db = clean
    env = read_env(plane.env_file)
    view = env["OPSPROOF_TRACE_VIEW_URL"]
    assert env["TRACE_LINK_TEMPLATE"] == view + "/trace/{trace_id}"
    assert httpx.get(view + "/trace/" + "0" * 31 + "1").status_code == 404  # what `opsproof doctor` probes
    task_id = db.execute("insert into ops.agent_tasks (kind, payload, canary) values ('quote', '{\"force_error\": true}',"
                         " true) returning id").fetchone()[0]
    sink = env["OPSPROOF_SINK_URL"]
    got = wait_for(lambda: httpx.get(sink + "/received", params={"path": "/slack"}).json()["items"], timeout=20,
                   what="the quarantine alert at the sink")
    links = re.findall(r"<(http://[^|>]+)\|trace ([0-9a-f]{32})>", json.dumps(got[0]["body"]))
    assert links, got[0]["body"]
    link, trace_id = links[0]
    assert link == f"{view}/trace/{trace_id}"
    assert db.execute("select trace_id from ops.agent_tasks where id = %s", (task_id,)).fetchone()[0] == trace_id

    def spans():
        r = httpx.get(f"{view}/api/trace/{trace_id}")
        names = {s["name"] for s in r.json()["spans"]} if r.status_code == 200 else set()
        return r.json() if {"agent.task.execute", "alert.notify"} <= names else None

    doc = wait_for(spans, what="execute + alert spans in the trace view")
    by_name = {s["name"]: s for s in doc["spans"]}
    assert by_name["agent.task.execute"]["task_id"] == task_id
    assert by_name["agent.task.execute"]["attributes"]["status"] == "error"
    assert by_name["alert.notify"]["parent_span_id"] == by_name["agent.task.execute"]["span_id"]
    page = httpx.get(link)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "agent.task.execute" in page.text and "alert.notify" in page.text and "<script src" not in page.text

"""WCH-005 on a real trace backend (measure/traces.py) against recorded answers in the documented shapes of
Jaeger's query API (GET /api/traces) and Tempo's search API (GET /api/search), without a stack (respx)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from opsproof.measure import traces
from opsproof.policy import Policy, Traces
from opsproof.recorder import MeasurementError

START = datetime(2026, 12, 1, tzinfo=timezone.utc)
END = datetime(2026, 12, 2, tzinfo=timezone.utc)
T1, T2, T3 = "4bf92f3577b34da6a3ce929d0e0e4736", "00a1b2c3d4e5f60718293a4b5c6d7e8f", "1234567890abcdef1234567890abcdef"


class FakeDb:
    """What measure/_db.rows() calls on a Target: rows(statement, params)."""

    def __init__(self, tasks):
        self.tasks, self.calls = tasks, []

    def rows(self, statement, params):
        self.calls.append((statement, params))
        return self.tasks


TASKS = [{"id": 1, "trace_id": T1}, {"id": 2, "trace_id": T2}, {"id": 3, "trace_id": T3}]

# Jaeger /api/traces: {"data": [trace], "total", "limit", "offset", "errors"}; a trace has traceID, spans
# (traceID, spanID, operationName, references, startTime µs, duration µs, tags [{key, type, value}], processID)
# and processes {processID: {serviceName, tags}}.
JAEGER = {
    "data": [
        {"traceID": T1, "spans": [
            {"traceID": T1, "spanID": "00f067aa0ba902b7", "flags": 1, "operationName": "agent.task.execute",
             "references": [], "startTime": 1764547200000000, "duration": 4211,
             "tags": [{"key": "task.id", "type": "int64", "value": 1}, {"key": "task.canary", "type": "bool",
                                                                       "value": True}],
             "logs": [], "processID": "p1", "warnings": None}],
         "processes": {"p1": {"serviceName": "plane.worker", "tags": []}}, "warnings": None},
        # Jaeger may print a 128-bit id without its leading zeros
        {"traceID": T2.lstrip("0"), "spans": [
            {"traceID": T2.lstrip("0"), "spanID": "a1b2c3d4e5f60718", "operationName": "agent.task.execute",
             "references": [], "startTime": 1764547201000000, "duration": 900, "tags": [], "processID": "p1"}],
         "processes": {"p1": {"serviceName": "plane.worker", "tags": []}}, "warnings": None},
        # a trace without the operation does not count
        {"traceID": T3, "spans": [{"traceID": T3, "spanID": "1111111111111111", "operationName": "POST /webhooks/n8n",
                                   "references": [], "startTime": 1764547202000000, "duration": 50, "tags": [],
                                   "processID": "p1"}],
         "processes": {"p1": {"serviceName": "plane.worker", "tags": []}}, "warnings": None},
    ],
    "total": 0, "limit": 0, "offset": 0, "errors": None,
}

# Tempo /api/search: {"traces": [{traceID, rootServiceName, rootTraceName, startTimeUnixNano, durationMs,
# spanSet: {spans: [{spanID, startTimeUnixNano, durationNanos, attributes}], matched}}], "metrics": {...}}
TEMPO = {
    "traces": [
        {"traceID": T1, "rootServiceName": "plane.ingest", "rootTraceName": "POST /webhooks/n8n",
         "startTimeUnixNano": "1764547200000000000", "durationMs": 6,
         "spanSet": {"spans": [{"spanID": "00f067aa0ba902b7", "startTimeUnixNano": "1764547200001000000",
                                "durationNanos": "4211000",
                                "attributes": [{"key": "service.name", "value": {"stringValue": "plane.worker"}}]}],
                     "matched": 1}},
        {"traceID": T3, "rootServiceName": "plane.worker", "rootTraceName": "agent.task.execute",
         "startTimeUnixNano": "1764547202000000000", "durationMs": 1},
    ],
    "metrics": {"inspectedTraces": 3, "inspectedBytes": "1234", "completedJobs": 1, "totalJobs": 1},
}


def cfg(backend, **kw):
    return Traces(backend=backend, query_url="http://traces.example:16686/", **kw)


def test_jaeger_answer_counts_the_canaries_whose_trace_has_the_execute_span():
    db = FakeDb(TASKS)
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        route = router.get("http://traces.example:16686/api/traces").mock(return_value=httpx.Response(200, json=JAEGER))
        m = traces.backend_coverage(db, cfg("jaeger"), START, END)
    q = parse_qs(urlsplit(str(route.calls.last.request.url)).query)
    assert q["service"] == ["plane.worker"] and q["operation"] == ["agent.task.execute"]
    assert json.loads(q["tags"][0]) == {"task.canary": "true"}
    assert q["start"] == [str(int(START.timestamp() * 1e6))] and q["end"] == [str(int(END.timestamp() * 1e6))]
    tc = m.result
    assert (tc.canary_tasks, tc.with_span, tc.missing, tc.coverage_pct) == (3, 2, 1, 66.6667)
    assert tc.sample_trace_ids == [T1, T2] and tc.missing_task_ids == [3]
    assert m.source == "jaeger" and "GET http://traces.example:16686/api/traces?" in m.query
    assert "select id, trace_id from ops.agent_tasks" in m.query and "2026-12-01" in m.query
    assert db.calls[0][1] == (START, END)


def test_tempo_answer_pads_ids_and_sends_logfmt_tags_with_epoch_seconds():
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        route = router.get("http://traces.example:16686/api/search").mock(return_value=httpx.Response(200, json=TEMPO))
        m = traces.backend_coverage(FakeDb(TASKS[:2] + [{"id": 3, "trace_id": T3}]), cfg("tempo"), START, END)
    q = parse_qs(urlsplit(str(route.calls.last.request.url)).query)
    assert q["tags"] == ["service.name=plane.worker name=agent.task.execute task.canary=true"]
    assert q["start"] == [str(int(START.timestamp()))] and int(q["end"][0]) >= int(END.timestamp())
    tc = m.result
    assert (tc.with_span, tc.missing_task_ids, m.source) == (2, [2], "tempo")
    assert traces.norm_trace_id("7a1d2dd4deaf177e0acf55b3c49032") == "00" + "7a1d2dd4deaf177e0acf55b3c49032"


@pytest.mark.parametrize("answer", [
    httpx.Response(503, text="upstream down"),
    httpx.Response(200, text="<html>login</html>"),
    httpx.Response(200, json={"unexpected": []}),
    httpx.Response(200, json={"data": [], "errors": [{"code": 500, "msg": "storage"}]}),
])
def test_a_backend_that_cannot_answer_is_an_error_never_a_pass(answer):
    with respx.mock(assert_all_mocked=True) as router:
        router.get("http://traces.example:16686/api/traces").mock(return_value=answer)
        with pytest.raises(MeasurementError):
            traces.backend_coverage(FakeDb(TASKS), cfg("jaeger"), START, END)


def test_transport_error_and_missing_token_are_errors(monkeypatch):
    with respx.mock(assert_all_mocked=True) as router:
        router.get("http://traces.example:16686/api/search").mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(MeasurementError, match="ConnectError"):
            traces.backend_coverage(FakeDb(TASKS), cfg("tempo"), START, END)
    monkeypatch.delenv("OPSPROOF_TEST_TRACES_TOKEN", raising=False)
    with pytest.raises(MeasurementError, match="OPSPROOF_TEST_TRACES_TOKEN"):
        traces.backend_coverage(FakeDb(TASKS), cfg("tempo", token_env="OPSPROOF_TEST_TRACES_TOKEN"), START, END)


def test_bearer_token_is_sent_and_not_recorded(monkeypatch):
    monkeypatch.setenv("OPSPROOF_TEST_TRACES_TOKEN", "s3cret-token-value")
    with respx.mock(assert_all_called=True) as router:
        route = router.get("http://traces.example:16686/api/search").mock(return_value=httpx.Response(200, json=TEMPO))
        m = traces.backend_coverage(FakeDb(TASKS), cfg("tempo", token_env="OPSPROOF_TEST_TRACES_TOKEN"), START, END)
    assert route.calls.last.request.headers["authorization"] == "Bearer s3cret-token-value"
    assert "s3cret" not in m.query and "s3cret" not in json.dumps(m.result.model_dump(mode="json"))


def test_policy_traces_section():
    assert Policy().traces.backend == "contract"
    with pytest.raises(ValueError, match="query_url"):
        Policy.model_validate({"traces": {"backend": "tempo"}})
    with pytest.raises(ValueError, match="NAME"):
        Policy.model_validate({"traces": {"backend": "tempo", "query_url": "http://t:3200", "token_env": "abc def"}})
    p = Policy.model_validate({"traces": {"backend": "jaeger", "query_url": "https://jaeger.example/"}})
    assert p.traces.query_url == "https://jaeger.example/"

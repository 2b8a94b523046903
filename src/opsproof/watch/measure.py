"""One watch tick's measurements: the gate and watchlist controls, measured IN-PROCESS through the suite's own
measurement functions (opsproof.measure) and judged against the catalog's thresholds (controls.toml policy_key +
operator, the value read from the policy with catalog.policy_value, compared with the recorder's operators).
Nothing here holds a threshold: change opsproof.toml or controls.toml and the watch follows.

Each control becomes a results.json-shaped entry (id, title, area, severity, verdict, message, records), so the
health score (opsproof.health) reads a watch tick exactly as it reads a suite run. Fail closed as the checks do:
a control that cannot show its measurement is "error", never "pass".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from opsproof.catalog import Catalog, Control, policy_value
from opsproof.errors import OpsproofError
from opsproof.recorder import OPS, MeasurementError, same_json


def compare(measured: Any, op: str, threshold: Any) -> bool:
    """`measured <op> threshold` with the recorder's operators (the ones evidence.check uses)."""
    if op == "==":
        return same_json(measured, threshold)
    return bool(OPS[op][0](measured, threshold))


class Judge:
    """Records of one control, each judged against one of the control's catalog thresholds."""

    def __init__(self, control: Control, policy: Any):
        self.control, self.policy = control, policy
        self.records: list[dict] = []

    def threshold(self, policy_key: str) -> tuple[str, Any]:
        for t in self.control.thresholds:
            if t.policy_key == policy_key:
                return t.operator, policy_value(self.policy, policy_key)
        raise OpsproofError(f"{self.control.id}: controls.toml has no threshold {policy_key!r}")

    def check(self, name: str, measured: Any, policy_key: str | None, *, query: str, unit: str = "",
              limit: Callable[[Any], Any] | None = None, op: str | None = None, value: Any = None,
              detail: Any = None, source: str | None = None) -> bool:
        """Record `measured <op> value` where (op, value) are the catalog's threshold at policy_key (or op/value
        given for a control without a policy key, e.g. WCH-006); `limit` narrows the policy value (a configured
        budget below the policy's)."""
        if policy_key is not None:
            op, value = self.threshold(policy_key)
            if limit is not None:
                value = limit(value)
        if measured is None:
            raise MeasurementError(f"{name}: nothing measured (no data in the window?)")
        ok = compare(measured, op, value)
        rec = {"name": name, "measured": measured, "threshold": f"{op} {json.dumps(value) if isinstance(value, (bool, str)) else value}{unit}",
               "verdict": "pass" if ok else "fail", "query": query, "policy_key": policy_key, "unit": unit or None,
               "detail": detail}
        if source:
            rec["source"] = source
        self.records.append(rec)
        return ok


@dataclass
class Window:
    start: datetime
    end: datetime

    @property
    def args(self) -> tuple[datetime, datetime]:
        return self.start, self.end

    @property
    def label(self) -> str:
        s = (self.end - self.start).total_seconds()
        return f"{s / 3600:g}h" if s >= 3600 else f"{s / 60:g}m"


# -- one function per control: (judge, target, settings, policy, window) -> None (raises MeasurementError) ----

def _flags(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.effective_flags(target)
    for key, expected in sorted(policy.flags.items()):
        state = m.result.get(key)
        if state is None:
            raise MeasurementError(f"flag {key} is missing from ops.feature_flags")
        j.check(key, state.value, None, op="==", value=expected, query=m.query,
                detail={"overridden": state.overridden, "override_owner": state.override_owner,
                        "updated_by": state.updated_by})


BUDGET_KEYS = (("agent.concurrency", "budgets.agent_concurrency_max"), ("replay.batch_items", "budgets.replay_batch_items_max"),
               ("replay.max_bytes", "budgets.replay_max_bytes"), ("replay.fail_rate_pct", "budgets.replay_fail_rate_pct_max"))


def _configured(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.budgets(target)
    for key, pkey in BUDGET_KEYS:
        if key not in m.result:
            raise MeasurementError(f"budget {key} is missing from ops.budgets")
        j.check(key, m.result[key], pkey, query=m.query)


def _concurrency(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    b = ops.budgets(target).result
    m = ops.agent_health(target, *w.args)
    if not m.result.tasks > 0:
        raise MeasurementError(f"no agent tasks in the {w.label} window: cannot observe concurrency")
    j.check("peak concurrent agent tasks", m.result.peak_concurrency, "budgets.agent_concurrency_max", query=m.query,
            limit=lambda v: int(min(v, b.get("agent.concurrency", 1e12))))


def _replay_use(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    b = ops.budgets(target).result
    m = ops.dlq_health(target, *w.args)
    d = m.result
    if not d.replays > 0:
        raise MeasurementError(f"no DLQ replays in the {w.label} window: cannot observe replay use")
    for name, measured, key, pkey in (("largest replay batch (items)", d.max_batch_items, "replay.batch_items",
                                       "budgets.replay_batch_items_max"),
                                      ("largest replay batch (bytes)", d.max_batch_bytes, "replay.max_bytes",
                                       "budgets.replay_max_bytes"),
                                      ("replay fail rate", d.fail_pct, "replay.fail_rate_pct",
                                       "budgets.replay_fail_rate_pct_max")):
        j.check(name, measured, pkey, query=m.query, limit=lambda v, k=key: min(v, b.get(k, v)))


def slo_measurement(target, settings, policy, w: Window):
    from opsproof.measure import ops

    return ops.slo_snapshot(target, *w.args, policy.slo.success_pct_min, policy.slo.uptime_pct_min, burn_hours=[],
                            settle_s=policy.telemetry.settle_s)


def _traffic(target, settings, policy, w: Window, cache: dict):
    if policy.slo.source != "gateway":
        return cache["slo"]
    from opsproof.measure import gateway
    from opsproof.target.http import from_settings

    api = from_settings(settings)
    if api is None:
        raise MeasurementError('[slo] source = "gateway" needs SUPABASE_ACCESS_TOKEN and SUPABASE_PROJECT_REF')
    with api:
        return gateway.slo(api, *w.args, policy.slo.success_pct_min, burn_hours=[])


def _doc(m):
    from types import SimpleNamespace

    return SimpleNamespace(**m.result) if isinstance(m.result, dict) else m.result


def _uptime(j: Judge, target, settings, policy, w: Window, cache: dict) -> None:
    m = cache["slo"]
    s = m.result
    if not s.probes > 0:
        raise MeasurementError(f"no health probes in the {w.label} window")
    j.check("uptime (an unprobed minute is not up)", s.uptime_pct, "slo.uptime_pct_min", unit="%", query=m.query,
            detail={"window_minutes": s.window_minutes, "error_budget": s.error_budget.get("uptime")})


def _success(j: Judge, target, settings, policy, w: Window, cache: dict) -> None:
    m = _traffic(target, settings, policy, w, cache)
    s = _doc(m)
    if not s.requests > 0:
        raise MeasurementError(f"no requests in the {w.label} window ({m.source})")
    j.check("success", s.success_pct, "slo.success_pct_min", unit="%", query=m.query, source=m.source,
            detail={"error_budget": s.error_budget.get("success")})


def _p95(j: Judge, target, settings, policy, w: Window, cache: dict) -> None:
    m = _traffic(target, settings, policy, w, cache)
    s = _doc(m)
    if not s.requests > 0:
        raise MeasurementError(f"no requests in the {w.label} window ({m.source})")
    j.check("p95 latency", s.p95_ms, "slo.p95_ms_max", unit=" ms", query=m.query, source=m.source)


def _fresh(stream: str):
    def run(j: Judge, target, settings, policy, w: Window, cache: dict) -> None:
        from opsproof.measure import freshness

        if "fresh" not in cache:
            cache["fresh"] = freshness.telemetry_freshness(target, *w.args)
        m = cache["fresh"]
        findings = freshness.judge(m.result, stream, policy.telemetry.stream(stream))  # the checks' own judgement
        if not findings:
            raise MeasurementError(f"{stream}: the policy judges nothing")
        for f in findings:
            j.records.append({"name": f.name, "measured": f.measured, "threshold": f"{f.op} {f.threshold}{f.unit}",
                              "verdict": "pass" if f.ok else "fail", "query": m.query, "detail": None})
    return run


def _outbox(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.outbox_lag(target, *w.args)
    if not m.result.events > 0:
        raise MeasurementError(f"no outbox events in the {w.label} window")
    j.check("outbox lag p95", m.result.p95_s, "watchlist.outbox_lag_p95_s_max", unit=" s", query=m.query)
    j.check("outbox lag avg", m.result.avg_s, "watchlist.outbox_lag_avg_s_max", unit=" s", query=m.query)


def _agents(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.agent_health(target, *w.args)
    h = m.result
    if not h.finished > 0:
        raise MeasurementError(f"no finished agent tasks in the {w.label} window")
    j.check("agent success", h.success_pct, "watchlist.agent_success_pct_min", unit="%", query=m.query)
    j.check("agent quarantine", h.quarantine_pct, "watchlist.agent_quarantine_pct_max", unit="%", query=m.query)
    ms = ops.agent_stalls(target, *w.args, policy.watchlist.agent_stall_after_s)
    j.check(f"tasks queued/running > {policy.watchlist.agent_stall_after_s:g} s", ms.result.stalled,
            "watchlist.agent_stalled_max", query=ms.query)


def _dlq(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.dlq_health(target, *w.args)
    d = m.result
    if not d.replays > 0:
        raise MeasurementError(f"no DLQ replays in the {w.label} window")
    j.check("DLQ replay fail", d.fail_pct, "watchlist.dlq_replay_fail_pct_max", unit="%", query=m.query)
    j.check("replays per tenant per day (max)", d.max_replays_per_tenant_day, "watchlist.replays_per_tenant_day_max",
            query=m.query)


def _ci(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.ci_health(target, *w.args, policy.watchlist.ci_branch)
    if not m.result.events > 0:
        raise MeasurementError(f"no CI events on {policy.watchlist.ci_branch} in the {w.label} window")
    j.check("CI self-heal triggers", m.result.self_heal_triggers, "watchlist.ci_self_heal_triggers_max", query=m.query)


def _traces(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.trace_coverage(target, *w.args)
    if not m.result.canary_tasks > 0:
        raise MeasurementError(f"no canary agent tasks in the {w.label} window")
    j.check("canary trace coverage", m.result.coverage_pct, "watchlist.trace_coverage_pct_min", unit="%",
            query=m.query, detail={"sample_trace_ids": m.result.sample_trace_ids[:3]})


def _alerts(j: Judge, target, settings, policy, w: Window) -> None:
    from opsproof.measure import ops

    m = ops.active_alerts(target)
    total = ops.alerts_ever_raised(target)
    if not total.result > 0:
        raise MeasurementError(f"ops.alerts has never been written ({total.query}): a zero would prove nothing")
    serious = [r for r in m.result if r["severity"] in ("critical", "high")]
    j.check("active critical/high alerts", len(serious), None, op="==", value=0, query=m.query,
            detail=[{"id": r["id"], "title": r["title"], "trace_id": r["trace_id"]} for r in serious])


def _resources(which: str, pkey: str):
    def run(j: Judge, target, settings, policy, w: Window, cache: dict) -> None:
        from opsproof.measure import resources

        if "resources" not in cache:
            cache["resources"] = resources.measure(target, settings, policy.resources.disk_budget_bytes)
        m = cache["resources"]
        part = m.result.get(which)
        if part is None or part.get("used_pct") is None:
            raise MeasurementError(f"the {m.source} answer holds no {which} figures")
        j.check(f"{which} used", part["used_pct"], pkey, unit="%", query=m.query, source=m.source, detail=part)
    return run


# control id -> (function, takes the shared cache). The watch measures exactly these (gate + watchlist).
PROBES: dict[str, tuple[Callable, bool]] = {
    "FLG-001": (_flags, False), "BUD-001": (_configured, False), "BUD-002": (_concurrency, False),
    "BUD-003": (_replay_use, False), "SLO-001": (_uptime, True), "SLO-002": (_success, True), "SLO-003": (_p95, True),
    "TEL-001": (_fresh("health_probes"), True), "TEL-002": (_fresh("requests"), True),
    "WCH-001": (_outbox, False), "WCH-002": (_agents, False), "WCH-003": (_dlq, False), "WCH-004": (_ci, False),
    "WCH-005": (_traces, False), "WCH-006": (_alerts, False),
    "RES-001": (_resources("disk", "resources.disk_used_pct_max"), True),
    "RES-002": (_resources("connections", "resources.connections_used_pct_max"), True),
}


def watched_ids(catalog: Catalog) -> list[str]:
    """The gate and watchlist controls of the catalog the watch can measure (a catalog control of either kind
    with no probe here is reported as an error entry, never silently left out)."""
    return sorted(c.id for c in catalog.controls.values()
                  if c.kind == "check" and ("gate" in c.suites or c.area == "watchlist"))


def measure_controls(target, settings, policy, catalog: Catalog, end: datetime) -> list[dict]:
    """One entry per watched control, measured over the watch windows ending at `end`."""
    short = Window(end - timedelta(seconds=policy.watch.window_s), end)
    long = Window(end - timedelta(seconds=policy.watch.long_window_s), end)
    caches: dict[int, dict] = {id(short): {}, id(long): {}}
    entries = []
    for cid in watched_ids(catalog):
        c = catalog.get(cid)
        w = long if cid in policy.watch.long_window_controls else short
        cache = caches[id(w)]
        j = Judge(c, policy)
        t0 = time.monotonic()
        verdict, message = "pass", ""
        try:
            probe = PROBES.get(cid)
            if probe is None:
                raise MeasurementError(f"the watch has no measurement for {cid}")
            fn, shared = probe
            if shared and "slo" not in cache and cid.startswith("SLO"):
                cache["slo"] = slo_measurement(target, settings, policy, w)
            fn(j, target, settings, policy, w, cache) if shared else fn(j, target, settings, policy, w)
            bad = [r for r in j.records if r["verdict"] == "fail"]
            if not j.records:
                raise MeasurementError(f"{cid}: nothing recorded")
            if bad:
                verdict = "fail"
                message = "; ".join(f"{r['name']}: measured {r['measured']}, required {r['threshold']}" for r in bad)
        except (OpsproofError, MeasurementError) as exc:
            verdict, message = "error", str(exc)
        except Exception as exc:  # a crash measuring is an error, never a pass
            verdict, message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        entries.append({"id": cid, "title": c.title, "area": c.area, "severity": c.severity, "verdict": verdict,
                        "message": message, "records": j.records, "window": w.label,
                        "duration_s": round(time.monotonic() - t0, 3)})
    return entries

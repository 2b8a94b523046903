"""The health score, 0-100: one documented formula over a run's (or a watch tick's) control entries and the
open incidents, with its weights and caps in the policy ([health] in opsproof.toml). docs/operations.md
"Health score" explains it; the lead writes it into results.json, the watch into every posture sample.

    score = min(caps, round(sum(w_c * component_c) / sum(w_c)))   over the components that have entries

components (each 0-100):
  slo         mean over the SLO controls (area "slo") of the error budget remaining (0..100, from the record's
              detail.error_budget.remaining_pct); a control without a budget (p95) scores 100 on pass, 0 on fail;
              an error / skipped / not-run SLO control scores 0 (no measurement is no budget)
  watchlist   severity-weighted share of watchlist controls (area "watchlist") that pass (waived = half)
  compliance  the same over every other control (flags, budgets, security, cadence, telemetry, code, drills,
              acceptance)
  incidents   100 - incident_penalty x open incidents (never below 0)

caps (the lowest applies): a critical control failing or unmeasured -> critical_cap (49); any control that
cannot show its measurement -> error_cap (69); any other failing control -> failing_cap (89); an open incident
-> open_incident_cap (79); no entry at all -> 0. A GREEN-looking 92 with the kill switch engaged cannot happen:
the kill switch is FLG-001, a critical control.
"""

from __future__ import annotations

from typing import Any

FORMULA = ("score = min(caps, round(sum(weight*component)/sum(weight))); slo = mean error budget remaining of the "
           "SLO controls (no budget: pass 100, fail 0; unmeasured 0); watchlist, compliance = severity-weighted "
           "share passing (waived 1/2); incidents = 100 - penalty*open; caps: critical fail/error, any error, any "
           "fail, open incident")

CREDIT = {"pass": 1.0, "waived": 0.5}
UNMEASURED = frozenset({"error", "skipped", "interrupted", "not_run", "unknown"})
COMPLIANCE_AREAS = ("flags", "budgets", "security", "cadence", "telemetry", "code", "drill", "acceptance")


def _health_policy(policy: Any):
    from opsproof.policy import Health

    if policy is None:
        return Health()
    return getattr(policy, "health", policy) if not isinstance(policy, Health) else policy


def _budget_remaining(entry: dict) -> float | None:
    """The smallest error budget remaining (percent) any record of the entry shows, or None."""
    found = []
    for rec in entry.get("records") or []:
        detail = rec.get("detail")
        if isinstance(detail, dict) and isinstance(detail.get("error_budget"), dict):
            rem = detail["error_budget"].get("remaining_pct")
            if isinstance(rem, (int, float)):
                found.append(float(rem))
    return min(found) if found else None


def _slo(entries: list[dict]) -> tuple[float, str]:
    parts, why = [], []
    for e in entries:
        v = e.get("verdict")
        if v in UNMEASURED:
            s = 0.0
            why.append(f"{e.get('id')} {v}: 0")
        else:
            rem = _budget_remaining(e)
            if rem is not None:
                s = max(0.0, min(100.0, rem))
                if v == "waived":
                    s = min(s, 50.0)
                why.append(f"{e.get('id')} budget left {rem:g}%")
            else:
                s = 100.0 * CREDIT.get(v, 0.0)
                why.append(f"{e.get('id')} {v}: {s:g}")
        parts.append(s)
    return sum(parts) / len(parts), "; ".join(why)


def _share(entries: list[dict], sev_w: dict) -> tuple[float, str]:
    total = got = 0.0
    bad = []
    for e in entries:
        w = float(sev_w.get(e.get("severity"), 1.0))
        c = CREDIT.get(e.get("verdict"), 0.0)
        total += w
        got += w * c
        if c < 1:
            bad.append(f"{e.get('id')} {e.get('verdict')}")
    score = 100.0 * got / total if total else 100.0
    passing = sum(1 for e in entries if e.get("verdict") == "pass")
    why = f"{passing}/{len(entries)} pass" + (f"; not green: {', '.join(bad[:8])}" if bad else "")
    return score, why


def score(entries: list[dict], policy: Any = None, *, open_incidents: list[dict] | int | None = 0) -> dict:
    """The health score of `entries` (results.json control entries: id, area, severity, verdict, records...)
    -> {"score": int, "components": {name: {"score", "weight", "why"}}, "caps": [...], "formula": str}.
    `policy` is a Policy (its [health]), a Health model, or None for the defaults; `open_incidents=None` means they
    could not be read (no credit, capped like an error -- never counted as none)."""
    hp = _health_policy(policy)
    entries = [e for e in entries if e.get("id") or e.get("area")]
    unknown_incidents = open_incidents is None  # could not be read: no credit, and the score is capped
    n_open = 0 if unknown_incidents else open_incidents if isinstance(open_incidents, int) else len(open_incidents)
    groups: dict[str, list[dict]] = {"slo": [], "watchlist": [], "compliance": []}
    for e in entries:
        area = e.get("area")
        groups["slo" if area == "slo" else "watchlist" if area == "watchlist" else "compliance"].append(e)

    components: dict[str, dict] = {}
    for name in ("slo", "watchlist", "compliance"):
        w = float(hp.weights.get(name, 0.0))
        if not groups[name]:
            components[name] = {"score": None, "weight": w, "why": "no control of this component measured"}
            continue
        s, why = _slo(groups[name]) if name == "slo" else _share(groups[name], hp.severity_weights)
        components[name] = {"score": round(s, 1), "weight": w, "why": why}
    inc = 0.0 if unknown_incidents else max(0.0, 100.0 - hp.incident_penalty * n_open)
    components["incidents"] = {"score": round(inc, 1), "weight": float(hp.weights.get("incidents", 0.0)),
                               "why": "open incidents could not be read" if unknown_incidents
                               else f"{n_open} open incident(s)"}

    counted = [c for c in components.values() if c["score"] is not None and c["weight"] > 0]
    wsum = sum(c["weight"] for c in counted)
    raw = sum(c["weight"] * c["score"] for c in counted) / wsum if wsum else 0.0

    caps: list[dict] = []
    if not entries:
        caps.append({"cap": 0, "why": "no control measured: nothing shows the posture"})
    crit = [e.get("id") for e in entries if e.get("severity") == "critical"
            and (e.get("verdict") == "fail" or e.get("verdict") in UNMEASURED)]
    if crit:
        caps.append({"cap": hp.critical_cap, "why": "critical control(s) failing or unmeasured", "controls": crit})
    errs = [e.get("id") for e in entries if e.get("verdict") in UNMEASURED]
    if errs:
        caps.append({"cap": hp.error_cap, "why": "control(s) that cannot show their measurement", "controls": errs})
    fails = [e.get("id") for e in entries if e.get("verdict") == "fail"]
    if fails:
        caps.append({"cap": hp.failing_cap, "why": "failing control(s)", "controls": fails})
    if n_open:
        caps.append({"cap": hp.open_incident_cap, "why": f"{n_open} open incident(s)"})
    if unknown_incidents:
        caps.append({"cap": hp.error_cap, "why": "open incidents could not be read"})
    final = min([round(raw)] + [c["cap"] for c in caps])
    return {"score": int(max(0, min(100, final))), "raw": round(raw, 1), "components": components, "caps": caps,
            "formula": FORMULA}

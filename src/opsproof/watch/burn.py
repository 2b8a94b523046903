"""Multi-window multi-burn-rate alerting on the success SLO's error budget (the SRE workbook, Sloth, Pyrra).

burn rate over a window = (failed requests / requests) / (1 - SLO target): 1 spends the budget exactly over the
SLO period, 14.4 spends 2 % of a 30-day budget in one hour. A rule fires when the burn rate over BOTH its long
window (significance) and its short window (still burning now, so it resets fast) is >= its factor; a page rule
(14.4x over 1 h, 5 min) catches a fast burn within minutes, a ticket rule (6x over 6 h, 30 min) a slow one, and a
slow burn never pages. Windows and factors: [watch.burn_rules] in opsproof.toml.

The numbers come from the suite's own measurement, ops.slo_snapshot (measure/ops.py), called once per distinct
window ending at the tick: burn = its error_budget.success.failures / allowed_failures (the SQL's own budget).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable


def burn_from_budget(budget: dict | None) -> float | None:
    """failures / allowed failures of an ops.slo_snapshot error_budget entry (None: no traffic, nothing shown)."""
    if not budget:
        return None
    allowed, failures = budget.get("allowed_failures"), budget.get("failures")
    if allowed is None or failures is None:
        return None
    allowed, failures = float(allowed), float(failures)
    if allowed <= 0:
        return None if failures == 0 and allowed == 0 else (float("inf") if failures > 0 else 0.0)
    return round(failures / allowed, 4)


def burn_rate(failed: float, total: float, target_pct: float) -> float | None:
    """The same rate from counts (for the unit tests and the docs)."""
    if total <= 0 or target_pct >= 100:
        return None
    return round((failed / total) / (1 - target_pct / 100.0), 4)


def evaluate(rules: dict[str, Any], rates: dict[int, float | None]) -> dict[str, dict]:
    """{rule: {"firing", "factor", "long_s", "short_s", "long_burn", "short_burn", "severity", "why"}} from
    `rates` (window seconds -> burn rate, None = no traffic in that window: the rule cannot fire on it)."""
    out = {}
    for name, r in rules.items():
        lb, sb = rates.get(r.long_s), rates.get(r.short_s)
        firing = lb is not None and sb is not None and lb >= r.factor and sb >= r.factor
        if lb is None or sb is None:
            why = "no requests in a window: no burn rate"
        else:
            why = (f"burn {lb:g}x over {_label(r.long_s)} and {sb:g}x over {_label(r.short_s)} "
                   f"{'>=' if firing else 'vs'} {r.factor:g}x")
        out[name] = {"firing": firing, "factor": r.factor, "long_s": r.long_s, "short_s": r.short_s,
                     "long_burn": lb, "short_burn": sb, "severity": r.severity, "why": why}
    return out


def _label(s: int) -> str:
    return f"{s / 3600:g}h" if s >= 3600 and s % 3600 == 0 else f"{s / 60:g}m"


def windows(rules: dict[str, Any]) -> list[int]:
    return sorted({w for r in rules.values() for w in (r.long_s, r.short_s)})


def measure_rates(snapshot: Callable[[datetime, datetime], Any], rules: dict[str, Any], end: datetime
                  ) -> tuple[dict[int, float | None], dict[int, str]]:
    """Burn rate per window second count, from `snapshot(start, end)` -> a Measurement of ops.slo_snapshot;
    also the query of each (for the sample)."""
    rates: dict[int, float | None] = {}
    queries: dict[int, str] = {}
    for w in windows(rules):
        m = snapshot(end - timedelta(seconds=w), end)
        rates[w] = burn_from_budget((m.result.error_budget or {}).get("success"))
        queries[w] = m.query
    return rates, queries

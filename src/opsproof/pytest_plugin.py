"""The opsproof pytest plugin: markers (strict), options, control metadata, evidence hooks."""

from __future__ import annotations

MARKERS = {
    "daily": "daily guardrail/SLO/security controls (cron)",
    "gate": "the CI deploy gate subset (flags, budgets, SLO gates)",
    "drill": "weekly resilience drills (change the live system on purpose, restore it)",
    "acceptance": "done-done acceptance steps",
    "monthly": "monthly cadence controls",
    "flags": "area: guardrail feature flags",
    "budgets": "area: budgets",
    "slo": "area: SLO gates",
    "watchlist": "area: watchlist",
    "security": "area: security",
    "cadence": "area: operational cadence",
    "control(id, title, severity, frameworks)": "control metadata of a check",
}


def pytest_configure(config):
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")

"""How a component reads the guardrail flags and budgets: the one interpretation of ops.effective_flags shared by
the reference plane (which obeys it) and the incident levers (which verify the plane obeyed it)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Flags:
    emergency_stop: bool
    autonomous_enabled: bool
    mode: str
    otel_enabled: bool
    replay_enabled: bool
    relay_enabled: bool

    @property
    def agents_may_claim(self) -> bool:
        return not self.emergency_stop and self.autonomous_enabled


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "on", "yes")
    return bool(v)


def read_flags(conn: psycopg.Connection) -> Flags:
    """The ONE way a flag is read: ops.effective_flags (leased overrides included, expired ones ignored).
    A missing flag reads as its fail-safe value (stop on, features off)."""
    return flags_from(dict(conn.execute("select key, value from ops.effective_flags").fetchall()))


def flags_from(rows: dict) -> Flags:
    """The interpretation of the effective flags' {key: value} (missing = fail-safe), for a caller that read them."""
    return Flags(
        emergency_stop=_truthy(rows.get("autonomy.emergencyStop", True)),
        autonomous_enabled=_truthy(rows.get("agents.autonomousEnabled", False)),
        mode=str(rows.get("autonomy.mode", "SAFE")).upper(),
        otel_enabled=_truthy(rows.get("obs.otelEnabled", True)),
        replay_enabled=_truthy(rows.get("dlq.replayEnabled", False)),
        relay_enabled=_truthy(rows.get("outbox.relayEnabled", False)),
    )


def read_budget(conn: psycopg.Connection, key: str, default: float) -> float:
    row = conn.execute("select value from ops.budgets where key = %s", (key,)).fetchone()
    return float(row[0]) if row else default

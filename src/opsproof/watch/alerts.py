"""Alert state of the watch: one Slack-format message per breach, deduplicated while the breach lasts, escalated
by the incident levels' timeouts (levers/incident_plan.py TIMEOUT_S: critical 30 s, high 60 s, medium 300 s,
low 900 s -- unanswered for its level's timeout, a breach is re-sent one level higher, up to critical), and one
recovery message when it clears. The state lives in a JSON file in the state dir, so a restarted watch neither
re-pages an open breach nor forgets to send its recovery.

Pure but for the file: time comes from opsproof.clock (freezegun in the tests); posting is the caller's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opsproof import clock
from opsproof.alerting import slack_payload
from opsproof.levers.incident_plan import LEVELS, TIMEOUT_S

SOURCE = "opsproof.watch"


@dataclass
class Breach:
    key: str                      # control id, or "burn:<rule>"
    severity: str                 # critical | high | medium | low
    title: str
    measured: Any = None
    required: Any = None
    message: str = ""
    trace_id: str | None = None
    control: str | None = None


def _up(level: str) -> str | None:
    i = LEVELS.index(level)
    return LEVELS[i - 1] if i > 0 else None


@dataclass
class AlertState:
    path: Path
    open: dict[str, dict] = field(default_factory=dict)     # key -> {severity, level, opened_at, last_sent_at, ...}
    actions: dict[str, dict] = field(default_factory=dict)  # key -> {incident_id, action, at, clean_ticks, status}

    @classmethod
    def load(cls, path: Path) -> "AlertState":
        try:
            doc = json.loads(Path(path).read_text())
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError):
            doc = {}  # a torn file: start clean rather than crash the service (the breaches re-open)
        return cls(Path(path), doc.get("open", {}), doc.get("actions", {}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"open": self.open, "actions": self.actions}, indent=1, default=str))
        os.replace(tmp, self.path)

    def update(self, breaches: list[Breach], *, target: str, trace_link_template: str,
               timeouts: dict[str, float] | None = None, now: datetime | None = None) -> list[dict]:
        """The messages this tick sends: {"kind": breach|escalation|recovery, "key", "severity", "payload"}.
        A breach already open sends nothing unless its level's timeout ran out (escalation)."""
        timeouts = timeouts or TIMEOUT_S
        now = now or clock.now()
        out: list[dict] = []
        current = {b.key: b for b in breaches}
        for key, b in current.items():
            st = self.open.get(key)
            if st is None:
                self.open[key] = {"severity": b.severity, "level": b.severity, "opened_at": now.isoformat(),
                                  "last_sent_at": now.isoformat(), "escalations": 0, "title": b.title}
                out.append(self._message("breach", b, b.severity, target, trace_link_template, timeouts))
                continue
            st["title"] = b.title
            waited = (now - datetime.fromisoformat(st["last_sent_at"])).total_seconds()
            nxt = _up(st["level"])
            if nxt is not None and waited >= timeouts[st["level"]]:
                st["level"], st["last_sent_at"] = nxt, now.isoformat()
                st["escalations"] += 1
                out.append(self._message("escalation", b, nxt, target, trace_link_template, timeouts,
                                         opened_at=st["opened_at"]))
        for key in [k for k in self.open if k not in current]:
            st = self.open.pop(key)
            b = Breach(key=key, severity=st["severity"], title=st.get("title", key), control=key)
            out.append(self._message("recovery", b, st["severity"], target, trace_link_template, timeouts,
                                     opened_at=st["opened_at"], now=now))
        return out

    @staticmethod
    def _message(kind: str, b: Breach, level: str, target: str, tmpl: str, timeouts: dict, *,
                 opened_at: str | None = None, now: datetime | None = None) -> dict:
        if kind == "recovery":
            title = f"RECOVERED {b.key}: {b.title}"
            detail = {"target": target, "breach opened": opened_at, "recovered": (now or clock.now()).isoformat()}
            severity = "info"
        else:
            title = f"{'ESCALATED ' if kind == 'escalation' else ''}{b.key}: {b.title}"
            detail = {"target": target, "measured": b.measured, "required": b.required,
                      "escalates after": f"{timeouts[level]:.0f}s" if _up(level) else "top level"}
            if opened_at:
                detail["open since"] = opened_at
            if b.message:
                detail["finding"] = b.message[:300]
            severity = level
        payload = slack_payload(title, severity=severity, source=SOURCE, detail=detail, trace_id=b.trace_id,
                                trace_link_template=tmpl)
        payload["opsproof"] = {"kind": kind, "key": b.key, "level": level, "target": target}
        return {"kind": kind, "key": b.key, "severity": level, "title": title, "payload": payload,
                "trace_link": tmpl.format(trace_id=b.trace_id) if b.trace_id else None}

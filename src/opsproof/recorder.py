"""What a check measured: one record per control, carried on the test report (works across xdist workers)."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from typing import Any

from opsproof.errors import OpsproofError

RECORD_KEY = "opsproof_record"
ARTIFACT_KEY = "opsproof_artifact"
CONTROL_KEY = "opsproof_control"

OPS = {
    "<": (operator.lt, "<"), "<=": (operator.le, "<="), ">": (operator.gt, ">"), ">=": (operator.ge, ">="),
    "==": (operator.eq, "=="),
}


def same_json(actual: Any, expected: Any) -> bool:
    """Equal as JSON values *and* types: 0 is not false, 1.0 is not true, "true" is not true (FLG-001's equality,
    used by the check and by the watch)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


class MeasurementError(OpsproofError):
    """A check could not measure (target down, table missing, no data): an ERROR, never a pass."""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@dataclass
class Recorder:
    """Handed to a check as the `evidence` fixture; writes into the pytest item's user_properties."""

    item: Any
    records: list[dict] = field(default_factory=list)

    def _push(self, key: str, payload: dict) -> None:
        self.item.user_properties.append((key, _jsonable(payload)))

    def record(self, *, name: str, measured: Any, threshold: Any, verdict: bool, query: str = "",
               detail: Any = None, source: str | None = None) -> dict:
        rec = {"name": name, "measured": measured, "threshold": threshold,
               "verdict": "pass" if verdict else "fail", "query": query, "detail": detail}
        if source:
            rec["source"] = source  # where the measurement came from (sql, management-api:logs, metrics-api, ...)
        self.records.append(rec)
        self._push(RECORD_KEY, rec)
        _allure_parameter(name, measured, threshold)
        return rec

    def check(self, name: str, measured: Any, op: str, threshold: Any, *, query: str = "",
              detail: Any = None, unit: str = "", source: str | None = None) -> None:
        """Record and assert `measured <op> threshold`; the failure message says what, measured, threshold."""
        if measured is None:
            raise MeasurementError(f"{name}: nothing measured (no data in the window?)")
        fn, sym = OPS[op]
        ok = bool(fn(measured, threshold))
        self.record(name=name, measured=measured, threshold=f"{sym} {threshold}{unit}", verdict=ok,
                    query=query, detail=detail, source=source)
        if not ok:
            raise AssertionError(f"{name}: measured {measured}{unit}, required {sym} {threshold}{unit}")

    def artifact(self, name: str, content: Any) -> None:
        """A file for the evidence pack (json for dict/list, text otherwise)."""
        self._push(ARTIFACT_KEY, {"name": name, "content": content})

    def require(self, condition: bool, message: str) -> None:
        """Fail closed: a zero that cannot be shown to mean something is an error."""
        if not condition:
            raise MeasurementError(message)


def _allure_parameter(name: str, measured: Any, threshold: Any) -> None:
    try:
        import allure

        allure.dynamic.parameter(f"{name} measured", str(measured))
        allure.dynamic.parameter(f"{name} threshold", str(threshold))
    except Exception:  # allure not active: nothing to add
        pass

"""The one clock. Everything asks here for 'now' so tests can freeze it (freezegun)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from opsproof.errors import UsageError


def now() -> datetime:
    return datetime.now(timezone.utc)


def today() -> date:
    return now().date()


def parse_window(text: str) -> timedelta:
    """'24h', '6h', '90m', '7d' -> timedelta; anything else is a usage error."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text or "")
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"bad --window {text!r}: use e.g. 24h, 6h, 90m, 7d")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


def parse_date(text: str | None) -> date:
    if not text:
        return today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad --date {text!r}: use YYYY-MM-DD") from None


def wait_until(pred, timeout: float, every: float = 0.1):
    """Poll `pred` until it returns something truthy or `timeout` seconds pass; returns its last value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    return pred()

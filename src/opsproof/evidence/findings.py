"""What an auditor reads about one control: values rounded with their units, and the FINDING of a red control
(measured, required, policy key, window, the query that ran, remediation) -- never a Python repr or a traceback.

Used by the HTML/Allure reporters (evidence/reports.py) and the compliance report (evidence/compliance.py).
"""

from __future__ import annotations

import json
import math
import re
from html import escape
from typing import Any

# a recorder threshold: "<= 2500.0 ms", ">= 99.95%", "== true", "< 5.0 s", "<= 26.0 h", "<= 90 d"
_THRESHOLD = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([A-Za-z%]*)\s*$")
_OPS = {"<=": "≤", ">=": "≥", "==": "=", "!=": "≠", "<": "<", ">": ">"}
UNITS = ("ms", "%", "s", "h", "d", "MB", "B")


def _default_digits(value: float) -> int:
    mag = abs(value)
    return 0 if mag >= 100 or float(value).is_integer() else 1 if mag >= 10 else 2 if mag >= 1 else 3


def _number(value: float, unit: str = "", digits: int | None = None) -> str:
    """2499.99999 -> '2500', 99.5988 -> '99.6', 0.8538096 -> '0.854', 2097152 B -> '2 MB'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if unit == "B" or unit == "bytes":
        mb = value / (1024 * 1024)
        return f"{_number(mb)} MB" if mb >= 0.1 else f"{int(value)} B"
    if isinstance(value, int):
        text = f"{value:d}"
    elif not math.isfinite(value):
        text = str(value)
    else:
        digits = _default_digits(value) if digits is None else digits
        text = f"{round(value, digits):.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
    if not unit:
        return text
    return f"{text}%" if unit == "%" else f"{text} {unit}"


def unit_of(record: dict) -> str:
    """The record's unit: its own `unit`, else the one its threshold names, else one its name implies."""
    unit = (record.get("unit") or "").strip()
    if unit:
        return unit
    m = _THRESHOLD.match(str(record.get("threshold") or ""))
    if m and m.group(3):
        return m.group(3)
    name = str(record.get("name") or "").lower()
    if "bytes" in name or name.endswith("_bytes"):
        return "B"
    if name.endswith(("_ms", " ms")):
        return "ms"
    if name.endswith(("_pct", " pct", "_percent")):
        return "%"
    return ""


def fmt_value(value: Any, unit: str = "", limit: int = 160) -> str:
    """A measured value for people: numbers rounded with their unit, JSON for the rest (never a repr)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value, unit)
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in value.values()):
        text = ", ".join(f"{k}: {_number(v, unit)}" for k, v in value.items())
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_required(threshold: Any, unit: str = "") -> str:
    """'<= 2500.0 ms' -> '≤ 2500 ms'; anything else as text."""
    if threshold is None or threshold == "":
        return "—"
    if isinstance(threshold, (int, float, bool)):
        return fmt_value(threshold, unit)
    text = str(threshold)
    m = _THRESHOLD.match(text)
    if not m:
        op = next((o for o in ("<=", ">=", "==", "!=") if text.startswith(o + " ")), None)
        return f"{_OPS[op]}{text[len(op):]}" if op else text
    op, num, u = m.groups()
    u = u or unit
    value: float | int = float(num)
    if value.is_integer() and "e" not in num.lower():
        value = int(value)
    # a policy value is shown as written (99.95 stays 99.95), only its float noise goes
    return f"{_OPS[op]} {_number(value, u, digits=_decimals(num))}"


def _decimals(num: str) -> int:
    if "e" in num.lower():
        return 6
    frac = num.split(".", 1)[1].rstrip("0") if "." in num else ""
    return min(len(frac), 6)


def record_line(record: dict) -> tuple[str, str]:
    """(measured, required) of one record, for a table cell. The measured value keeps at least the precision
    of the requirement and one digit more when needed: never '99.95%' measured against '>= 99.95%' failing."""
    unit = unit_of(record)
    measured, threshold = record.get("measured"), record.get("threshold")
    required = fmt_required(threshold, unit)
    m = _THRESHOLD.match(str(threshold or ""))
    if m and isinstance(measured, float) and math.isfinite(measured) and unit not in ("B", "bytes"):
        limit = float(m.group(2))
        digits = max(_default_digits(measured), _decimals(m.group(2)))
        # more digits only where the rounding would hide the verdict (a fail, or a strict comparison)
        hide = record.get("verdict") != "pass" or m.group(1) in ("<", ">", "!=")
        while hide and digits < 6 and round(measured, digits) == round(limit, digits) and measured != limit:
            digits += 1
        return _number(measured, unit, digits=digits), required
    return fmt_value(measured, unit), required


def _row_attr(row: Any, *names: str) -> Any:
    if row is None:
        return None
    for n in names:
        v = row.get(n) if isinstance(row, dict) else getattr(row, n, None)
        if v not in (None, "", [], {}):
            return v
    return None


def catalog_row(catalog: Any, cid: str | None) -> Any:
    if catalog is None or not cid:
        return None
    try:
        return catalog.get(cid)
    except Exception:  # a catalog that cannot answer is no reason to lose the report
        return None


def finding(entry: dict, *, catalog: Any = None, window: str | None = None) -> dict:
    """The finding of a red (or waived) control: what failed, measured vs required, the policy key, the window,
    the query that ran and the remediation (from the catalog row when there is one)."""
    row = catalog_row(catalog, entry.get("id"))
    records = list(entry.get("records") or [])
    failing = [r for r in records if r.get("verdict") != "pass"] or records
    policy_default = _row_attr(row, "policy_key", "policy", "threshold_key")
    items = []
    for r in failing:
        measured, required = record_line(r)
        items.append({"name": str(r.get("name") or ""), "measured": measured, "required": required,
                      "policy_key": r.get("policy_key") or (str(policy_default) if policy_default else None),
                      "query": str(r.get("query") or "").strip(), "source": r.get("source"),
                      "verdict": r.get("verdict")})
    remediation = _row_attr(row, "remediation", "runbook", "fix")
    rationale = _row_attr(row, "rationale", "why")
    return {"id": entry.get("id"), "title": entry.get("title"), "severity": entry.get("severity"),
            "verdict": entry.get("verdict"), "message": entry.get("message") or "", "window": window,
            "records": items, "remediation": str(remediation).strip() if remediation else None,
            "rationale": str(rationale).strip() if rationale else None, "waiver": entry.get("waiver")}


def finding_text(f: dict) -> str:
    lines = [f"FINDING {f.get('id') or ''} {f.get('title') or ''}".rstrip(),
             f"verdict: {f.get('verdict')}" + (f"   window: {f['window']}" if f.get("window") else "")]
    for r in f["records"]:
        lines.append(f"- {r['name']}: measured {r['measured']}, required {r['required']}"
                     + (f" (policy key {r['policy_key']})" if r.get("policy_key") else ""))
        if r.get("query"):
            lines.append(f"  query: {r['query']}")
    if not f["records"] and f.get("message"):
        lines.append(f"- {f['message']}")
    if f.get("waiver"):
        w = f["waiver"]
        lines.append(f"waived: {w.get('justification')} (approved by {w.get('approver')}, expires {w.get('expires')})")
    if f.get("remediation"):
        lines.append(f"remediation: {f['remediation']}")
    return "\n".join(lines)


def finding_html(f: dict) -> str:
    """One block, no newlines (pytest-html shows its log with white-space: pre-wrap)."""
    e = escape
    head = (f'<div class="opsproof-finding"><b>FINDING {e(str(f.get("id") or ""))}</b> '
            f'{e(str(f.get("title") or ""))} &mdash; verdict <b>{e(str(f.get("verdict")))}</b>'
            + (f' &mdash; window {e(f["window"])}' if f.get("window") else ""))
    rows = "".join(
        f'<tr><td>{e(r["name"])}</td><td class="measured">{e(r["measured"])}</td>'
        f'<td class="required">{e(r["required"])}</td><td>{e(r.get("policy_key") or "—")}</td>'
        f'<td><code class="query">{e(r.get("query") or "—")}</code></td></tr>'
        for r in f["records"])
    table = ('<table class="opsproof-finding-records"><tr><th>Measurement</th><th>Measured</th><th>Required</th>'
             f'<th>Policy key</th><th>Query</th></tr>{rows}</table>') if rows else ""
    msg = f'<div class="message">{e(f["message"])}</div>' if (f.get("message") and not rows) else ""
    waiver = ""
    if f.get("waiver"):
        w = f["waiver"]
        waiver = (f'<div class="waiver"><b>Waived:</b> {e(str(w.get("justification")))} (approved by '
                  f'{e(str(w.get("approver")))}, expires {e(str(w.get("expires")))})</div>')
    rem = f'<div class="remediation"><b>Remediation:</b> {e(f["remediation"])}</div>' if f.get("remediation") else ""
    why = f'<div class="rationale"><b>Why:</b> {e(f["rationale"])}</div>' if f.get("rationale") else ""
    return f"{head}{table}{msg}{waiver}{rem}{why}</div>"

"""The README's controls table, generated from the catalog (between `<!-- controls:begin -->` and
`<!-- controls:end -->`), with each threshold's value read from the policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsproof.errors import UsageError

if TYPE_CHECKING:
    from opsproof.catalog import Catalog

BEGIN = "<!-- controls:begin -->"
END = "<!-- controls:end -->"
_ORDER = ("FLG", "BUD", "SLO", "TEL", "WCH", "SEC", "CAD", "DRL", "ACC")


def _project_policy() -> Any:
    from opsproof import paths, policy

    path = paths.project_dir() / "opsproof.toml"
    return policy.load(path) if path.is_file() else policy.Policy()


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return f"the policy value of each of its {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def threshold_cell(control, policy: Any) -> str:
    from opsproof.catalog import policy_value

    if not control.thresholds:
        return "—"
    parts = []
    for t in control.thresholds:
        try:
            value = format_value(policy_value(policy, t.policy_key))
        except KeyError:
            value = "(not in the policy)"
        parts.append(f"`{t.policy_key}` {t.operator} {value}")
    return "<br>".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sort_key(cid: str) -> tuple:
    prefix = cid.split("-")[0]
    return (_ORDER.index(prefix) if prefix in _ORDER else len(_ORDER), cid)


def render_table(catalog: "Catalog", policy: Any | None = None) -> str:
    policy = _project_policy() if policy is None else policy
    lines = ["| id | control | severity | suites | threshold | frameworks |", "|---|---|---|---|---|---|"]
    for cid in sorted(catalog.ids, key=_sort_key):
        c = catalog.get(cid)
        fws = "; ".join(f"{fw} {', '.join(reqs)}" for fw, reqs in c.frameworks.items() if reqs) or "—"
        lines.append(f"| {cid} | {_cell(c.title)} | {c.severity} | {', '.join(c.suites)} | "
                     f"{_cell(threshold_cell(c, policy))} | {fws} |")
    return "\n".join(lines) + "\n"


def current_table(readme_text: str, readme: Path | str = "README.md") -> str:
    """What the README holds between the markers (without the marker lines)."""
    start, end = readme_text.find(BEGIN), readme_text.find(END)
    if start < 0 or end < 0 or end < start:
        raise UsageError(f"{readme}: no `{BEGIN}` ... `{END}` block")
    return readme_text[start + len(BEGIN):end].strip("\n") + "\n"


def rewrite(readme_text: str, table: str, readme: Path | str = "README.md") -> str:
    current_table(readme_text, readme)  # validates the markers
    start, end = readme_text.find(BEGIN) + len(BEGIN), readme_text.find(END)
    return readme_text[:start] + "\n" + table + readme_text[end:]

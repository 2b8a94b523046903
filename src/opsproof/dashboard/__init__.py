"""The health dashboard: one self-contained HTML page (data and chart library inlined; opens from file://).

Where it is written:
- into every pack, by the pack writer (evidence/reports.py `write_reports` calls `write_dashboard`): the daily's
  `dashboard.html`, other kinds' `dashboard-<kind>.html`, adhoc `adhoc/<run id>/dashboard.html`;
- as the evidence tree's front page `index.html` (`index_path`): `reports/index.html` for the default root
  `reports/evidence` (a root named `evidence` puts it in its parent), `<root>/index.html` for any other root;
  a named target's chain (`<base>/<name>`) gets `index-<name>.html` next to the default's. Refreshed by every
  non-adhoc suite run and by `opsproof dashboard build`; served live by `opsproof dashboard serve`.

data.py gathers (packs, watch samples, live measure/ reads), render.py renders; neither writes a pack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

INDEX = "index.html"


def index_path(base: Path, target_name: str | None = None) -> Path:
    """The front page of an evidence dir `base` (the --opsproof-evidence-dir, before a named target's folder)."""
    from opsproof.targets import BUILTIN

    base = Path(base)
    folder = base.parent if base.name == "evidence" else base
    if target_name and target_name not in BUILTIN:
        return folder / f"index-{target_name}.html"
    return folder / INDEX


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build(root: Path, *, live: dict | None = None, current: dict | None = None, current_day=None,
          catalog: Any = None, trace_link_template: str | None = None, mode: str = "file",
          refresh_s: int = 0) -> str:
    from opsproof.dashboard.data import build_model
    from opsproof.dashboard.render import render_html

    model = build_model(root, live=live, current=current, current_day=current_day, catalog=catalog,
                        trace_link_template=trace_link_template, mode=mode, refresh_s=refresh_s)
    return render_html(model)


def write_dashboard(state, staging: Path, results: dict) -> list[str]:
    """At pack-write time: the run's dashboard into the staging pack (its kind's name) and, for a non-adhoc run,
    the evidence tree's index. Live parts are read through the run's target while it is open; a part that cannot
    be read says so on the page. Returns the pack-relative names written."""
    from opsproof.dashboard.data import collect_live

    staging = Path(staging)
    live = None
    if getattr(state, "target", None) is not None:
        live = collect_live(state.target, state.settings, state.policy)
    current: dict[str, Any] = {}
    if state.kind == "daily":
        from opsproof.evidence.compliance import compliance_report

        current = {"results.json": results, "compliance.json": compliance_report(results, state.catalog)}
    elif state.kind in ("drill", "acceptance"):
        current = {state.name("results", "json"): results}
    text = build(Path(state.root), live=live, current=current, current_day=state.day, catalog=state.catalog,
                 trace_link_template=getattr(state.settings, "trace_link_template", None))
    name = state.name("dashboard", "html")
    _write(staging / name, text)
    if state.kind != "adhoc":
        try:
            _write(index_path(state.options.evidence_dir, getattr(state.settings, "name", None)), text)
        except OSError as exc:
            print(f"\nopsproof: dashboard index not written: {exc}")
    return [name]

"""Waivers (waivers.toml): accepted exceptions to a control, each with a justification, an approver and an expiry.

    [[waiver]]
    control = "TEL-007"
    parameter = "ci_events"          # optional: only this pytest param id of a parametrized control
    justification = "..."
    approver = "jane@example.com"
    expires = 2026-12-31             # a TOML date; the waiver applies up to and including this day

A waived failure is reported as "waived", never as "pass"; an expired waiver no longer applies. No waivers file
means no waivers; a malformed one is a one-line UsageError (exit 2) naming the file and the entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opsproof.errors import UsageError

if TYPE_CHECKING:
    from opsproof.catalog import Catalog


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    control: str = Field(min_length=1)
    parameter: str | None = Field(None, min_length=1)
    justification: str = Field(min_length=10)
    approver: str = Field(min_length=2)
    expires: dt.date

    def active(self, day: dt.date) -> bool:
        return day <= self.expires

    def matches(self, control_id: str, nodeid: str) -> bool:
        if control_id != self.control:
            return False
        return self.parameter is None or param_id(nodeid) == self.parameter

    def entry(self) -> dict[str, str]:
        """The results.json `waiver` value."""
        return {"justification": self.justification, "approver": self.approver, "expires": self.expires.isoformat()}


def param_id(nodeid: str) -> str | None:
    """The `[...]` part of a pytest nodeid ("checks/test_x.py::test_y[eu-west]" -> "eu-west"), else None."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    return nodeid[nodeid.index("[") + 1:-1]


class Waivers(BaseModel):
    model_config = ConfigDict(frozen=True)

    waivers: tuple[Waiver, ...] = ()
    source: str | None = None   # the file, None when there is none
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.waivers)

    def for_entry(self, control_id: str, nodeid: str, day: dt.date) -> Waiver | None:
        """The waiver that applies to this control's test on `day` (a parameter waiver before a whole-control one)."""
        hits = [w for w in self.waivers if w.active(day) and w.matches(control_id, nodeid)]
        hits.sort(key=lambda w: w.parameter is None)
        return hits[0] if hits else None

    def expired(self, day: dt.date) -> list[Waiver]:
        return [w for w in self.waivers if not w.active(day)]

    def active(self, day: dt.date) -> list[Waiver]:
        return [w for w in self.waivers if w.active(day)]


def default_path() -> Path:
    from opsproof import paths

    return paths.project_dir() / "waivers.toml"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["loc"] and err["loc"][0] == "expires" and err["type"] != "missing":
        msg = "must be a TOML date (expires = 2026-12-31), not " + repr(err.get("input"))
    return f"{where}: {msg}"


def load(path: Path | str | None = None, catalog: "Catalog | None" = None) -> Waivers:
    """Load and validate waivers.toml. path None = <project dir>/waivers.toml, and no file there = no waivers;
    an explicit path must exist. Control ids are checked against `catalog` (default: the project's)."""
    explicit = path is not None
    path = Path(path) if explicit else default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"waivers file not found: {path}") from None
        return Waivers()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"waivers {path} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"waiver"})
    if extra:
        raise UsageError(f"waivers {path}: unknown key(s) {extra} (expected [[waiver]] tables)")
    rows: Any = data.get("waiver", [])
    if not isinstance(rows, list):
        raise UsageError(f"waivers {path}: `waiver` must be an array of tables ([[waiver]])")
    if catalog is None:
        from opsproof import catalog as catalog_mod

        catalog = catalog_mod.load()
    out: list[Waiver] = []
    for n, row in enumerate(rows, start=1):
        label = f"waiver #{n}" + (f" ({row.get('control')})" if isinstance(row, dict) and row.get("control") else "")
        if isinstance(row, dict) and isinstance(row.get("expires"), dt.datetime):
            raise UsageError(f"waivers {path}: {label}: expires: must be a TOML date (expires = 2026-12-31), "
                             "not a date-time")
        try:
            w = Waiver.model_validate(row)
        except ValidationError as exc:
            raise UsageError(f"waivers {path}: {label}: {_first_error(exc)}") from None
        if w.control not in catalog:
            raise UsageError(f"waivers {path}: {label}: unknown control id {w.control!r} "
                             f"(valid: {', '.join(catalog.ids)})")
        out.append(w)
    return Waivers(waivers=tuple(out), source=str(path), sha256=hashlib.sha256(raw).hexdigest())

"""The control catalog (controls.toml): control id -> title, area, severity, suites, frameworks, threshold, runbook.

`load()` validates the file (a problem is a one-line UsageError naming the file and the id, exit 2);
`Catalog.select()` picks controls by id, severity, framework requirement ("SOC2:CC6.1") and suite;
`Catalog.readme_table()` renders the README's controls table with each threshold's value from the policy.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsproof.errors import UsageError

Severity = Literal["critical", "high", "medium", "low"]
Area = Literal["flags", "budgets", "slo", "watchlist", "security", "cadence", "telemetry", "code", "drill",
               "acceptance"]
Kind = Literal["check", "drill", "acceptance"]
Suite = Literal["daily", "gate", "weekly", "monthly", "drill", "acceptance"]
Operator = Literal["<=", ">=", "<", ">", "==", "!=", "matches", "in"]

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")   # most severe first
SUITES: tuple[str, ...] = ("daily", "gate", "weekly", "monthly", "drill", "acceptance")
CHECK_SUITES = frozenset({"daily", "gate", "weekly", "monthly"})

# SOC 2 Trust Services Criteria (2017, revised points of focus 2022) and ISO/IEC 27001:2022 Annex A.
_SOC2_COUNTS = {"CC1": 5, "CC2": 3, "CC3": 4, "CC4": 2, "CC5": 3, "CC6": 8, "CC7": 5, "CC8": 1, "CC9": 2,
                "A1": 3, "C1": 2, "PI1": 5, "P1": 1, "P2": 1, "P3": 2, "P4": 3, "P5": 2, "P6": 7, "P7": 1, "P8": 1}
SOC2_CRITERIA = frozenset(f"{k}.{i}" for k, n in _SOC2_COUNTS.items() for i in range(1, n + 1))
ISO27001_CONTROLS = frozenset(f"A.{t}.{i}" for t, n in ((5, 37), (6, 8), (7, 14), (8, 34)) for i in range(1, n + 1))
FRAMEWORKS: dict[str, frozenset[str]] = {"SOC2": SOC2_CRITERIA, "ISO27001": ISO27001_CONTROLS}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Frozen):
    policy_key: str          # dotted key into opsproof.toml, e.g. "slo.p95_ms_max"
    operator: Operator       # measured <operator> policy value


class Frameworks(_Frozen):
    SOC2: tuple[str, ...] = ()
    ISO27001: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known(self) -> "Frameworks":
        for name, valid in FRAMEWORKS.items():
            bad = [r for r in getattr(self, name) if r not in valid]
            if bad:
                raise ValueError(f"{name}: unknown requirement(s) {bad}")
        return self

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(name, getattr(self, name)) for name in FRAMEWORKS]

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(reqs) for name, reqs in self.items()}


class Control(_Frozen):
    id: str = Field(pattern=r"^[A-Z]{3}-\d{3}$")
    title: str = Field(min_length=5)
    area: Area
    severity: Severity
    kind: Kind
    suites: tuple[Suite, ...] = Field(min_length=1)
    frameworks: Frameworks
    policy_key: str | None = None
    operator: Operator | None = None
    also: tuple[Threshold, ...] = ()     # further thresholds of the same control
    rationale: str = Field(min_length=10)
    remediation: str = Field(min_length=10)
    proof: tuple[str, ...] = ()           # nodeids of project tests that show the control can go red

    @field_validator("proof", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "Control":
        if (self.policy_key is None) != (self.operator is None):
            raise ValueError("policy_key and operator go together")
        if self.also and self.policy_key is None:
            raise ValueError("`also` needs a primary policy_key")
        if len(set(self.suites)) != len(self.suites):
            raise ValueError(f"suites: repeated {list(self.suites)}")
        suites = set(self.suites)
        if self.kind == "check" and not suites <= CHECK_SUITES:
            raise ValueError(f"suites: a check runs in {sorted(CHECK_SUITES)}, not {sorted(suites - CHECK_SUITES)}")
        if self.kind in ("drill", "acceptance") and suites != {self.kind}:
            raise ValueError(f"suites: a {self.kind} control runs in suite {self.kind!r} only")
        if self.kind in ("drill", "acceptance") and self.area != self.kind:
            raise ValueError(f"area: a {self.kind} control has area {self.kind!r}")
        for p in self.proof:
            if "::" not in p or not p.startswith("tests/"):
                raise ValueError(f"proof: {p!r} is not a nodeid under tests/ (tests/x.py::test_y)")
        return self

    @property
    def thresholds(self) -> tuple[Threshold, ...]:
        if self.policy_key is None:
            return ()
        return (Threshold(policy_key=self.policy_key, operator=self.operator), *self.also)

    def requirements(self) -> list[str]:
        """"SOC2:CC7.2"-style requirement ids this control covers."""
        return [f"{fw}:{r}" for fw, reqs in self.frameworks.items() for r in reqs]


def policy_value(policy: Any, key: str) -> Any:
    """The value at a dotted key of a Policy ("slo.p95_ms_max", "telemetry.requests.max_age_s", "flags")."""
    node = policy
    for part in key.split("."):
        if isinstance(node, dict):
            if part not in node:
                raise KeyError(key)
            node = node[part]
        elif isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        else:
            raise KeyError(key)
    return node


class Catalog(_Frozen):
    controls: dict[str, Control]
    source: str = "<memory>"
    sha256: str = ""

    @property
    def ids(self) -> list[str]:
        return sorted(self.controls)

    def get(self, control_id: str) -> Control:
        try:
            return self.controls[control_id]
        except KeyError:
            raise UsageError(f"unknown control id {control_id!r} (valid: {', '.join(self.ids)})") from None

    def __contains__(self, control_id: object) -> bool:
        return control_id in self.controls

    def requirements(self) -> dict[str, dict[str, list[str]]]:
        """{framework: {requirement: [control ids]}} over the whole catalog, sorted."""
        out: dict[str, dict[str, list[str]]] = {fw: {} for fw in FRAMEWORKS}
        for cid in self.ids:
            for fw, reqs in self.controls[cid].frameworks.items():
                for r in reqs:
                    out[fw].setdefault(r, []).append(cid)
        return {fw: dict(sorted(reqs.items(), key=lambda kv: _req_sort_key(kv[0]))) for fw, reqs in out.items()}

    def select(self, ids: Iterable[str] | None = None, severities: Iterable[str] | None = None,
               requirements: Iterable[str] | None = None, suites: Iterable[str] | None = None) -> set[str]:
        """Control ids matching every given filter (within one filter: any of its values). None = no filter.
        An unknown id, severity, suite or requirement is a UsageError listing the valid ones."""
        chosen = set(self.controls)
        if ids is not None:
            ids = list(ids)
            unknown = [i for i in ids if i not in self.controls]
            if unknown:
                raise UsageError(f"unknown control id(s) {unknown} (valid: {', '.join(self.ids)})")
            chosen &= set(ids)
        if severities is not None:
            sev = [s.lower() for s in severities]
            unknown = [s for s in sev if s not in SEVERITIES]
            if unknown:
                raise UsageError(f"unknown severity {unknown} (valid: {', '.join(SEVERITIES)})")
            chosen &= {c.id for c in self.controls.values() if c.severity in sev}
        if requirements is not None:
            covered = {f"{fw}:{r}": set(cids) for fw, reqs in self.requirements().items() for r, cids in reqs.items()}
            wanted = [_normalize_requirement(r) for r in requirements]
            unknown = [r for r in wanted if r not in covered]
            if unknown:
                known = [r for r in unknown if r.partition(":")[2] in FRAMEWORKS.get(r.partition(":")[0], ())]
                what = "no control covers requirement" if known == unknown else "unknown requirement"
                raise UsageError(f"{what} {unknown} (valid: {', '.join(covered)})")
            chosen &= set().union(*(covered[r] for r in wanted)) if wanted else set()
        if suites is not None:
            wanted_suites = list(suites)
            unknown = [s for s in wanted_suites if s not in SUITES]
            if unknown:
                raise UsageError(f"unknown suite {unknown} (valid: {', '.join(SUITES)})")
            chosen &= {c.id for c in self.controls.values() if set(c.suites) & set(wanted_suites)}
        return chosen

    def readme_table(self, policy: Any | None = None) -> str:
        """The README's controls table (markdown), thresholds with their values from `policy` (default: the
        project's opsproof.toml, or the built-in defaults when there is none)."""
        from opsproof.catalog_readme import render_table

        return render_table(self, policy)


def _normalize_requirement(req: str) -> str:
    fw, sep, r = req.partition(":")
    if not sep:
        return req
    fw_up = {k.upper(): k for k in FRAMEWORKS}.get(fw.strip().upper().replace(" ", ""), fw.strip())
    return f"{fw_up}:{r.strip()}"


def _req_sort_key(req: str) -> tuple:
    head, _, rest = req.rpartition(".")
    return (head, int(rest) if rest.isdigit() else 0)


def default_path() -> Path:
    from opsproof import paths

    return paths.project_dir() / "controls.toml"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def load(path: Path | str | None = None) -> Catalog:
    """Load and validate controls.toml (default: <project dir>/controls.toml)."""
    from opsproof.policy import Policy

    path = Path(path) if path is not None else default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"control catalog not found: {path}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"control catalog {path} is not valid TOML: {exc}") from None
    if not data:
        raise UsageError(f"control catalog {path} holds no control")
    defaults = Policy()
    controls: dict[str, Control] = {}
    for cid, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"control catalog {path}: {cid}: expected a table [{cid}]")
        try:
            control = Control.model_validate({**table, "id": cid})
        except ValidationError as exc:
            raise UsageError(f"control catalog {path}: {cid}: {_first_error(exc)}") from None
        for t in control.thresholds:
            try:
                policy_value(defaults, t.policy_key)
            except KeyError:
                raise UsageError(f"control catalog {path}: {cid}: policy_key {t.policy_key!r} is not a key of "
                                 "opsproof.toml") from None
        controls[cid] = control
    return Catalog(controls=controls, source=str(path), sha256=hashlib.sha256(raw).hexdigest())

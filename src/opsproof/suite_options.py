"""The plugin's options: prefixed names (the plugin loads into every pytest run of the venv), ini twins, and one
frozen object they resolve into (command line > ini > default), like pytest-postgresql's config.

The suite kind is explicit (`--opsproof-suite`, which `opsproof daily|gate|drills|acceptance` pass). Without it,
only the documented cron form `pytest -m <kind>` over the whole suite names a kind; anything narrower (-k, a file,
a node id, a control selection) is an `adhoc` run that never replaces another kind's results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opsproof.errors import UsageError

SUITE_DIRS = ("checks", "drills", "acceptance")
KINDS = ("daily", "gate", "drill", "acceptance", "weekly", "monthly", "adhoc")
DEFAULT_WINDOW = {"weekly": "7d", "monthly": "30d"}  # the reviews: the same controls over a longer window

# (option, dest, ini name or None, help); value options take a value, flags do not
VALUE_OPTIONS = (
    ("--opsproof-suite", "opsproof_suite", None, f"suite kind: {', '.join(KINDS)} (default: from `-m <kind>` "
     "over the whole suite, else adhoc)"),
    ("--opsproof-target", "opsproof_target", "opsproof_target",
     "embedded (the private stack, default), env (SUPABASE_* settings) or a named target of targets.toml"),
    ("--opsproof-policy", "opsproof_policy", "opsproof_policy", "posture policy file (default: opsproof.toml)"),
    ("--opsproof-catalog", "opsproof_catalog", "opsproof_catalog", "control catalog (default: controls.toml)"),
    ("--opsproof-waivers", "opsproof_waivers", "opsproof_waivers",
     "waivers file (default: waivers.toml when it exists)"),
    ("--opsproof-window", "opsproof_window", "opsproof_window",
     "measurement window ending now, e.g. 24h, 7d (default: 24h; weekly 7d, monthly 30d)"),
    ("--opsproof-evidence-dir", "opsproof_evidence_dir", "opsproof_evidence_dir",
     "evidence root (default: reports/evidence)"),
    ("--opsproof-date", "opsproof_date", None, "evidence date YYYY-MM-DD (default: today UTC)"),
    ("--opsproof-drill-wait", "opsproof_drill_wait", None,
     "drills: wait up to SECONDS for another run's drill lock (default: fail fast)"),
)
LIST_OPTIONS = (
    ("--opsproof-control", "opsproof_control", "run only this control id (repeatable)"),
    ("--opsproof-severity", "opsproof_severity", "run only controls of this severity (repeatable)"),
    ("--opsproof-requirement", "opsproof_requirement",
     "run only controls mapped to this framework requirement, e.g. SOC2:CC6.1 (repeatable)"),
)
FLAG_OPTIONS = (
    ("--opsproof-no-evidence", "opsproof_no_evidence", "do not write an evidence pack"),
    ("--opsproof-dry-run", "opsproof_dry_run", "drills print what they would change and change nothing"),
    ("--opsproof-allow-drills-on-production", "opsproof_allow_drills_on_production",
     "let drills run on a target marked production (the policy must allow it too)"),
)


def add_options(parser) -> None:
    g = parser.getgroup("opsproof")
    for opt, dest, ini, help_text in VALUE_OPTIONS:
        g.addoption(opt, dest=dest, default=None, help=help_text)
        if ini:
            parser.addini(ini, help=f"default for {opt}: {help_text}", default=None)
    for opt, dest, help_text in LIST_OPTIONS:
        g.addoption(opt, dest=dest, action="append", default=[], help=help_text)
    for opt, dest, help_text in FLAG_OPTIONS:
        g.addoption(opt, dest=dest, action="store_true", default=False, help=help_text)


@dataclass(frozen=True)
class SuiteOptions:
    """Everything the plugin was told, resolved once (command line > ini > default); paths absolute."""

    kind: str
    kind_explicit: bool
    narrowed: bool
    target: str | None
    policy: Path
    catalog: Path
    waivers: Path | None
    window: str
    evidence_dir: Path
    date: str | None
    drill_wait_s: float
    controls: tuple[str, ...]
    severities: tuple[str, ...]
    requirements: tuple[str, ...]
    no_evidence: bool
    dry_run: bool
    allow_drills_on_production: bool

    @property
    def selected(self) -> bool:
        return bool(self.controls or self.severities or self.requirements)


def _ini(config, name: str) -> str | None:
    try:
        v = config.getini(name)
    except ValueError:
        return None
    return str(v) if v not in (None, "", []) else None


def _path(value: str | None, base: Path) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def check_space_form(config) -> None:
    """`--opsproof-policy PATH` (a space, not '='): pytest reads PATH as a test path before this plugin's options
    are known and picks its rootdir from it. Refuse it with the fix instead of running from the wrong root."""
    args = list(config.invocation_params.args)
    inv = Path(config.invocation_params.dir)
    names = {opt for opt, *_ in VALUE_OPTIONS} | {opt for opt, *_ in LIST_OPTIONS}
    for i, a in enumerate(args[:-1]):
        if a in names and _path(args[i + 1], inv).exists():
            raise UsageError(f"write {a}={args[i + 1]} (with '='): given with a space, pytest takes "
                             f"{args[i + 1]} for a test path and picks its rootdir from it")


def _narrowing(config, root: Path) -> bool:
    """Anything that runs less than the whole suite of a kind."""
    opt = config.option
    if getattr(opt, "keyword", "") or getattr(opt, "deselect", None) or getattr(opt, "lf", False):
        return True
    from _pytest.config import Config

    if config.args_source != Config.ArgsSource.ARGS:
        return False
    inv = Path(config.invocation_params.dir)
    for arg in config.args:
        if "::" in arg:
            return True
        p = _path(arg, inv)
        if p == root or p in {(root / d).resolve() for d in SUITE_DIRS}:
            continue
        return True
    return False


def resolve(config) -> SuiteOptions:
    check_space_form(config)
    opt = config.option
    root = Path(str(config.rootpath))
    base = Path(str(config.inipath.parent)) if config.inipath else root
    inv = Path(config.invocation_params.dir)
    explicit = opt.opsproof_suite
    if explicit is not None and explicit not in KINDS:
        raise UsageError(f"--opsproof-suite={explicit}: one of {', '.join(KINDS)}")
    narrowed = _narrowing(config, root) or bool(opt.opsproof_control or opt.opsproof_severity
                                                or opt.opsproof_requirement)
    markexpr = (getattr(opt, "markexpr", "") or "").strip()
    if explicit:
        kind = explicit
    elif markexpr in KINDS and not narrowed:
        kind = markexpr
    else:
        kind = "adhoc"

    def pick(cli: str | None, ini: str) -> tuple[str | None, Path]:
        if cli is not None:
            return cli, inv
        return _ini(config, ini), base

    pol, pol_base = pick(opt.opsproof_policy, "opsproof_policy")
    cat, cat_base = pick(opt.opsproof_catalog, "opsproof_catalog")
    wai, wai_base = pick(opt.opsproof_waivers, "opsproof_waivers")
    ev, ev_base = pick(opt.opsproof_evidence_dir, "opsproof_evidence_dir")
    window = opt.opsproof_window or _ini(config, "opsproof_window") or DEFAULT_WINDOW.get(kind, "24h")
    waivers = _path(wai, wai_base) if wai else (root / "waivers.toml" if (root / "waivers.toml").exists() else None)
    try:
        drill_wait = float(opt.opsproof_drill_wait or 0.0)
    except ValueError:
        raise UsageError(f"--opsproof-drill-wait={opt.opsproof_drill_wait}: seconds, e.g. 120") from None
    return SuiteOptions(
        kind=kind, kind_explicit=explicit is not None, narrowed=narrowed,
        target=opt.opsproof_target or _ini(config, "opsproof_target"),
        policy=_path(pol, pol_base) if pol else root / "opsproof.toml",
        catalog=_path(cat, cat_base) if cat else root / "controls.toml",
        waivers=waivers, window=window,
        evidence_dir=_path(ev, ev_base) if ev else root / "reports" / "evidence",
        date=opt.opsproof_date, drill_wait_s=drill_wait,
        controls=tuple(opt.opsproof_control), severities=tuple(opt.opsproof_severity),
        requirements=tuple(opt.opsproof_requirement), no_evidence=bool(opt.opsproof_no_evidence),
        dry_run=bool(opt.opsproof_dry_run), allow_drills_on_production=bool(opt.opsproof_allow_drills_on_production))


def is_suite_run(config) -> bool:
    """A run that collects from checks/, drills/ or acceptance/ (the product's suites), not the project's tests."""
    root = Path(str(config.rootpath))
    inv = Path(config.invocation_params.dir)
    for arg in config.args:
        path = _path(arg.split("::")[0], inv)
        for d in SUITE_DIRS:
            base = (root / d).resolve()
            if path == base or base in path.parents:
                return True
    return False

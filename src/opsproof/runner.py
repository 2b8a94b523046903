"""`opsproof daily|gate|drills|acceptance`: validate every input, make sure the target is up (embedded default),
then run the suite.

Nothing changes before all inputs are valid: the settings resolve (`opsproof.config.resolve_settings`), the
policy parses, the window/date parse, the evidence dir is (or can be made) a writable directory, and a
non-embedded target answers. Bad input is one line on stderr and exit 2: no stack started, no pack written.
The resolved target, policy and evidence dir are handed to the pytest run (and to the cadence step of
`opsproof daily`) explicitly, so runner and plugin cannot disagree about what is measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opsproof import paths
from opsproof.config import Settings, resolve_settings
from opsproof.errors import OpsproofError, UsageError


def ensure_embedded(with_plane: bool = True, log=print) -> None:
    """Bring up the embedded stack (and the reference plane) when no other target is configured."""
    from opsproof.stack.manager import Stack

    st = Stack().up(log=lambda m: log(f"stack: {m}"))
    if not st["healthy"]:
        raise OpsproofError("embedded stack unhealthy: " + "; ".join(st["problems"]))
    if with_plane:
        from opsproof.plane.supervisor import Supervisor

        Supervisor(paths.plane_dir()).up(log=lambda m: log(f"plane: {m}"))


def take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """Remove `--name VALUE` / `--name=VALUE` from args (the last one wins); returns (value, rest)."""
    value, rest, i = None, [], 0
    while i < len(args):
        a = args[i]
        if a == name:
            if i + 1 >= len(args):
                raise UsageError(f"option {name} needs a value")
            value, i = args[i + 1], i + 2
            continue
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return value, rest


def check_evidence_dir(path: Path) -> None:
    """The evidence root exists as a writable directory, or can be created (nothing is created here)."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"evidence dir {path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"evidence dir {path} is not writable")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"evidence dir {path} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"evidence dir {path} cannot be created: {parent} is not writable")


def preflight(extra: list[str]) -> tuple[Settings, Path, Path, list[str]]:
    """Validate every input before anything changes. Returns (settings, policy path, evidence dir, the other args)."""
    from opsproof import clock
    from opsproof import policy as policy_mod

    target, rest = take_option(list(extra), "--target")
    policy_arg, rest = take_option(rest, "--policy")
    evidence_arg, rest = take_option(rest, "--evidence-dir")
    settings = resolve_settings(target)  # after it, the .env's OPSPROOF_HOME/PROJECT_DIR are in effect
    proj = paths.project_dir()
    policy_path = Path(policy_arg).expanduser().resolve() if policy_arg else proj / "opsproof.toml"
    try:
        policy_mod.load(policy_path)
    except OSError as exc:
        raise UsageError(f"policy {policy_path}: {exc.strerror or exc}") from None
    window, _ = take_option(rest, "--window")
    date, _ = take_option(rest, "--date")
    clock.parse_window(window or "24h")
    clock.parse_date(date)
    evidence_dir = Path(evidence_arg).expanduser().resolve() if evidence_arg else proj / "reports" / "evidence"
    check_evidence_dir(evidence_dir)
    if settings.target != "embedded":
        settings.require_reachable()
    return settings, policy_path, evidence_dir, rest


# the opsproof CLI's own spellings -> the pytest plugin's prefixed options (value options, then flags)
PASS_VALUES = ("--window", "--date", "--drill-wait", "--control", "--severity", "--requirement", "--waivers",
               "--catalog")
PASS_FLAGS = ("--dry-run", "--no-evidence", "--allow-drills-on-production")
SUITE_OF = {"daily": "daily", "gate": "gate", "drill": "drill", "acceptance": "acceptance", "weekly": "weekly",
            "monthly": "monthly"}


def to_plugin_args(rest: list[str]) -> list[str]:
    """`--window=7d` -> `--opsproof-window=7d` (also `--window 7d`), `--dry-run` -> `--opsproof-dry-run`;
    everything else (pytest's own options) passes through unchanged."""
    out, i = [], 0
    while i < len(rest):
        a = rest[i]
        name, eq, value = a.partition("=")
        if name in PASS_VALUES:
            if not eq:
                if i + 1 >= len(rest):
                    raise UsageError(f"{name} needs a value")
                value, i = rest[i + 1], i + 1
            out.append(f"--opsproof-{name[2:]}={value}")
        elif a in PASS_FLAGS:
            out.append(f"--opsproof-{a[2:]}")
        else:
            out.append(a)
        i += 1
    return out


def run_suite(marker: str, extra: list[str], with_plane: bool = True) -> int:
    settings, policy_path, evidence_dir, rest = preflight(extra)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    say(f"opsproof: {settings.describe_line()}")
    proj = paths.project_dir()
    common = [f"--target={settings.name}", f"--policy={policy_path}", f"--evidence-dir={evidence_dir}"]
    if settings.target == "embedded":
        ensure_embedded(with_plane=with_plane, log=say)
        if marker == "daily":
            # the embedded default has no cron of its own: do the daily maintenance first, as
            # deploy/crontab does before the daily controls (a failed task is reported, the run goes on)
            subprocess.call([sys.executable, "-m", "opsproof.cli", "cadence", "daily", *common], cwd=str(proj))
    # the child inherits the environment resolve_settings() completed from the .env (and the file's path);
    # the suite kind is explicit: a narrower selection is still this kind's run (and RED for what did not run)
    plugin = [f"--opsproof-suite={SUITE_OF[marker]}", f"--opsproof-target={settings.name}",
              f"--opsproof-policy={policy_path}", f"--opsproof-evidence-dir={evidence_dir}"]
    argv = [sys.executable, "-m", "pytest", "-m", marker, *plugin, *to_plugin_args(rest)]
    return subprocess.call(argv, cwd=str(proj))

"""Violation cases: each one breaks ONE thing on the test session's stack, the whole daily suite runs,
and exactly the named controls must go red (with the named verdict) while every other control stays
green. False-alarm probes are cases with `red={}`: things that look like violations but are not.

Each topic keeps its cases in its own module here (`CASES = [Case(...), ...]`); `all_cases()` gathers
them, and tests/test_controls_vs_stack.py runs every one and checks that every daily control id has at
least one case that turns it red.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Union

# SQL run as the stack's admin (autocommit), or a callable taking the session's Stack object (and the case's
# evidence dir if it takes two arguments). inject and undo run on SEPARATE connections: session settings
# (e.g. session_replication_role) do not carry over. undo always runs, and must restore what inject changed:
# tests/test_controls_vs_stack.py compares a fingerprint of the stack before and after.
Step = Union[str, Callable[..., object], None]


@dataclass(frozen=True)
class Case:
    name: str                       # "<CONTROL-ID>/<what>" (or "ok/<what>" for a false-alarm probe)
    red: dict[str, str]             # control id -> expected verdict ("fail" | "error"); {} = all green
    inject: Step = None
    undo: Step = None
    env: dict[str, str] = field(default_factory=dict)   # extra environment for the suite run
    args: tuple[str, ...] = ()      # extra suite arguments
    why: str = ""                   # one line: what this case proves
    # optional: callable(stack, evidence_dir) run BEFORE inject, e.g. lay down "yesterday's" pack in the
    # case's evidence dir (the case's suite run then writes today's pack next to it)
    prepare: Callable[..., object] | None = None
    # SQL steps run as the stack's `postgres` (hosted-shaped, not a superuser); True runs them as the bootstrap
    # superuser, for faults only a superuser can make (e.g. rewriting audit rows behind the trigger's back)
    superuser: bool = False


def all_cases() -> list[Case]:
    out: list[Case] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        out.extend(getattr(module, "CASES", []))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate violation case names: {dupes}")
    return out

"""One journal shape for every run kind: checks, drills, acceptance steps and cadence tasks.

A run (`RunJournal`, written as results[-<kind>].json) holds one `Entry` per control or task; an entry holds
the `Record`s of what was measured. Drill entries also carry the chaos-engineering journal parts (steady state
before/after, the actions taken, their rollbacks), as chaostoolkit's journal does for an experiment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["pass", "fail", "error", "skipped", "waived", "interrupted", "pending"]
EntryKind = Literal["check", "drill", "acceptance", "maintenance", "rehearsal"]
# what a run can conclude: GREEN (everything passed or is waived), RED, INTERRUPTED, ERROR (nothing proven)
RunVerdict = Literal["GREEN", "RED", "INTERRUPTED"]
NOT_GREEN = ("fail", "error", "skipped", "interrupted", "pending")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Record(_Model):
    """One measurement: what was measured, the requirement, the verdict, and the query that ran."""

    name: str
    measured: Any = None
    threshold: Any = None
    verdict: Literal["pass", "fail"]
    query: str = ""
    detail: Any = None
    unit: str = ""
    policy_key: str | None = None
    source: str | None = None


class Waiver(_Model):
    control: str
    parameter: str | None = None
    justification: str
    approver: str
    expires: str


class Entry(_Model):
    """One control (check, drill, acceptance step) or cadence task in a run."""

    id: str | None = None
    title: str = ""
    kind: EntryKind = "check"
    area: str | None = None
    severity: str = "medium"
    frameworks: dict[str, list[str]] = Field(default_factory=dict)
    nodeid: str | None = None
    verdict: Verdict = "pending"
    message: str = ""
    records: list[Record] = Field(default_factory=list)
    duration_s: float = 0.0
    waiver: Waiver | None = None
    # drills (chaostoolkit's journal parts): steady state before/after, actions taken, their rollbacks
    steady_state: dict[str, Any] | None = None
    actions: list[dict[str, Any]] | None = None
    rollbacks: list[dict[str, Any]] | None = None


class Window(_Model):
    length_s: float
    to: str
    from_: str = Field(alias="from")


class RunJournal(_Model):
    """results[-<kind>].json: the verdict of one run and every entry behind it."""

    suite: str
    run_id: str
    date: str
    verdict: RunVerdict
    green: bool
    window: dict[str, Any] | None = None
    interrupted: bool = False
    interrupted_by: str | None = None
    not_run: list[dict[str, Any]] = Field(default_factory=list)
    summary: dict[str, int]
    controls: list[Entry]
    waivers_expired: list[dict[str, Any]] = Field(default_factory=list)
    target: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    health: dict[str, Any] | None = None  # opsproof.health.score(): score 0-100, components, caps, formula


def summarize(entries: list[dict]) -> dict[str, int]:
    keys = ("pass", "fail", "error", "skipped", "waived", "interrupted")
    out = {k: sum(1 for e in entries if e.get("verdict") == k) for k in keys}
    return {k: v for k, v in out.items() if v or k in ("pass", "fail", "error", "skipped")}


def run_verdict(entries: list[dict], *, interrupted: bool, not_run: list) -> tuple[RunVerdict, bool]:
    """GREEN only when something was proven and nothing failed, errored, was skipped, never finished or never ran.
    A waived failure keeps the run GREEN and is counted as waived (never as a pass)."""
    if interrupted:
        return "INTERRUPTED", False
    proven = any(e.get("verdict") == "pass" for e in entries)
    bad = any(e.get("verdict") in NOT_GREEN for e in entries)
    green = proven and not bad and not not_run
    return ("GREEN" if green else "RED"), green


def validate(doc: dict) -> dict:
    """A results document checked against the journal shape (raises pydantic.ValidationError)."""
    RunJournal.model_validate(doc)
    return doc

"""The operational cadence: scheduling, maintenance and rehearsals -- never a verdict on the target's posture.

`opsproof cadence daily | weekly | monthly` (levers/cadence_cli.py) runs this schedule's tasks here and the suite runs
the schedule asks for (`pytest -m weekly`, the drills, `pytest -m monthly` over 30 days) through opsproof.runner. The
reviews are checks: backup freshness is CAD-001, budget drift BUD-001..003, the portal audit SEC-003, canary sanity
CAD-005, the secrets scan CAD-006, the 30-day SLO review SLO-001..003 at `--opsproof-window 30d`.

A task is maintenance (TTL cleanup, partition rotation, a fresh backup on the embedded target, the known-good
snapshot, the weekly static analysis whose SARIF SEC-007 reads) or a rehearsal (key rotation, restore test). `run(c, schedule)` runs every task even when one fails and
returns one journal entry per task (opsproof.journal.Entry: kind maintenance|rehearsal, verdict pass|fail|error,
records [...]): a rehearsal that finds something wrong is a fail, a task that could not run is an error. Every
connection comes from levers/common.py `connection()`, every write is audited with `audit()` in its transaction,
and every task's outcome gets one audit row (action `cadence.<task>`). `write_pack()` puts the entries into the
day's pack as cadence/<schedule>/ through the one pack writer (evidence/daypack.py).

Maintenance is forward-only by design: what it deletes is beyond the policy's retention (backups are the undo);
rehearsals leave the target as they found it (scratch databases dropped, rehearsal rows deleted, keys never stored).
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

from opsproof import clock
from opsproof.errors import OpsproofError, UsageError
from opsproof.levers.common import audit, connection
from opsproof.levers.cadence_context import (  # noqa: F401 - the cadence's vocabulary, re-exported
    ACTOR, PARTITIONED, CadenceContext, TaskError, TaskFailed, context_from_settings, record,
)
from opsproof.levers.code_scan import STATIC_SCAN_SARIF, static_scan  # noqa: F401
from opsproof.levers.maintenance import backup_refresh, known_good_snapshot, partition_rotation, ttl_cleanup
from opsproof.levers.rehearsals import key_rotation_rehearsal, restore_test


# == the artifact of the monthly review =============================================================

def cost_review(c: CadenceContext) -> dict:
    """What the target's data costs to keep (database size, largest tables): an artifact of the monthly run, no
    verdict (the 30-day SLO review is SLO-001..003 at --opsproof-window 30d)."""
    from opsproof.measure.storage import storage
    from opsproof.target.db import Target

    target = Target(c.dsn)
    try:
        m = storage(target)
    finally:
        target.close()
    return {"measured_at": clock.now().isoformat(), **m.result, "query": m.query}


# == scheduling ====================================================================================

Task = Callable[[CadenceContext], dict]
# name -> (function, journal kind, title, runs on hosted targets too)
TASKS: dict[str, tuple[Task, str, str, bool]] = {
    "ttl_cleanup": (ttl_cleanup, "maintenance", "agent_logs beyond the TTL removed", True),
    "partition_rotation": (partition_rotation, "maintenance", "Partitions created ahead, beyond retention dropped", True),
    "backup_refresh": (backup_refresh, "maintenance", "A fresh backup taken when the newest is stale (embedded)", False),
    "known_good_snapshot": (known_good_snapshot, "maintenance", "Known-good flag/budget snapshot recorded", True),
    "key_rotation": (key_rotation_rehearsal, "rehearsal", "Key rotation rehearsal: new key accepted, old refused", True),
    "restore_test": (restore_test, "rehearsal", "Restore test: a real dump restored identical (RPO/RTO)", True),
    "static_scan": (static_scan, "maintenance", "Static analysis (bandit) of the TMS's code, SARIF for SEC-007", True),
}
SCHEDULES: dict[str, tuple[str, ...]] = {
    "daily": ("ttl_cleanup", "partition_rotation", "backup_refresh", "known_good_snapshot"),
    "weekly": ("static_scan",),  # the scan SEC-007 reads; the weekly reviews are checks: see SUITE_RUNS
    "monthly": ("key_rotation", "restore_test"),
}
# the suite runs a schedule starts (through opsproof.runner, like `opsproof daily`): (run kind / marker, extra args)
SUITE_RUNS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "daily": (),  # `opsproof daily` runs the daily controls after this cadence
    "weekly": (("weekly", ("--opsproof-window=7d",)), ("drill", ())),
    "monthly": (("monthly", ("--opsproof-window=30d",)),),
}


def tasks_of(schedule: str, target: str = "embedded") -> list[str]:
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown cadence {schedule!r} (daily, weekly, monthly)")
    return [n for n in SCHEDULES[schedule] if target == "embedded" or TASKS[n][3]]


def run(c: CadenceContext, schedule: str, only: list[str] | None = None, log=print) -> list[dict]:
    """Every task of the schedule (or `only` those): one journal entry each, one audit row each; a failing task
    never stops the others. A rehearsal that finds something wrong is `fail`; a task that could not run is `error`."""
    names = tasks_of(schedule, c.target)
    unknown = [o for o in (only or []) if o not in SCHEDULES.get(schedule, ())]
    if unknown:
        listed = ", ".join(SCHEDULES[schedule]) or "none: the weekly reviews are checks"
        raise UsageError(f"unknown {schedule} task(s) {unknown} (one of: {listed})")
    out = []
    for name in names:
        if only and name not in only:
            continue
        fn, kind, title, _ = TASKS[name]
        t0 = time.monotonic()
        started = clock.now()
        try:
            rec = fn(c)
            verdict = rec.pop("verdict", None) or ("pass" if rec.get("ok") else "fail")
        except TaskFailed as exc:
            rec, verdict = {"summary": str(exc)}, "fail"
        except OpsproofError as exc:
            rec, verdict = {"summary": str(exc)}, "error"
        except Exception as exc:  # noqa: BLE001 - a task's crash: it could not run; the run goes on
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            rec, verdict = {"summary": f"{type(exc).__name__}: {first}"}, "error"
        rec.pop("ok", None)
        entry = {"id": f"cadence/{schedule}/{name}", "title": title, "kind": kind, "area": "cadence",
                 "severity": "medium", "frameworks": {}, "nodeid": None, "verdict": verdict,
                 "message": rec.pop("summary", ""), "records": rec.pop("records", []),
                 "duration_s": round(time.monotonic() - t0, 3), "waiver": None,
                 "task": name, "schedule": schedule, "run_id": c.run_id, "started": started.isoformat(), "detail": rec}
        try:
            with connection(c.dsn) as conn:
                audit(conn, action=f"cadence.{name}", target=f"cadence/{schedule}",
                      reason=f"{verdict}: {entry['message']}"[:500], run_id=c.run_id, actor=ACTOR,
                      detail={"verdict": verdict, "duration_s": entry["duration_s"], "schedule": schedule})
            entry["audited"] = True
        except Exception as exc:  # noqa: BLE001 - an unaudited task is not a clean one
            entry["audited"] = False
            if entry["verdict"] == "pass":
                entry["verdict"] = "error"
            entry["message"] += f" (audit row not written: {type(exc).__name__})"
        log(f"{entry['verdict'].upper():5} {schedule}/{name} ({entry['duration_s']}s): {entry['message']}")
        out.append(entry)
    return out


# == evidence ======================================================================================

def journal(schedule: str, run_id: str, entries: list[dict], day: date, target: dict | None = None) -> dict:
    """cadence/<schedule>/results.json: the entries in the shared journal shape (opsproof.journal.RunJournal)."""
    from opsproof import journal as journal_mod

    verdict, green = journal_mod.run_verdict(entries, interrupted=False, not_run=[])
    return journal_mod.validate({
        "suite": f"cadence-{schedule}", "run_id": run_id, "date": day.isoformat(), "verdict": verdict, "green": green,
        "summary": journal_mod.summarize(entries), "controls": entries, "target": target})


def write_pack(root: Path, schedule: str, run_id: str, entries: list[dict], metadata: dict, secrets: list[str],
               *, artifacts: dict[str, Any] | None = None, signer=None, day: date | None = None) -> Path:
    """cadence/<schedule>/results.json (the journal), cadence/<schedule>/<task>.json and any artifacts into the
    day's pack through the one pack writer (evidence/daypack.py: lock, current pack re-read and verified, other
    kinds' files kept, secrets refused, signed)."""
    from opsproof.evidence import daypack

    day = day or clock.today()
    with daypack.open_day(root, day, f"cadence-{schedule}", run_id) as part:
        if entries:
            part.add_json(part.name("results", "json"), journal(schedule, run_id, entries, day,
                                                                metadata.get("target_detail")))
        for e in entries:
            part.add_json(part.name(e["task"], "json"), e)
        for name, content in sorted((artifacts or {}).items()):
            stem, _, ext = name.partition(".")
            if isinstance(content, (dict, list)):
                part.add_json(part.name(stem, ext or "json"), content)
            else:
                part.add_text(part.name(stem, ext or "txt"), str(content))
        return part.commit({**metadata, "schedule": schedule, "run_id": run_id}, secrets=secrets, signer=signer)

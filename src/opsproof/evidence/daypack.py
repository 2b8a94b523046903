"""The one writer of a day's evidence pack: every run kind declares the files it owns in `<root>/YYYY-MM-DD/`.

    run = open_day(root, day, "weekly", run_id)        # a staging dir; nothing of today's pack is touched yet
    run.add_json(run.name("results", "json"), doc)      # -> results-weekly.json (the kind's own namespace)
    run.add_json(run.artifact_name("flags.json"), {...})  # -> weekly/flags.json
    path = run.commit(metadata, secrets=settings.secret_values(), signer=signer)

`commit` takes the evidence root's lock (`.amend.lock`), re-reads the pack as it is NOW (another kind may have
committed since `open_day`), refuses to amend a current pack that does not verify, carries over every file this
kind does not own, replaces this kind's own files, keeps the other kinds' metadata (`metadata["runs"][kind]`)
and seals through `PackWriter` (manifest, previous-day link, secrets refusal, signature).

Who owns what (RUN_KINDS):
- daily: the un-suffixed top level -- results.json, report.html, junit.xml, allure-results/, allure-report/, its
  artifacts (flags.json, slo_snapshot.json, ...), and any other un-suffixed top-level file no other kind claims;
- gate, drill, acceptance, weekly, monthly: `<base>-<kind>.<ext>` and `<dir>-<kind>/` at the top level
  (results-gate.json, allure-results-drill/...) and their own folder `<kind>/` (their artifacts: gate/flags.json);
  drill also drills/, acceptance also acceptance.json;
- cadence-daily|weekly|monthly: cadence/<schedule>/ only;
- adhoc (anything partial): adhoc/<run_id>/ only -- it never replaces another kind's files.
manifest.json, manifest.sig and pubkey.pem belong to nobody: commit writes them.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from opsproof import clock
from opsproof.evidence.common import MANIFEST, EvidenceError, is_tar_pack, walk_dir
from opsproof.evidence.pack import PackWriter, _safe_name, sanitize_host
from opsproof.evidence.secrets import Secrets
from opsproof.evidence.signing import SEAL_FILES, Signer

LOCK = ".amend.lock"
RESERVED = frozenset({MANIFEST, *SEAL_FILES})
DAILY_ARTIFACTS = ("flags.json", "slo_snapshot.json", "outbox_lag.json", "alerts.sql.out", "trace-sample.txt",
                   "audit_digest.json", "audit_anchor.json", "advisors.json", "rls_matrix.json",
                   "portal_matrix.json", "telemetry_freshness.json")
SUFFIXED = ("gate", "drill", "acceptance", "weekly", "monthly")  # kinds that own `<base>-<kind>...` names
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RunKind:
    name: str
    files: tuple[str, ...] = ()        # exact pack-relative names
    dirs: tuple[str, ...] = ()         # folders (everything under them); "{run_id}" is filled in
    suffix: str | None = None          # owns top-level `<base>-<suffix>.<ext>` files and `<dir>-<suffix>/` folders
    top_level: bool = False            # owns every other un-suffixed top-level file no other kind claims (daily)


RUN_KINDS: dict[str, RunKind] = {
    "daily": RunKind("daily", files=("results.json", "report.html", "junit.xml", *DAILY_ARTIFACTS),
                     dirs=("allure-results", "allure-report"), top_level=True),
    "gate": RunKind("gate", dirs=("gate",), suffix="gate"),
    "drill": RunKind("drill", dirs=("drill", "drills"), suffix="drill"),
    "acceptance": RunKind("acceptance", files=("acceptance.json",), dirs=("acceptance",), suffix="acceptance"),
    "weekly": RunKind("weekly", dirs=("weekly",), suffix="weekly"),
    "monthly": RunKind("monthly", dirs=("monthly",), suffix="monthly"),
    "cadence-daily": RunKind("cadence-daily", dirs=("cadence/daily",)),
    "cadence-weekly": RunKind("cadence-weekly", dirs=("cadence/weekly",)),
    "cadence-monthly": RunKind("cadence-monthly", dirs=("cadence/monthly",)),
    "adhoc": RunKind("adhoc", dirs=("adhoc/{run_id}",)),
}


def _top_stem(rel: str) -> tuple[str, bool]:
    """('results-gate', False) for 'results-gate.json'; ('allure-results-gate', True) for 'allure-results-gate/x'."""
    first, _, rest = rel.partition("/")
    return (first, True) if rest else (first.split(".", 1)[0], False)


def _suffix_of(rel: str) -> str | None:
    stem, _ = _top_stem(rel)
    for k in SUFFIXED:
        if stem.endswith(f"-{k}") and len(stem) > len(k) + 1:
            return k
    return None


def _claimed_explicitly(kind: RunKind, rel: str, run_id: str | None) -> bool:
    if rel in kind.files:
        return True
    for d in kind.dirs:
        if "{run_id}" in d:
            if not run_id:
                continue
            d = d.format(run_id=run_id)
        if rel.startswith(d + "/"):
            return True
    return False


def owns(kind: str, rel: str, run_id: str | None = None) -> bool:
    """Does a run of `kind` (adhoc: with this run id) own the pack-relative name `rel`?"""
    k = RUN_KINDS[kind]
    if rel in RESERVED:
        return False
    if _claimed_explicitly(k, rel, run_id):
        return True
    if k.suffix is not None and _suffix_of(rel) == k.suffix:
        return True
    if k.top_level and "/" not in rel and _suffix_of(rel) is None:
        # any other un-suffixed top-level file, unless another kind names it (acceptance.json)
        return not any(rel in other.files for n, other in RUN_KINDS.items() if n != kind)
    return False


def kind_name(kind: str, run_id: str, base: str, ext: str | None = None) -> str:
    """A kind's name for a report/results file: daily 'results.json', gate 'results-gate.json',
    cadence-weekly 'cadence/weekly/results.json', adhoc 'adhoc/<run_id>/results.json'."""
    k = RUN_KINDS[kind]
    if k.top_level:
        stem = base
    elif k.suffix:
        stem = f"{base}-{k.suffix}"
    else:
        stem = f"{k.dirs[0].format(run_id=run_id)}/{base}"
    return f"{stem}.{ext}" if ext else stem


def kind_artifact_name(kind: str, run_id: str, name: str) -> str:
    """Where an artifact a check names (e.g. 'flags.json', 'drills/x.json') goes for a kind: as named when the
    kind owns that name, else in the kind's own folder ('gate/flags.json', 'cadence/weekly/x.json',
    'adhoc/<run_id>/flags.json')."""
    rel = _safe_name(name)
    if owns(kind, rel, run_id):
        return rel
    return f"{RUN_KINDS[kind].dirs[0].format(run_id=run_id)}/{rel}"


class DayPackRun:
    """One run's part of a day's pack: staged while the run goes, merged into the pack as it is at commit."""

    def __init__(self, root: Path | str, day: date, kind: str, run_id: str):
        if kind not in RUN_KINDS:
            raise EvidenceError(f"unknown run kind {kind!r} (one of {', '.join(RUN_KINDS)})")
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise EvidenceError(f"bad run id {run_id!r}: letters, digits, '_', '.', '-' (at most 64)")
        self.root = Path(root)
        self.day = day
        self.kind = kind
        self.run_id = run_id
        self._writer = PackWriter(self.root, day, run_id=run_id)
        self.staging: Path = Path(self._writer.staging)

    # -- names ------------------------------------------------------------------------------------
    def owns(self, rel: str) -> bool:
        return owns(self.kind, rel, self.run_id)

    def name(self, base: str, ext: str | None = None) -> str:
        return kind_name(self.kind, self.run_id, base, ext)

    def artifact_name(self, name: str) -> str:
        return kind_artifact_name(self.kind, self.run_id, name)

    def _own(self, name: str) -> str:
        rel = _safe_name(name)
        if not self.owns(rel):
            raise EvidenceError(f"a {self.kind} run does not own {rel!r} in the day's pack "
                                f"(use run.name()/run.artifact_name())")
        return rel

    # -- writing ----------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A staging path to write into directly (parents created), e.g. for pytest-html's report."""
        return self._writer.path(self._own(name))

    def add_json(self, name: str, obj: Any) -> Path:
        return self._writer.add_json(self._own(name), obj)

    def add_text(self, name: str, text: str) -> Path:
        return self._writer.add_text(self._own(name), text)

    def add_bytes(self, name: str, data: bytes) -> Path:
        return self._writer.add_bytes(self._own(name), data)

    def add_file(self, name: str, src: Path | str) -> Path:
        return self._writer.add_file(self._own(name), src)

    def files(self) -> list[str]:
        return self._writer.files()

    # -- ending -----------------------------------------------------------------------------------
    def abort(self) -> None:
        self._writer.abort()

    def __enter__(self) -> "DayPackRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer._state == "open":
            self.abort()

    def commit(self, metadata: dict | None = None, secrets: Secrets | None = None, signer: Signer | None = None,
               *, trusted: list | None = None, scrub: bool = False) -> Path:
        """Merge this run into the day's pack as it is now, under the evidence root's lock; returns the pack dir.
        Raises EvidenceError (staging removed, today's pack untouched) when a staged file is not this kind's,
        when the current pack does not verify (it is not re-sealed), or when anything holds a secret."""
        try:
            foreign = [rel for rel in self._writer.files() if not self.owns(rel)]
            if foreign:
                raise EvidenceError(f"a {self.kind} run staged {foreign[0]!r}, which it does not own"
                                    + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""))
            with evidence_lock(self.root):
                current = self.root / self.day.isoformat()
                prior = _read_current(current, trusted)
                was_signed = False
                if prior is not None:
                    was_signed = any((current / s).is_file() for s in SEAL_FILES)
                    for rel, src in walk_dir(current):
                        if rel in RESERVED or self.owns(rel):
                            continue
                        dst = self.staging / rel
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, dst, follow_symlinks=False)
                if signer is None and was_signed:
                    from opsproof.evidence.signing import existing_signer

                    signer = existing_signer()  # keep a signed pack signed
                meta = merge_metadata(prior or {}, self.kind, self.run_id, dict(metadata or {}),
                                      sorted(r for r in self._writer.files() if self.owns(r)))
                return self._writer.commit(meta, secrets=secrets, signer=signer, scrub=scrub)
        except BaseException:
            self._writer.abort()
            raise


def open_day(root: Path | str, day: date | None, kind: str, run_id: str) -> DayPackRun:
    """Start a run's part of `day`'s pack (default today) under `root`. Nothing of the pack is read or touched
    until `commit`."""
    return DayPackRun(root, day or clock.today(), kind, run_id)


@contextmanager
def evidence_lock(root: Path | str) -> Iterator[None]:
    """The evidence root's writer lock (`<root>/.amend.lock`, fcntl): every commit of a day's pack holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_current(current: Path, trusted: list | None) -> dict | None:
    """The current pack's manifest metadata (None when there is no pack yet); EvidenceError when it is not a
    directory pack or does not verify: a pack that does not verify is never amended (that would re-seal it)."""
    if not (current.exists() or current.is_symlink()):
        return None
    if is_tar_pack(current) or current.is_symlink() or not current.is_dir():
        raise EvidenceError(f"evidence pack {current.name} is not a directory; not amending it")
    from opsproof.evidence.verify import verify_pack  # verify imports pack; keep the import graph flat

    result = verify_pack(current, trusted)
    if not result.ok:
        raise EvidenceError(f"today's evidence pack {current.name} does not verify ({result.first_problem}); "
                            "not amending it")
    try:
        meta = json.loads((current / MANIFEST).read_text(encoding="utf-8")).get("metadata")
    except (OSError, ValueError):
        meta = None
    return meta if isinstance(meta, dict) else {}


_RUN_ONLY = ("files", "committed", "kind")


def merge_metadata(prior: dict, kind: str, run_id: str, metadata: dict, files: list[str]) -> dict:
    """The pack's metadata after this run: `runs` keeps every kind's own metadata (adhoc runs by run id); the
    top-level keys (target, host, suite, green, policy_sha256 ... what verify, retention and the anchor read)
    are the daily run's when there is one, else this run's."""
    runs = dict(prior.get("runs") or {}) if isinstance(prior.get("runs"), dict) else {}
    if prior and not runs:  # a pack written before run kinds were recorded: keep its metadata as that run's
        legacy = {k: v for k, v in prior.items() if k != "amendments"}
        runs[str(legacy.get("suite") or "legacy")] = legacy
    this = dict(metadata)
    this.setdefault("run_id", run_id)
    if "host" in this:
        this["host"] = sanitize_host(this["host"])
    this.update(kind=kind, committed=clock.now().isoformat(), files=files)
    runs[kind if kind != "adhoc" else f"adhoc/{run_id}"] = this
    primary = runs.get("daily") if isinstance(runs.get("daily"), dict) else this
    top = {k: v for k, v in primary.items() if k not in _RUN_ONLY}
    if "amendments" in prior:
        top["amendments"] = prior["amendments"]
    top["runs"] = runs
    return top


__all__ = ["DAILY_ARTIFACTS", "LOCK", "RUN_KINDS", "DayPackRun", "RunKind", "evidence_lock", "merge_metadata",
           "open_day", "owns"]

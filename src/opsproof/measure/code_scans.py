"""Code scans of the TMS's repository (read-only): SARIF 2.1.0 files, GitHub code/secret scanning, detect-secrets.

Every reading says what it read (`query`: the files, endpoints or command), which tool scanned, when it scanned
(`scanned_at` and where that time came from) and the open findings by severity. A finding carries the rule id,
the file and the line, never a secret: SARIF messages and snippets (gitleaks puts the secret in the snippet), the
`secret` field of GitHub's secret scanning alerts and detect-secrets' matched text are dropped where they are
read; detect-secrets' `hashed_secret` (a SHA-1, what its baselines hold) identifies a finding.

Severity: SARIF `properties.security-severity` (CVSS, as CodeQL and GitHub use it: >= 9 critical, >= 7 high,
>= 4 medium, else low) wins over `level` (error -> high, warning -> medium, note -> low; `none` is no finding).
Any finding of a secrets scanner is a secret (severity critical).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import httpx

from opsproof import clock
from opsproof.recorder import MeasurementError

SEVERITIES = ("critical", "high", "medium", "low")
LEVEL_SEVERITY = {"error": "high", "warning": "medium", "note": "low"}
# tools whose every finding is a secret (matched against the lower-cased tool/driver name)
SECRET_TOOLS = ("gitleaks", "trufflehog", "detect-secrets", "detect_secrets", "ggshield", "gitguardian",
                "secretlint", "talisman", "noseyparker", "nosey parker", "kingfisher", "secret scanning")
GITHUB_API = "https://api.github.com"
MAX_PAGES = 20
SKIP_DIRS = {".git"}


@dataclass(frozen=True)
class Finding:
    tool: str
    rule_id: str
    severity: str
    file: str = ""
    line: int | None = None
    rule: str = ""            # the rule's short description (tool metadata, never the result's message)
    ref: str = ""             # alert URL/number, SARIF fingerprint or detect-secrets' hashed_secret

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


@dataclass
class ScanReading:
    source: str               # sarif | github-code-scanning | github-secret-scanning | detect-secrets
    query: str                # the file(s), endpoint(s) or command that were read/run
    tool: str
    kind: str                 # static | secrets
    scanned_at: datetime | None
    timestamp_source: str     # where scanned_at came from (or why there is none)
    findings: list[Finding] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    label: str = ""           # a short name for records: tool + where it came from

    def __post_init__(self) -> None:
        self.label = self.label or self.tool

    def by_severity(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            counts[f.severity] = counts.get(f.severity, 0) + 1
        return counts

    def age_days(self, now: datetime | None = None) -> float | None:
        if self.scanned_at is None:
            return None
        now = now or clock.now()
        return round((now - self.scanned_at).total_seconds() / 86400, 3)

    def evidence(self, now: datetime | None = None, limit: int = 50) -> dict[str, Any]:
        return {"source": self.source, "tool": self.tool, "label": self.label, "kind": self.kind, "query": self.query,
                "scanned_at": self.scanned_at.isoformat() if self.scanned_at else None,
                "timestamp_source": self.timestamp_source, "age_days": self.age_days(now),
                "open_by_severity": self.by_severity(), "open_findings": len(self.findings),
                "findings": [f.as_dict() for f in self.findings[:limit]], "detail": self.detail}


def is_secrets_tool(name: str) -> bool:
    low = name.lower()
    return any(t in low for t in SECRET_TOOLS)


def severity_of(level: str | None, security_severity: Any = None) -> str | None:
    """CodeQL's `security-severity` (CVSS) when present, else the SARIF level; None = not a finding."""
    if security_severity not in (None, ""):
        try:
            score = float(security_severity)
        except (TypeError, ValueError):
            score = None
        if score is not None:
            return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"
    return LEVEL_SEVERITY.get(str(level or "warning").lower())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


# -- SARIF files -------------------------------------------------------------------------------------------------

def _components(run: dict) -> list[dict]:
    """[driver, *extensions] (CodeQL keeps its rules in the query packs, i.e. the extensions)."""
    tool = run.get("tool") or {}
    return [tool.get("driver") or {}, *(e for e in tool.get("extensions") or [] if isinstance(e, dict))]


def _result_rule(result: dict, components: list[dict]) -> tuple[str, dict]:
    ref = result.get("rule") if isinstance(result.get("rule"), dict) else {}
    rule_id = result.get("ruleId") or ref.get("id") or ""
    idx = result.get("ruleIndex", ref.get("index"))
    comp_idx = (ref.get("toolComponent") or {}).get("index")
    comp = components[comp_idx + 1] if isinstance(comp_idx, int) and 0 <= comp_idx < len(components) - 1 \
        else components[0]
    rules = [r for r in comp.get("rules") or [] if isinstance(r, dict)]
    rule: dict = {}
    if isinstance(idx, int) and 0 <= idx < len(rules) and (not rule_id or rules[idx].get("id") == rule_id):
        rule = rules[idx]
    if not rule:
        rule = next((r for c in components for r in c.get("rules") or []
                     if isinstance(r, dict) and rule_id and r.get("id") == rule_id), {})
    return rule_id or rule.get("id") or "<no rule id>", rule


def _is_open(result: dict) -> bool:
    if result.get("kind", "fail") != "fail":          # pass, notApplicable, informational, review, open
        return False
    if result.get("baselineState") == "absent":        # fixed since the baseline
        return False
    for s in result.get("suppressions") or []:
        if isinstance(s, dict) and s.get("status", "accepted") == "accepted":
            return False
    return True


def _location(result: dict) -> tuple[str, int | None]:
    for loc in result.get("locations") or []:
        phys = (loc or {}).get("physicalLocation") or {}
        uri = (phys.get("artifactLocation") or {}).get("uri") or ""
        line = (phys.get("region") or {}).get("startLine")
        return uri, line if isinstance(line, int) else None
    return "", None


def _short(rule: dict) -> str:
    for key in ("shortDescription", "fullDescription"):
        text = (rule.get(key) or {}).get("text")
        if text:
            return str(text)[:160]
    return str(rule.get("name") or "")[:160]


def _fingerprint(result: dict) -> str:
    for key in ("partialFingerprints", "fingerprints"):
        fps = result.get(key) or {}
        if isinstance(fps, dict) and fps:
            k = sorted(fps)[0]
            return f"{k}={fps[k]}"
    return ""


def read_sarif(path: Path | str) -> list[ScanReading]:
    """One reading per SARIF run of the file. Not SARIF 2.1.0, unreadable or without runs: MeasurementError."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise MeasurementError(f"cannot read SARIF {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MeasurementError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or str(doc.get("version")) != "2.1.0":
        version = doc.get("version") if isinstance(doc, dict) else "?"
        raise MeasurementError(f"{path} is not SARIF 2.1.0 (version {version!r})")
    runs = doc.get("runs")
    if not isinstance(runs, list) or not runs:
        raise MeasurementError(f"{path}: SARIF without runs (the scanner did not run)")
    readings = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise MeasurementError(f"{path}: run {i} is not an object")
        driver = (run.get("tool") or {}).get("driver") or {}
        tool = str(driver.get("name") or "").strip()
        if not tool:
            raise MeasurementError(f"{path}: run {i} names no tool (tool.driver.name)")
        secrets = is_secrets_tool(tool)
        times, failed = [], []
        for inv in run.get("invocations") or []:
            t = _parse_time((inv or {}).get("endTimeUtc")) or _parse_time((inv or {}).get("startTimeUtc"))
            if t:
                times.append(t)
            if (inv or {}).get("executionSuccessful") is False:
                failed.append(inv.get("exitCodeDescription") or inv.get("exitCode") or "executionSuccessful=false")
        components = _components(run)
        findings, closed = [], 0
        for res in run.get("results") or []:
            if not isinstance(res, dict):
                continue
            if not _is_open(res):
                closed += 1
                continue
            rule_id, rule = _result_rule(res, components)
            if secrets:
                sev = "critical"
            else:
                level = res.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
                sec = (res.get("properties") or {}).get("security-severity",
                                                        (rule.get("properties") or {}).get("security-severity"))
                sev = severity_of(level, sec)
                if sev is None:
                    closed += 1
                    continue
            file, line = _location(res)
            findings.append(Finding(tool=tool, rule_id=rule_id, severity=sev, file=file, line=line,
                                    rule=_short(rule), ref=_fingerprint(res)))
        readings.append(ScanReading(
            source="sarif", query=f"{path} (runs[{i}])", tool=tool, kind="secrets" if secrets else "static",
            scanned_at=max(times) if times else None,
            timestamp_source="invocations[].endTimeUtc/startTimeUtc" if times else
            "none: the run has no invocations[].endTimeUtc/startTimeUtc (the file's mtime proves nothing)",
            findings=findings,
            detail={"tool_version": driver.get("semanticVersion") or driver.get("version"),
                    "results_total": len(run.get("results") or []), "not_open": closed,
                    "automation": (run.get("automationDetails") or {}).get("id"),
                    "execution_failed": failed},
            label=f"{tool} ({path.name}" + (f" run {i})" if len(runs) > 1 else ")")))
    return readings


def sarif_files(patterns: Iterable[str], base: Path) -> tuple[list[Path], list[str]]:
    """The files the policy's globs match (relative to `base`) and the globs that matched nothing."""
    files: list[Path] = []
    unmatched: list[str] = []
    for pat in patterns:
        full = pat if os.path.isabs(pat) else str(base / pat)
        hits = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
        if not hits:
            unmatched.append(pat)
        files.extend(h for h in hits if h not in files)
    return files, unmatched


def read_sarif_globs(patterns: Iterable[str], base: Path) -> list[ScanReading]:
    """Every run of every configured SARIF file; a glob that matches nothing is an error (no scan to show)."""
    files, unmatched = sarif_files(patterns, base)
    if unmatched:
        raise MeasurementError(f"no SARIF file matches {unmatched} (relative to {base}): "
                               "cannot show that the configured scanners ran")
    return [r for f in files for r in read_sarif(f)]


# -- GitHub code scanning and secret scanning (REST) -------------------------------------------------------------

class GitHub:
    """A read-only GitHub REST client; the token comes from the environment variable the policy names."""

    def __init__(self, repo: str, token_env: str, api: str = GITHUB_API, timeout: float = 30.0):
        if not repo or repo.count("/") != 1:
            raise MeasurementError(f"github_repo must be owner/name, got {repo!r}")
        token = os.environ.get(token_env, "")
        if not token:
            raise MeasurementError(f"${token_env} is not set: cannot read {repo}'s code scanning "
                                   f"(a token with security_events read access)")
        self.repo, self.token_env, self.api = repo, token_env, api.rstrip("/")
        self._client = httpx.Client(base_url=self.api, timeout=timeout, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "opsproof"})
        self.queries: list[str] = []

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "GitHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            resp = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise MeasurementError(f"GET {self.api}{path}: {type(exc).__name__}: {exc}") from None
        self.queries.append(f"GET {resp.request.url}")
        if resp.status_code != 200:
            try:
                msg = resp.json().get("message", "")
            except (ValueError, AttributeError):
                msg = resp.text[:200]
            raise MeasurementError(f"GET {resp.request.url} -> HTTP {resp.status_code}: {msg}")
        return resp

    def _list(self, path: str, params: dict[str, Any]) -> list[dict]:
        out: list[dict] = []
        resp = self._get(path, {**params, "per_page": 100})
        for _ in range(MAX_PAGES):
            page = resp.json()
            if not isinstance(page, list):
                raise MeasurementError(f"GET {resp.request.url}: expected a list, got {type(page).__name__}")
            out.extend(p for p in page if isinstance(p, dict))
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return out
            resp = self._get(nxt)
        raise MeasurementError(f"GET {path}: more than {MAX_PAGES} pages; refusing a partial count")

    def default_branch(self) -> str:
        branch = self._get(f"/repos/{self.repo}").json().get("default_branch")
        if not branch:
            raise MeasurementError(f"GET /repos/{self.repo}: no default_branch in the answer")
        return branch

    def code_scanning(self, ref: str | None = None) -> list[ScanReading]:
        """One reading per tool: its newest successful analysis of each category on the default branch (the
        reading's time is the oldest of those), with the tool's open alerts."""
        ref = ref or f"refs/heads/{self.default_branch()}"
        analyses = self._list(f"/repos/{self.repo}/code-scanning/analyses", {"ref": ref})
        alerts = self._list(f"/repos/{self.repo}/code-scanning/alerts", {"state": "open", "ref": ref})
        newest: dict[tuple[str, str], dict] = {}
        errored = 0
        for a in analyses:
            if a.get("error"):
                errored += 1
                continue
            tool = (a.get("tool") or {}).get("name") or a.get("tool_name") or "<unnamed tool>"
            key = (tool, a.get("category") or a.get("analysis_key") or "")
            t = _parse_time(a.get("created_at"))
            if t and (key not in newest or t > newest[key]["_t"]):
                newest[key] = {**a, "_t": t}
        tools = sorted({k[0] for k in newest} | {(a.get("tool") or {}).get("name") or "<unnamed tool>"
                                                 for a in alerts})
        query = "; ".join(self.queries)
        readings = []
        for tool in tools:
            cats = {k[1]: v for k, v in newest.items() if k[0] == tool}
            secrets = is_secrets_tool(tool)
            findings = []
            for al in alerts:
                if ((al.get("tool") or {}).get("name") or "<unnamed tool>") != tool:
                    continue
                rule = al.get("rule") or {}
                inst = al.get("most_recent_instance") or {}
                loc = inst.get("location") or {}
                sev = "critical" if secrets else (
                    rule.get("security_severity_level") if rule.get("security_severity_level") in SEVERITIES
                    else LEVEL_SEVERITY.get(str(rule.get("severity") or "warning").lower(), "low"))
                findings.append(Finding(tool=tool, rule_id=str(rule.get("id") or "<no rule id>"), severity=sev,
                                        file=loc.get("path") or "", line=loc.get("start_line"),
                                        rule=str(rule.get("description") or "")[:160],
                                        ref=str(al.get("html_url") or al.get("number") or "")))
            readings.append(ScanReading(
                source="github-code-scanning", query=query, tool=tool, kind="secrets" if secrets else "static",
                scanned_at=min(v["_t"] for v in cats.values()) if cats else None,
                timestamp_source=(f"code-scanning/analyses created_at (oldest of the newest per category, {ref})"
                                  if cats else f"none: no successful analysis of {tool} on {ref}"),
                findings=findings,
                detail={"repo": self.repo, "ref": ref, "errored_analyses": errored,
                        "categories": {c or "<default>": {"created_at": v.get("created_at"),
                                                          "commit_sha": v.get("commit_sha"),
                                                          "results_count": v.get("results_count")}
                                       for c, v in sorted(cats.items())}},
                label=f"{tool} (GitHub code scanning)"))
        return readings

    def secret_scanning(self) -> ScanReading:
        """GitHub secret scanning's open alerts (the alert's `secret` is dropped here, never stored)."""
        n = len(self.queries)
        alerts = self._list(f"/repos/{self.repo}/secret-scanning/alerts", {"state": "open"})
        findings = [Finding(tool="GitHub secret scanning", rule_id=str(a.get("secret_type") or "<unknown type>"),
                            severity="critical", rule=str(a.get("secret_type_display_name") or "")[:160],
                            ref=str(a.get("html_url") or a.get("number") or ""))
                    for a in alerts]
        return ScanReading(
            source="github-secret-scanning", query="; ".join(self.queries[n:]), tool="GitHub secret scanning",
            kind="secrets", scanned_at=clock.now(),
            timestamp_source="read now (GitHub scans every push continuously; the alert list is current)",
            findings=findings,
            detail={"repo": self.repo, "alerts": [{"number": a.get("number"), "secret_type": a.get("secret_type"),
                                                   "created_at": a.get("created_at"), "validity": a.get("validity")}
                                                  for a in alerts[:50]]})


# -- detect-secrets, run by opsproof -----------------------------------------------------------------------------

def _count_files(root: Path) -> int:
    n = 0
    for _dir, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        n += len(files)
    return n


def detect_secrets_version() -> str:
    try:
        from detect_secrets.__version__ import VERSION

        return str(VERSION)
    except ImportError:
        raise MeasurementError("detect-secrets is not installed (pip install detect-secrets)") from None


def run_detect_secrets(path: Path | str, baseline: Path | str | None = None, timeout: float = 600.0) -> ScanReading:
    """`detect-secrets scan --all-files` over `path` (a real scan, its own plugins and filters; .git/ skipped).

    With a baseline (detect-secrets' `.secrets.baseline`), a copy of it is scanned against so that its plugin and
    filter settings apply and its audit labels carry over; the baseline itself is never written. A finding is
    accepted only when the baseline audited it as not a secret (`is_secret: false`); an unaudited baseline entry
    still counts as open.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise MeasurementError(f"secrets scan path {root} is not a directory")
    files = _count_files(root)
    if files == 0:
        raise MeasurementError(f"secrets scan path {root} holds no files: a clean scan of nothing proves nothing")
    version = detect_secrets_version()
    excludes = [r"(^|/)\.git/"]
    bl_path = Path(baseline).resolve() if baseline else None
    bl_hashes: set[str] = set()
    if bl_path is not None:
        if not bl_path.is_file():
            raise MeasurementError(f"secrets baseline {bl_path} not found")
        try:
            bl_doc = json.loads(bl_path.read_text())
            bl_hashes = {str(it.get("hashed_secret")) for items in bl_doc["results"].values() for it in items}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MeasurementError(f"secrets baseline {bl_path} is not a detect-secrets baseline: {exc}") from None
        if bl_path.is_relative_to(root):
            excludes.append(r"(^|/)" + re.escape(bl_path.relative_to(root).as_posix()) + "$")
    cmd = [sys.executable, "-m", "detect_secrets", "scan", "--all-files"]
    for ex in excludes:
        cmd += ["--exclude-files", ex]
    shown = f"detect-secrets {version} scan --all-files " + " ".join(f"--exclude-files '{e}'" for e in excludes)
    with tempfile.TemporaryDirectory(prefix="opsproof-ds-") as tmp:
        copy = Path(tmp) / "baseline.json"
        if bl_path is not None:
            copy.write_bytes(bl_path.read_bytes())
            cmd += ["--baseline", str(copy)]
            shown += f" --baseline <copy of {bl_path}>"
        cmd.append(".")
        shown += f" {root}"
        try:
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MeasurementError(f"{shown}: still running after {timeout:.0f} s") from None
        if proc.returncode != 0:
            # stderr may quote a line of a scanned file; keep only its last line, shortened
            last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            raise MeasurementError(f"{shown}: exit {proc.returncode}: {last}")
        try:
            doc = json.loads(copy.read_text() if bl_path is not None else proc.stdout)
            results = doc["results"]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise MeasurementError(f"{shown}: unreadable output ({type(exc).__name__})") from None
    findings, accepted = [], []
    for fname, items in sorted(results.items()):
        for it in items:
            f = Finding(tool="detect-secrets", rule_id=str(it.get("type") or "<unknown type>"), severity="critical",
                        file=str(it.get("filename") or fname), line=it.get("line_number"),
                        ref=f"hashed_secret={it.get('hashed_secret', '')}")
            (accepted if it.get("is_secret") is False else findings).append(f)
    return ScanReading(
        source="detect-secrets", query=shown, tool="detect-secrets", kind="secrets",
        scanned_at=clock.now(), timestamp_source="run by opsproof now",
        findings=findings,
        detail={"path": str(root), "files": files, "version": version,
                "baseline": str(bl_path) if bl_path else None,
                "accepted_by_baseline_audit": [a.as_dict() for a in accepted[:50]],
                "unaudited_in_baseline": sum(1 for f in findings if f.ref.removeprefix("hashed_secret=") in bl_hashes)},
        label=f"detect-secrets ({root.name})")

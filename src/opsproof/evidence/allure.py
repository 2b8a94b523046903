"""Allure HTML from a pack's allure-results with the pinned Allure 3 CLI (npm `allure`, package.json).

Allure 3: `allure generate <results> -o <out>` makes a static folder (index.html + assets);
`allure awesome <results> -o <out> --single-file [--history-path H]` makes one self-contained index.html
(what a pack keeps: `single_file()`), with the run appended to the history file H (trends across days).
(`allure quality-gate` crashes on Node 20: not used.)
"""

from __future__ import annotations

import os
import re
import secrets as _random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opsproof.paths import project_dir

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Allure 3's awesome template always embeds Google Analytics (gtag): an evidence file opened offline by an
# auditor must not call out to a third party
_GTAG = re.compile(r'<script async src="https://www\.googletagmanager\.com/[^"]*"></script>\s*'
                   r"<script>\s*window\.dataLayer.*?</script>", re.S)


def strip_analytics(page: str) -> str:
    return _GTAG.sub("", page)


@dataclass
class AllureResult:
    """Truthy when the report was generated; `reason` says why not (one line)."""

    ok: bool
    reason: str = ""
    out_dir: Path | None = None

    def __bool__(self) -> bool:
        return self.ok


def allure_bin(project: Path | None = None) -> Path:
    return (project or project_dir()) / "node_modules" / ".bin" / "allure"


def generate(results_dir: Path | str, out_dir: Path | str, *, single_file: bool = False,
             timeout: float = 300, project: Path | None = None, history: Path | str | None = None,
             title: str | None = None) -> AllureResult:
    """Generate the Allure report of results_dir into out_dir (replaced if present). Never raises for a
    missing tool or a failed run: returns a falsy AllureResult with the reason.

    single_file: `allure awesome --single-file` (one self-contained index.html that opens from file://);
    history: the jsonl file Allure 3 reads and appends run history to (trends across days; awesome only);
    title: the report's name. Behaviors are grouped area (epic) -> control id (feature)."""
    results, out = Path(results_dir).resolve(), Path(out_dir).resolve()
    binary = allure_bin(project)
    if not binary.exists():
        return AllureResult(False, f"allure CLI not found at {binary} (run `npm ci` in the project dir)")
    node = shutil.which("node")
    if node is None:
        return AllureResult(False, "node not found on PATH (Allure 3 is an npm tool; install Node.js >= 20)")
    if not results.is_dir() or not any(results.glob("*-result.json")):
        return AllureResult(False, f"no Allure results in {results}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".allure-tmp-{_random.token_hex(4)}")
    if single_file or history is not None:
        argv = [node, str(binary), "awesome", "--group-by", "epic,feature"]
        argv += ["--single-file"] if single_file else []
        if history is not None:
            Path(history).parent.mkdir(parents=True, exist_ok=True)
            argv += ["--history-path", str(Path(history).resolve())]
    else:
        argv = [node, str(binary), "generate"]
    if title:
        argv += ["--report-name", title]
    argv += [str(results), "-o", str(tmp_out)]
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")
    cwd = tempfile.mkdtemp(prefix="opsproof-allure-")  # so no allurerc/stray output is picked up or left behind
    try:
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return AllureResult(False, f"allure timed out after {timeout:.0f}s")
        except OSError as exc:
            return AllureResult(False, f"could not run allure: {exc.strerror or exc}")
        if proc.returncode != 0 or not (tmp_out / "index.html").is_file():
            text = _ANSI.sub("", (proc.stderr or "") + (proc.stdout or "")).strip().splitlines()
            last = text[-1].strip() if text else "no output"
            return AllureResult(False, f"allure exited {proc.returncode}: {last}")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.rename(tmp_out, out)
        return AllureResult(True, "", out)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(tmp_out, ignore_errors=True)


def single_file(results_dir: Path | str, out_html: Path | str, *, history: Path | str | None = None,
                title: str | None = None, timeout: float = 300, project: Path | None = None) -> AllureResult:
    """One self-contained HTML file (out_html) of results_dir: what a pack keeps (a folder report spins
    forever from file://). history: see generate(). Never raises for a missing tool."""
    out = Path(out_html).resolve()
    tmp_dir = out.with_name(f".allure-single-{_random.token_hex(4)}")
    try:
        res = generate(results_dir, tmp_dir, single_file=True, timeout=timeout, project=project,
                       history=history, title=title)
        if not res:
            return res
        page = (tmp_dir / "index.html").read_text(encoding="utf-8")
        (tmp_dir / "index.html").write_text(strip_analytics(page), encoding="utf-8")
        os.replace(tmp_dir / "index.html", out)
        return AllureResult(True, "", out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

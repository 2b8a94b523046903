"""`opsproof dashboard build|serve` -- mounted by the main CLI as `opsproof dashboard`.

build: writes the evidence tree's index.html (see opsproof.dashboard.index_path) from the retained packs, the
       watch samples and (unless --no-live) a live reading of the configured target.
serve: the same page, rebuilt on every request (live), auto-refreshing, on 127.0.0.1 only. A busy port is one
       line and exit 2.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from opsproof.cliutil import one_line_errors
from opsproof.errors import UsageError

app = typer.Typer(help="The health dashboard: build the self-contained page, or serve it live.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

HOST = "127.0.0.1"


class _Context:
    """Settings, evidence root, catalog and (optionally) the live target, resolved once."""

    def __init__(self, evidence_dir: Optional[Path], live: bool):
        from opsproof.paths import project_dir
        from opsproof.targets import evidence_root

        self.settings = None
        self.live_error = None
        try:
            from opsproof.config import resolve_settings

            self.settings = resolve_settings()
        except Exception as exc:  # no settings: the page is built from the packs alone, and says so
            self.live_error = f"settings: {str(exc).splitlines()[0][:160]}"
        base = Path(evidence_dir) if evidence_dir is not None else project_dir() / "reports" / "evidence"
        if evidence_dir is not None and not base.is_dir():
            raise UsageError(f"no such evidence dir: {base}")
        self.base = base
        self.name = getattr(self.settings, "name", None)
        self.root = evidence_root(base, self.name) if self.name else base
        self.catalog = None
        try:
            from opsproof import catalog

            self.catalog = catalog.load()
        except Exception:
            pass  # findings then carry no remediation text; nothing else depends on it
        self.policy = None
        try:
            from opsproof import policy

            p = project_dir() / "opsproof.toml"
            self.policy = policy.load(p) if p.is_file() else None
        except Exception:
            pass
        self.target = None
        if live and self.settings is not None and getattr(self.settings, "db_url", None) is not None:
            try:
                from opsproof.target.db import Target

                self.target = Target(self.settings.db_url.get_secret_value(), max_size=2, timeout=5)
            except Exception as exc:
                self.live_error = str(exc).splitlines()[0][:200]
        elif live and self.live_error is None:
            self.live_error = "no target configured"

    def live(self) -> dict | None:
        if self.target is None:
            if self.live_error is None:
                return None
            part = {"measured": False, "error": self.live_error}
            return {"incidents": part, "agents": part, "resources": part, "traces": part}
        from opsproof.dashboard.data import collect_live

        return collect_live(self.target, self.settings, self.policy)

    def page(self, *, mode: str = "file", refresh_s: int = 0) -> str:
        from opsproof.dashboard import build

        return build(self.root, live=self.live(), catalog=self.catalog,
                     trace_link_template=getattr(self.settings, "trace_link_template", None), mode=mode,
                     refresh_s=refresh_s)

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None


@app.command()
@one_line_errors
def build(
    evidence_dir: Optional[Path] = typer.Option(None, "--evidence-dir",
                                                help="Evidence dir [default: <project>/reports/evidence]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of the evidence tree's index.html."),
    no_live: bool = typer.Option(False, "--no-live", help="Do not read the target: packs and watch samples only."),
) -> None:
    """Write the dashboard (reports/index.html) from the retained packs and the watch samples."""
    from opsproof.dashboard import _write, index_path

    ctx = _Context(evidence_dir, live=not no_live)
    try:
        text = ctx.page()
    finally:
        ctx.close()
    path = out if out is not None else index_path(ctx.base, ctx.name)
    _write(path, text)
    typer.echo(f"opsproof: dashboard {path}")


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise UsageError(f"port {port} on {HOST} is busy (choose another with --port)") from None
    return sock


def make_app(ctx: _Context, refresh_s: int):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    async def index(request):
        text = await run_in_threadpool(ctx.page, mode="serve", refresh_s=refresh_s)
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    async def healthz(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/", index), Route("/healthz", healthz)])


@app.command()
@one_line_errors
def serve(
    port: int = typer.Option(8787, "--port", min=0, max=65535, help="Loopback port (0: any free one)."),
    refresh: int = typer.Option(30, "--refresh", min=2, help="Seconds between the page's automatic reloads."),
    evidence_dir: Optional[Path] = typer.Option(None, "--evidence-dir",
                                                help="Evidence dir [default: <project>/reports/evidence]."),
    no_live: bool = typer.Option(False, "--no-live", help="Do not read the target: packs and watch samples only."),
) -> None:
    """Serve the dashboard live on 127.0.0.1 (rebuilt on every request, reloads itself every --refresh s)."""
    import uvicorn

    sock = _listen(port)  # bound before anything else: a busy port is exit 2 with nothing started
    ctx = _Context(evidence_dir, live=not no_live)
    try:
        server = uvicorn.Server(uvicorn.Config(make_app(ctx, refresh), log_level="warning", access_log=False))
        typer.echo(f"opsproof: dashboard at http://{HOST}:{sock.getsockname()[1]}/ (reloads every {refresh} s; "
                   f"Ctrl-C stops)")
        server.run(sockets=[sock])
    finally:
        ctx.close()
        sock.close()

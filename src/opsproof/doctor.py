"""`opsproof doctor [--target NAME] [--evidence-dir DIR]`: is this machine ready to prove this target?

One line per prerequisite, each failure with its fix:

    settings    where each setting came from (config.resolve_settings(...).describe(), never a secret)
    dsn         the target's Postgres answers (who we are, which server)
    pooler      direct / session-mode pooler / transaction-mode pooler (drills need a session-mode URL)
    privileges  the suite's role reads the ops contract and executes its measurement functions; superuser or not
    migrations  supabase/migrations compared with supabase_migrations.schema_migrations on the target
    advisors    Supabase's security advisors: the npm Supabase CLI, or a Management API token + project ref
    node        node on PATH (Allure's report; the cron/systemd PATH)                              [optional]
    webhook     ALERT_WEBHOOK_URL answers a TCP connect (nothing is ever posted)          [optional when unset]
    traces      TRACE_LINK_TEMPLATE is a link template and something answers there                 [optional]
    evidence    the evidence dir is (or can be made) a writable directory (probed with a temp file)
    signing     the manifest signing key: OPSPROOF_SIGNING_KEY, or the embedded default's stack-home key

Exit 0 when every required line holds (warnings, labeled "optional", allowed), 1 when one does not,
2 for bad input (an unknown target name, a malformed setting) -- one line, nothing changed.
Read-only: the doctor writes nothing to the target, posts nothing, and leaves no file behind.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from opsproof import paths
from opsproof.config import Settings, resolve_settings

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
CONNECT_TIMEOUT_S = 5
TRANSACTION_POOLER_PORT = 6543   # Supabase's pooler (Supavisor) in transaction mode; 5432 on the pooler = session


@dataclass
class Line:
    name: str
    status: str
    detail: str
    fix: str | None = None
    optional: bool = False

    def render(self) -> str:
        label = "optional" if self.optional and self.status != OK else ""
        head = f"{self.status:<4}  {self.name:<10}  {self.detail}" + (f"  ({label})" if label else "")
        return head + (f"\n{'':16}fix: {self.fix}" if self.fix and self.status in (FAIL, WARN) else "")


@dataclass
class Facts:
    """What the DSN check learned, for the checks that need a connection."""
    conn_kwargs: dict
    port: int | None
    user: str = ""
    server_port: int | None = None


def _connect_kwargs() -> dict:
    try:
        from opsproof.target.db import CONNECT_KWARGS
        return dict(CONNECT_KWARGS)
    except ImportError:  # pragma: no cover - older target/db.py
        return {"autocommit": True, "prepare_threshold": None}


def _connect(s: Settings, **extra):
    import psycopg

    kw = _connect_kwargs()
    kw.update(connect_timeout=CONNECT_TIMEOUT_S, application_name="opsproof-doctor", **extra)
    return psycopg.connect(s.db_url.get_secret_value(), **kw)


def _push_fix(s: Settings) -> str:
    if s.target == "embedded":
        return ("push the migrations to the embedded stack: npx supabase db push --remote=\"$(opsproof stack env "
                "--show-secrets | sed -n 's/^SUPABASE_DB_URL=//p')\" --yes (or `opsproof stack reset` for a new one)")
    return 'npx supabase db push --remote="$SUPABASE_DB_URL" --yes (the same migrations, unchanged; docs/deployment.md)'


# -- the checks ---------------------------------------------------------------------------------------

def check_settings(s: Settings) -> Line:
    d = s.describe()
    sources = d.get("sources", {})
    named = [f"{k} from {v}" for k, v in sorted(sources.items()) if v != "default"]
    defaults = sum(v == "default" for v in sources.values())
    where = ", ".join(named + ([f"{defaults} more at their defaults"] if defaults else [])) or "all defaults"
    env_file = f"; .env {d['env_file']}" if d.get("env_file") else "; no .env"
    prod = "; production" if d.get("production") else ""
    return Line("settings", OK, f"{s.target} target {s.host()}{prod} ({where}{env_file})")


def check_dsn(s: Settings) -> tuple[Line, Facts | None]:
    if s.db_url is None:
        if s.target == "embedded":
            return Line("dsn", FAIL, f"no embedded stack under {paths.stack_dir()}",
                        "opsproof stack up (or set OPSPROOF_TARGET=env and SUPABASE_DB_URL for a hosted project)"), None
        return Line("dsn", FAIL, "SUPABASE_DB_URL is not set", "set SUPABASE_DB_URL in the environment or .env"), None
    import psycopg

    from opsproof.target.db import describe_connect_error

    port = s.describe().get("port")
    t0 = time.monotonic()
    try:
        with _connect(s) as conn:
            user, version, server_port = conn.execute(
                "select current_user::text, current_setting('server_version'), inet_server_port()").fetchone()
    except psycopg.Error as exc:
        src = s.source("SUPABASE_DB_URL") or "default"
        fix = ("opsproof stack up (the embedded stack is not running)" if s.target == "embedded" else
               f"check SUPABASE_DB_URL (from {src}): host, port, user, password, sslmode; a runner without IPv6 "
               "needs Supabase's pooler URL (Project Settings > Database > Connection pooling)")
        return Line("dsn", FAIL, f"{describe_connect_error(exc)} [{s.host()}]", fix), None
    ms = (time.monotonic() - t0) * 1000
    facts = Facts(_connect_kwargs(), port if isinstance(port, int) else None, user, server_port)
    return Line("dsn", OK, f"connected to {s.host()} as {user} (PostgreSQL {version}) in {ms:.0f} ms"), facts


def check_pooler(s: Settings, f: Facts) -> Line:
    """Port 6543 is Supabase's transaction pooler. Otherwise: two client connections whose statements, one after
    the other, run on the same server backend share it -- transaction (or statement) pooling; a server port
    other than the one dialed means something (a session pooler, a proxy) sits in between."""
    mode = None
    if f.port == TRANSACTION_POOLER_PORT:
        mode = f"transaction-mode pooler (port {TRANSACTION_POOLER_PORT})"
    else:
        try:
            with _connect(s) as a, _connect(s) as b:
                pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
                pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
            if pid_a == pid_b:
                mode = "transaction-mode pooler (two client connections share one server backend)"
        except Exception as exc:  # noqa: BLE001 - a pooler that refuses a 2nd client: say so, do not guess
            return Line("pooler", WARN, f"could not tell the pooling mode ({type(exc).__name__})",
                        "use a session-mode or direct URL for drills", optional=True)
    if mode:
        return Line("pooler", WARN, f"{mode}: daily, gate and acceptance run through it; drills need session state",
                    "for `opsproof drills` / `cadence weekly` use the session-mode URL (Supabase: the same pooler "
                    "host on port 5432) or the direct connection", optional=True)
    if f.server_port and f.port and f.server_port != f.port:
        return Line("pooler", OK, f"session-mode pooler or proxy (dialed port {f.port}, server port "
                                  f"{f.server_port}): everything runs, drills included")
    return Line("pooler", OK, "direct connection (no pooler): everything runs, drills included")


PRIVILEGES_SQL = """
select r.rolsuper, r.rolbypassrls,
       has_schema_privilege(current_user, 'ops', 'USAGE') as ops_usage,
       (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'ops' and c.relkind in ('r', 'p', 'v', 'm') and not c.relispartition) as tables,
       (select array_agg(c.relname::text order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'ops' and c.relkind in ('r', 'p', 'v', 'm') and not c.relispartition
           and not has_table_privilege(current_user, c.oid, 'SELECT')) as unreadable,
       (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'ops') as functions,
       (select array_agg(distinct p.proname::text) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'ops' and not has_function_privilege(current_user, p.oid, 'EXECUTE')) as unexecutable
  from pg_roles r where r.rolname = current_user
"""


def check_privileges(s: Settings, f: Facts) -> Line:
    with _connect(s) as conn:
        exists = conn.execute("select to_regnamespace('ops') is not null").fetchone()[0]
        if not exists:
            return Line("privileges", FAIL, f"role {f.user}: the target has no ops schema (the contract is not applied)",
                        _push_fix(s))
        su, bypass, usage, tables, unreadable, functions, unexec = conn.execute(PRIVILEGES_SQL).fetchone()
    kind = ("a superuser (the embedded bootstrap's; hosted Supabase's postgres is not: run as a non-superuser to "
            "prove the hosted path)" if su else "not a superuser, as on hosted Supabase")
    problems = []
    if not usage:
        problems.append("no USAGE on schema ops")
    if unreadable:
        problems.append(f"cannot read {len(unreadable)} ops table(s): {', '.join(unreadable[:5])}")
    if unexec:
        problems.append(f"cannot execute {len(unexec)} ops function(s): {', '.join(sorted(unexec)[:5])}")
    if not functions:
        problems.append("no measurement functions in schema ops")
    if problems:
        role = f.user
        return Line("privileges", FAIL, f"role {role} ({kind}): " + "; ".join(problems),
                    f"as the migrations' owner: grant usage on schema ops to {role}; grant select on all tables in "
                    f"schema ops to {role}; grant execute on all functions in schema ops to {role} "
                    "(docs/contract.md lists what a hosted project must grant)")
    extra = ", bypasses RLS" if bypass and not su else ""
    return Line("privileges", OK, f"role {f.user} ({kind}{extra}): reads {tables}/{tables} ops tables, "
                                  f"executes {functions}/{functions} ops functions")


def local_migrations() -> dict[str, str]:
    """version -> file name of supabase/migrations/<version>_<name>.sql (what `supabase db push` records)."""
    out = {}
    for p in sorted((paths.project_dir() / "supabase" / "migrations").glob("*.sql")):
        m = re.match(r"^(\d+)_", p.name)
        if m:
            out[m.group(1)] = p.name
    return out


def check_migrations(s: Settings, f: Facts) -> Line:
    local = local_migrations()
    if not local:
        return Line("migrations", FAIL, f"no migration files under {paths.project_dir() / 'supabase' / 'migrations'}",
                    "run from the opsproof checkout or set OPSPROOF_PROJECT_DIR")
    with _connect(s) as conn:
        has_table = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()[0]
        applied = ({r[0] for r in conn.execute("select version::text from supabase_migrations.schema_migrations")}
                   if has_table else set())
    missing = [v for v in local if v not in applied]
    if not has_table or missing:
        what = ("no migration history on the target (supabase_migrations.schema_migrations is missing)" if not has_table
                else f"{len(local) - len(missing)}/{len(local)} applied; missing {', '.join(local[v] for v in missing[:4])}"
                + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
        return Line("migrations", FAIL, what, _push_fix(s))
    latest = max(local)
    extra = sorted(applied - set(local))
    if extra:
        return Line("migrations", WARN, f"{len(local)}/{len(local)} applied, latest {local[latest]}; the target also "
                                        f"has {len(extra)} this checkout lacks ({', '.join(extra[:3])})",
                    "update this checkout (git pull) so the suite matches the contract on the target", optional=True)
    return Line("migrations", OK, f"{len(local)}/{len(local)} applied, latest {local[latest]}")


def check_advisors(s: Settings) -> Line:
    from opsproof.errors import UsageError
    from opsproof.stack.supabase_cli import cli_path

    try:
        cli = cli_path()
    except UsageError:
        cli = None
    source = getattr(s, "advisors_source", "auto")
    api_ready = s.access_token is not None and bool(s.project_ref)
    if source == "management-api":
        if api_ready:
            return Line("advisors", OK, f"Supabase Management API advisors for project {s.project_ref} "
                                        f"(OPSPROOF_ADVISORS_SOURCE=management-api; SUPABASE_ACCESS_TOKEN from "
                                        f"{s.source('SUPABASE_ACCESS_TOKEN')}, not called)")
        return Line("advisors", FAIL, "OPSPROOF_ADVISORS_SOURCE=management-api but SUPABASE_ACCESS_TOKEN or "
                                      "SUPABASE_PROJECT_REF is not set: SEC-006 would be an error",
                    "set SUPABASE_ACCESS_TOKEN (a personal access token) and SUPABASE_PROJECT_REF")
    if cli:
        import subprocess

        try:
            res = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL, env=dict(os.environ, DO_NOT_TRACK="1"))
            version = (res.stdout or res.stderr).strip().splitlines()[-1] if res.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            version = None
        if version:
            return Line("advisors", OK, f"Supabase CLI {version} ({_short(cli)}) runs `supabase db advisors`")
        cli_problem = f"the Supabase CLI at {_short(cli)} does not run"
    else:
        cli_problem = "no Supabase CLI (node_modules/.bin/supabase or on PATH)"
    if api_ready and source != "cli":
        return Line("advisors", OK, f"{cli_problem}; Supabase Management API advisors for project {s.project_ref} "
                                    f"(SUPABASE_ACCESS_TOKEN from {s.source('SUPABASE_ACCESS_TOKEN')}, not called)")
    return Line("advisors", FAIL, f"{cli_problem}, and no Management API token + project ref: SEC-006 would be an error",
                "npm ci (package.json pins the Supabase CLI; `make setup` does it), or set SUPABASE_ACCESS_TOKEN and "
                "SUPABASE_PROJECT_REF for the Management API's advisors")


def check_node(s: Settings) -> Line:
    import shutil

    node = shutil.which("node")
    allure = paths.project_dir() / "node_modules" / ".bin" / "allure"
    if node and allure.exists():
        return Line("node", OK, f"node {_short(node)} on PATH; Allure {_short(str(allure))}")
    what = "node is not on PATH" if not node else f"no Allure at {_short(str(allure))}"
    return Line("node", WARN, f"{what}: the pack's Allure report cannot be built",
                "install Node.js and put it on the job's PATH (deploy/crontab sets PATH; systemd units too), then "
                "npm ci", optional=True)


def _tcp(host: str, port: int) -> str | None:
    """None when a TCP connect succeeds, else the error (nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_webhook(s: Settings) -> Line:
    if s.alert_webhook_url is None:
        return Line("webhook", WARN, "ALERT_WEBHOOK_URL is not set: a red run alerts no one",
                    "set ALERT_WEBHOOK_URL (a Slack incoming webhook) in the environment or .env", optional=True)
    parts = urlsplit(s.alert_webhook_url.get_secret_value())
    src = s.source("ALERT_WEBHOOK_URL")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Line("webhook", FAIL, f"ALERT_WEBHOOK_URL (from {src}) is not an http(s) URL",
                    "set ALERT_WEBHOOK_URL to the webhook's https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    err = _tcp(parts.hostname, port)
    where = f"{parts.scheme}://{parts.hostname}:{port}"   # never the path: a Slack webhook's path is its secret
    if err:
        fix = ("opsproof plane up (the embedded default's sink receives the alerts)" if s.target == "embedded"
               and parts.hostname in ("127.0.0.1", "localhost") else
               f"check ALERT_WEBHOOK_URL (from {src}) and the egress from this host to {parts.hostname}:{port}")
        return Line("webhook", FAIL, f"ALERT_WEBHOOK_URL (from {src}) {where} unreachable: {err}", fix)
    return Line("webhook", OK, f"ALERT_WEBHOOK_URL (from {src}) {where} accepts connections (TCP only, nothing posted)")


SAMPLE_TRACE_ID = "0" * 31 + "1"


def check_traces(s: Settings) -> Line:
    tpl = s.trace_link_template
    src = s.source("TRACE_LINK_TEMPLATE") or "default"
    if "{trace_id}" not in tpl:
        return Line("traces", FAIL, f"TRACE_LINK_TEMPLATE (from {src}) has no {{trace_id}}: every trace link would be "
                                    "the same page", "set TRACE_LINK_TEMPLATE like https://<trace ui>/trace/{trace_id}")
    url = tpl.replace("{trace_id}", SAMPLE_TRACE_ID)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Line("traces", FAIL, f"TRACE_LINK_TEMPLATE (from {src}) is not an http(s) URL template",
                    "set TRACE_LINK_TEMPLATE like https://<trace ui>/trace/{trace_id}")
    import httpx

    try:
        r = httpx.get(url, timeout=CONNECT_TIMEOUT_S, follow_redirects=False)
        answer = f"HTTP {r.status_code} for a sample trace id"
        good = r.status_code < 500
    except httpx.HTTPError as exc:
        answer, good = f"nothing answers ({type(exc).__name__})", False
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + "/…"
    if good:
        return Line("traces", OK, f"TRACE_LINK_TEMPLATE (from {src}) {shown}: {answer}")
    fix = ("start the trace view of the embedded default (opsproof plane up)" if s.target == "embedded" else
           "point TRACE_LINK_TEMPLATE at your trace UI (Jaeger/Tempo/Grafana) reachable from where reports are read")
    return Line("traces", WARN, f"TRACE_LINK_TEMPLATE (from {src}) {shown}: {answer}; the pack's trace links will not "
                                "open from here", fix, optional=True)


def check_evidence(evidence_dir: Path) -> Line:
    """Probe with a real temp file (os.access lies for root and for read-only mounts); nothing is left behind."""
    fix = (f"make {evidence_dir} writable by {_whoami()} (install -d -o {_whoami()} DIR), or choose another with "
           "--evidence-dir=DIR (the same option `opsproof daily|cadence` take)")
    if evidence_dir.exists():
        if not evidence_dir.is_dir():
            return Line("evidence", FAIL, f"{evidence_dir} is not a directory", fix)
        probe_in, will_create = evidence_dir, False
    else:
        probe_in = evidence_dir.parent
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            return Line("evidence", FAIL, f"{evidence_dir} cannot be created: {probe_in} is not a directory", fix)
        will_create = True
    try:
        fd, name = tempfile.mkstemp(prefix=".opsproof-doctor-", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        what = "cannot be created in" if will_create else "is not writable:"
        return Line("evidence", FAIL, f"{evidence_dir} {what} {probe_in} ({exc.strerror or exc})", fix)
    if will_create:
        return Line("evidence", OK, f"{evidence_dir} will be created (its parent {probe_in} is writable)")
    return Line("evidence", OK, f"{evidence_dir} is writable")


def check_signing(s: Settings) -> Line:
    from opsproof.evidence import signing

    configured = s.signing_key or os.environ.get(signing.SETTING)
    fix_new = ("opsproof evidence keygen /etc/opsproof/evidence-ed25519.pem (outside the evidence tree), then set "
               "OPSPROOF_SIGNING_KEY to that path; give auditors its .pub")
    if configured:
        path = Path(configured).expanduser()
        src = s.source("OPSPROOF_SIGNING_KEY") or "environment"
        try:
            signing.load_signer(path)
        except Exception as exc:  # noqa: BLE001 - missing, unreadable or not an ed25519 key
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return Line("signing", FAIL, f"OPSPROOF_SIGNING_KEY (from {src}) {path}: {msg[:160]}", fix_new)
        mode = path.stat().st_mode & 0o077
        if mode:
            return Line("signing", WARN, f"key {path} (from {src}) loads, but others can read it (mode "
                                         f"{oct(path.stat().st_mode & 0o777)})", f"chmod 600 {path}", optional=True)
        return Line("signing", OK, f"ed25519 key {path} (OPSPROOF_SIGNING_KEY from {src})")
    if s.target == "embedded":
        path = signing.default_key_path()
        if path.exists():
            try:
                signing.load_signer(path)
            except Exception as exc:  # noqa: BLE001
                return Line("signing", FAIL, f"the stack home's key {path} does not load ({type(exc).__name__})",
                            f"move {path} away (a new key is generated on the next run) or set OPSPROOF_SIGNING_KEY")
            return Line("signing", OK, f"ed25519 key {path} (the embedded default's, in the stack home)")
        return Line("signing", OK, f"the embedded default generates its key at {path} on its first run")
    return Line("signing", FAIL, f"no OPSPROOF_SIGNING_KEY for the {s.target} target: its packs would be unsigned and "
                                 "`evidence verify --pubkey` would refuse them", fix_new)


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.project_dir()))
    except ValueError:
        return path


def _whoami() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return "the job's user"


# -- the run ------------------------------------------------------------------------------------------

def diagnose(target: str | None = None, evidence_dir: Path | None = None) -> list[Line]:
    """Every line, in order. Bad input (an unknown target, a malformed setting) raises UsageError (exit 2)."""
    s = resolve_settings(target)
    evidence = (evidence_dir or paths.project_dir() / "reports" / "evidence").expanduser().absolute()
    lines = [check_settings(s)]
    dsn, facts = check_dsn(s)
    lines.append(dsn)
    for name, check in (("pooler", check_pooler), ("privileges", check_privileges), ("migrations", check_migrations)):
        if facts is None:
            lines.append(Line(name, SKIP, "not checked: no connection to the target (see dsn)"))
            continue
        try:
            lines.append(check(s, facts))
        except Exception as exc:  # noqa: BLE001 - a check that cannot run does not hold
            lines.append(Line(name, FAIL, f"could not check: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}",
                              "see the dsn line; rerun `opsproof doctor`"))
    for check in (check_advisors, check_node, check_webhook, check_traces):
        lines.append(_safe(check, s))
    lines.append(check_evidence(evidence))
    lines.append(_safe(check_signing, s))
    return lines


def _safe(check: Callable[[Settings], Line], s: Settings) -> Line:
    try:
        return check(s)
    except Exception as exc:  # noqa: BLE001
        name = check.__name__.removeprefix("check_")
        return Line(name, FAIL, f"could not check: {type(exc).__name__}: {str(exc)[:160]}", "rerun `opsproof doctor`")


def exit_code(lines: list[Line]) -> int:
    return 1 if any(ln.status in (FAIL, SKIP) and not ln.optional for ln in lines) else 0


def run(target: str | None = None, evidence_dir: Path | None = None, out: Callable[[str], None] = print) -> int:
    from opsproof import __version__

    lines = diagnose(target, evidence_dir)
    out(f"opsproof doctor {__version__}")
    for ln in lines:
        out(ln.render())
    fails = sum(ln.status in (FAIL, SKIP) and not ln.optional for ln in lines)
    warns = sum(ln.status == WARN for ln in lines)
    oks = sum(ln.status == OK for ln in lines)
    verdict = "ready" if not fails else "NOT ready"
    out(f"opsproof doctor: {verdict}: {oks} ok, {warns} warning(s) (optional), {fails} failed")
    return exit_code(lines)


# -- the command (mounted by opsproof.cli as `opsproof doctor`) --------------------------------------------------

def _app():
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback(invoke_without_command=True)
    def doctor(target: str = typer.Option(None, "--target", help="the target to check [default: OPSPROOF_TARGET, "
                                                                  "else the embedded default]"),
               evidence_dir: Path = typer.Option(None, "--evidence-dir",
                                                 help="evidence root [default: <project>/reports/evidence]")) -> None:
        """One line per prerequisite of proving the target, each failure with its fix (exit 0 = ready)."""
        raise typer.Exit(run(target, evidence_dir))

    return app


app = _app()

"""`opsproof stack`: bring the embedded Supabase-shaped target up, down, report it, rebuild it."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg

from opsproof import paths
from opsproof.envfile import read_env, write_env
from opsproof.errors import OpsproofError
from opsproof.stack import backup, ports, secrets
from opsproof.stack.binaries import find_bindir
from opsproof.stack.cluster import Instance
from opsproof.stack.osuser import RunAs, private_dir, reaches, resolve
from opsproof.stack.supabase_cli import db_push

BOOTSTRAP_SQL = Path(__file__).with_name("sql") / "bootstrap.sql"
# The bootstrap superuser (initdb -U supabase_admin, as on hosted Supabase): used for setup and the stack's own
# plumbing only. Everything the product does -- `supabase db push`, the seeder, the suites, levers, cadence -- runs
# as `postgres`, which is NOT a superuser (hosted Supabase's attributes and memberships: sql/bootstrap.sql).
SUPERUSER = "supabase_admin"
REPLICATION_SLOT = "opsproof_replica"
# Where the cluster's files go when the server account cannot reach the stack home (e.g. a checkout under /root
# while the server runs as `postgres`): a per-stack 0700 directory owned by that account. /var/tmp, not /tmp: it
# survives reboots and is not emptied as eagerly (the data must outlive `stack down`).
OUTSIDE_BASES = (Path("/var/tmp"), Path("/tmp"))


def dsn(user: str, password: str, port: int, db: str = "postgres") -> str:
    return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


@dataclass
class StackState:
    bindir: str
    runas: str
    datadir: str
    port: int
    replica_port: int
    seeded_until: str | None = None     # end of the seeded history (ISO); `up` fills a gap since then
    requests_per_day: int = 20000
    seed: int = 42
    logdir: str | None = None           # server logs (None: <stack>/logs, as stacks made before this field)
    outside: str | None = None          # the per-stack directory outside the home holding data+logs, if any

    @classmethod
    def load(cls, path: Path) -> "StackState | None":
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))


class Stack:
    def __init__(self, home: Path | None = None):
        self.dir = (home / "stack") if home else paths.stack_dir()
        self.state_file = self.dir / "state.json"
        self.env_file = self.dir / "env"
        self.backups = self.dir.parent / "backups"

    # -- layout ---------------------------------------------------------------
    def outside_dir(self, runas: RunAs) -> Path:
        """The per-stack directory outside the home, named by a hash of the home's path (one per checkout)."""
        import hashlib

        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:16]
        base = next((b for b in OUTSIDE_BASES if b.is_dir()), Path("/tmp"))
        return base / f"opsproof-{runas.name}-{digest}"

    def _cluster_dirs(self, runas: RunAs, bindir: Path) -> tuple[Path, Path, Path | None]:
        """(data root, log dir, outside dir or None). Data and logs live under .opsproof/stack/ unless the server
        account can't reach it (a checkout under /root or a 0700 temp dir when root runs the server as
        `postgres`): then under a 0700 directory owned by that account in /var/tmp."""
        if reaches(self.dir, runas):
            return self.dir / "data", self.dir / "logs", None
        outside = self.outside_dir(runas)
        if outside.is_dir() and not outside.is_symlink() and outside.stat().st_uid in {os.geteuid(), runas.uid}:
            self._clear_outside(outside, runas, bindir)   # left by a stack whose home was deleted, not destroyed
        private_dir(outside, runas)                       # refuses a name someone else planted
        for sub in ("data", "logs"):
            (outside / sub).mkdir(mode=0o700, exist_ok=True)
            runas.chown(outside / sub)
        return outside / "data", outside / "logs", outside

    @staticmethod
    def _clear_outside(outside: Path, runas: RunAs, bindir: Path | None) -> None:
        """Stop any server still running from `outside` and delete it (only a real directory of ours)."""
        if outside.is_symlink() or not outside.is_dir() or outside.stat().st_uid not in {os.geteuid(), runas.uid}:
            return
        for pidfile in outside.glob("data/*/postmaster.pid"):
            inst = Instance(pidfile.parent.name, pidfile.parent, outside / "logs" / "stale.log", 0,
                            bindir or Path("/nonexistent"), runas)
            if inst.running():
                if bindir is not None:
                    inst.stop(mode="immediate")
                else:
                    pid = inst.pid()
                    if pid:
                        os.kill(pid, 9)
        shutil.rmtree(outside, ignore_errors=True)

    def _instances(self, state: StackState) -> tuple[Instance, Instance]:
        runas = resolve(state.runas)
        data = Path(state.datadir)
        logs = Path(state.logdir) if state.logdir else self.dir / "logs"
        primary = Instance("primary", data / "primary", logs / "primary.log", state.port,
                           Path(state.bindir), runas)
        replica = Instance("replica", data / "replica", logs / "replica.log", state.replica_port,
                           Path(state.bindir), runas)
        return primary, replica

    def state(self) -> StackState | None:
        return StackState.load(self.state_file)

    def env(self) -> dict[str, str]:
        return read_env(self.env_file)

    # -- lifecycle --------------------------------------------------------------
    def up(self, *, port: int | None = None, seed_days: int = 35, requests_per_day: int = 20000,
           seed: int = 42, log=print) -> dict:
        state = self.state()
        if state is not None:
            primary, replica = self._instances(state)
            if primary.exists():
                return self._start_existing(state, primary, replica, port, log)
        return self._create(port=port, seed_days=seed_days, requests_per_day=requests_per_day, seed=seed, log=log)

    def _start_existing(self, state, primary, replica, port, log) -> dict:
        if primary.running() and replica.running():
            log(f"stack already running: primary 127.0.0.1:{state.port}, replica 127.0.0.1:{state.replica_port}")
            self._top_up(state, log)
            return self.status()
        changed = False
        if not primary.running():
            if port and port != state.port or not ports.is_free(state.port):
                state.port = ports.claim(port)
                changed = True
            primary.port = state.port
            primary.start()
        if not replica.running() and replica.exists():
            if not ports.is_free(state.replica_port):
                state.replica_port = ports.claim(None, avoid={state.port})
                changed = True
            replica.port = state.replica_port
            self._point_replica_at(replica, state.port)
            replica.start()
        if changed:
            state.save(self.state_file)
            self._write_env(state, self.env())
        log(f"stack started: primary 127.0.0.1:{state.port}, replica 127.0.0.1:{state.replica_port}")
        self._top_up(state, log)
        return self.status()

    TOP_UP_AFTER = timedelta(hours=12)

    def _top_up(self, state: StackState, log) -> None:
        """Keep the reference history current: seed the whole days since the last seed once the gap
        passes 12 h (an idle embedded stack otherwise has no agent tasks, replays or CI events in the
        daily window, and the controls rightly error). Deterministic: the seed is offset by the day."""
        if not state.seeded_until:
            return
        from opsproof import clock
        from opsproof.stack.seed import seed as run_seed

        last = datetime.fromisoformat(state.seeded_until)
        now = clock.now()
        gap = now - last
        if gap < self.TOP_UP_AFTER:
            # the reference plane writes probes, requests and outbox events live, but nothing of it enqueues agent
            # tasks, replays on a schedule or builds: continue those seeded streams to now (the telemetry
            # freshness controls would rightly call them stopped). A stream someone stopped stays stopped.
            if gap >= timedelta(minutes=1):
                from opsproof.stack.seed import top_up

                from opsproof.stack.seed import refresh_rollup

                with psycopg.connect(self.admin_dsn()) as conn:
                    top_up(conn, last, now, seed=state.seed, requests_per_day=state.requests_per_day,
                           streams=("agent_tasks", "dlq_replays", "ci_events"))
                    refresh_rollup(conn)  # catch the rollup up over the minutes the stack was down
                state.seeded_until = now.isoformat()
                state.save(self.state_file)
            return
        days = max(1, math.ceil(gap / timedelta(days=1)))
        from opsproof.stack.seed import refresh_rollup

        with psycopg.connect(self.admin_dsn()) as conn:
            counts = run_seed(conn, days=days, requests_per_day=state.requests_per_day,
                              seed=state.seed + int(last.timestamp() // 86400))
            refresh_rollup(conn)  # the seed rolled its own days; this fills the minutes before them
        state.seeded_until = counts["window"]["to"]
        state.save(self.state_file)
        log(f"seeded the {gap.total_seconds() / 3600:.0f} h since the last seed ({days} day(s), "
            f"{counts.get('requests', '?')} requests)")

    def _create(self, *, port, seed_days, requests_per_day, seed, log) -> dict:
        bindir = find_bindir()          # exit 2 before anything is created
        runas = resolve(os.environ.get("OPSPROOF_PG_USER"))
        chosen = ports.claim(port)
        replica_port = ports.claim(None, avoid={chosen})
        t0 = time.monotonic()
        created_home = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            data_root, log_dir, outside = self._cluster_dirs(runas, bindir)
        except BaseException:
            if created_home:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise
        data_root.mkdir(parents=True, exist_ok=True)
        runas.chown(data_root)
        log_dir.mkdir(exist_ok=True)
        runas.chown(log_dir)
        state = StackState(bindir=str(bindir), runas=runas.name, datadir=str(data_root),
                           port=chosen, replica_port=replica_port, logdir=str(log_dir),
                           outside=str(outside) if outside else None)
        values = secrets.generate()
        primary, replica = self._instances(state)
        try:
            self._initdb(primary, runas, values["SUPABASE_ADMIN_PASSWORD"])
            primary.start()
            state.save(self.state_file)
            self._write_env(state, values)
            admin = dsn("postgres", values["POSTGRES_PASSWORD"], chosen)
            self._bootstrap(dsn(SUPERUSER, values["SUPABASE_ADMIN_PASSWORD"], chosen), values)
            log("bootstrapped Supabase roles and auth schema")
            db_push(admin)
            log("applied supabase/migrations with `supabase db push`")
            self._register_keys(admin, values)
            self._make_replica(primary, replica, runas, values["REPLICATOR_PASSWORD"])
            log(f"streaming replica on 127.0.0.1:{replica_port}")
            if seed_days > 0:
                from opsproof.stack.seed import seed as run_seed

                with psycopg.connect(admin) as conn:
                    counts = run_seed(conn, days=seed_days, requests_per_day=requests_per_day, seed=seed)
                log(f"seeded {seed_days} days of healthy telemetry ({counts.get('requests', '?')} requests)")
                state.seeded_until = counts["window"]["to"] if "window" in counts else None
                state.requests_per_day, state.seed = requests_per_day, seed
                state.save(self.state_file)
            info = backup.take(admin, self.backups, bindir)
            log(f"backup {info['location']} ({info['bytes']} bytes) recorded in ops.backups")
            if seed_days > 0 and state.seeded_until:
                # close the seam the seeding and the backup took (the seed ends at a whole minute): the plane,
                # started next, continues the probes within seconds, so no whole minute goes unprobed (SLO-001)
                from opsproof import clock
                from opsproof.stack.seed import refresh_rollup, top_up

                now = clock.now()
                with psycopg.connect(admin) as conn:
                    top_up(conn, datetime.fromisoformat(state.seeded_until), now, seed=seed,
                           requests_per_day=requests_per_day)
                    refresh_rollup(conn)  # the seed rolled its history; roll the seam's closed minutes too
                state.seeded_until = now.isoformat()
                state.save(self.state_file)
        except BaseException:
            primary.destroy()
            replica.destroy()
            shutil.rmtree(self.dir, ignore_errors=True)
            if outside is not None:
                shutil.rmtree(outside, ignore_errors=True)
            raise
        log(f"stack up in {time.monotonic() - t0:.1f}s: primary 127.0.0.1:{chosen}, replica 127.0.0.1:{replica_port}")
        return self.status()

    def _initdb(self, primary: Instance, runas: RunAs, password: str) -> None:
        primary.datadir.parent.mkdir(parents=True, exist_ok=True)
        runas.chown(primary.datadir.parent)
        pwfile = primary.datadir.parent / ".pwfile"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        runas.chown(pwfile)
        try:
            res = runas.run([str(primary.bindir / "initdb"), "-D", str(primary.datadir), "-U", SUPERUSER,
                             "--pwfile", str(pwfile), "--auth-host=scram-sha-256", "--auth-local=peer",
                             "--encoding=UTF8", "--locale=C", "--no-sync"], timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise OpsproofError(f"initdb failed: {res.stderr.strip()[-500:]}")

    def _bootstrap(self, superuser: str, values: dict[str, str]) -> None:
        """Run as the bootstrap superuser: roles (a non-superuser `postgres`), auth schema, grants, passwords."""
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute(BOOTSTRAP_SQL.read_text())
            for role, key in (("postgres", "POSTGRES_PASSWORD"), ("authenticator", "AUTHENTICATOR_PASSWORD"),
                              ("replicator", "REPLICATOR_PASSWORD"), (SUPERUSER, "SUPABASE_ADMIN_PASSWORD")):
                conn.execute(psycopg.sql.SQL("alter role {} password {}").format(
                    psycopg.sql.Identifier(role), psycopg.sql.Literal(values[key])))

    def _register_keys(self, admin: str, values: dict[str, str]) -> None:
        """Store each service account's key fingerprint (never the key) in ops.service_accounts."""
        with psycopg.connect(admin) as conn:
            for account in secrets.SERVICE_ACCOUNTS:
                conn.execute("update ops.service_accounts set key_fingerprint = %s, rotated_at = now() where name = %s",
                             (secrets.fingerprint(values[secrets.env_key_for(account)]), account))

    def _make_replica(self, primary: Instance, replica: Instance, runas: RunAs, password: str) -> None:
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute("select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
                         (REPLICATION_SLOT,))
        env = dict(os.environ, PGPASSWORD=password)
        res = runas.run([str(primary.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                         "-U", "replicator", "-D", str(replica.datadir), "-R", "-X", "stream", "-C",
                         "-S", REPLICATION_SLOT, "--no-sync", "--checkpoint=fast"], env=env, timeout=300)
        if res.returncode != 0:
            raise OpsproofError(f"pg_basebackup failed: {res.stderr.strip()[-500:]}")
        os.chmod(replica.datadir, 0o700)
        self._point_replica_at(replica, primary.port)
        replica.start()

    def _point_replica_at(self, replica: Instance, primary_port: int) -> None:
        """Rewrite primary_conninfo's port (the primary may have moved to a free port on restart)."""
        auto = replica.datadir / "postgresql.auto.conf"
        if not auto.exists():
            return
        import re

        text = auto.read_text()
        new = re.sub(r"port=\d+", f"port={primary_port}", text)
        if new != text:
            auto.write_text(new)

    def _write_env(self, state: StackState, values: dict[str, str]) -> None:
        out = {
            "OPSPROOF_TARGET": "embedded",
            # what the suites, levers, seeder and `supabase db push` use: `postgres`, not a superuser (as hosted)
            "SUPABASE_DB_URL": dsn("postgres", values["POSTGRES_PASSWORD"], state.port),
            "OPSPROOF_REPLICA_DB_URL": dsn("postgres", values["POSTGRES_PASSWORD"], state.replica_port),
            "OPSPROOF_AUTHENTICATOR_DB_URL": dsn("authenticator", values["AUTHENTICATOR_PASSWORD"], state.port),
            # compressed intervals on the embedded stack (production defaults: 30 s probes)
            "OPSPROOF_PLANE_CYCLE_S": "1",
            "OPSPROOF_PROBE_INTERVAL_S": "1",
            "OPSPROOF_WATCH_INTERVAL_S": "10",  # the watch's MONITORING_INTERVAL (production default: 300 s)
        }
        if values.get("SUPABASE_ADMIN_PASSWORD"):
            # the bootstrap superuser: read by stack/ internals only (Stack.superuser_dsn), never by the product
            out["OPSPROOF_SUPERUSER_DB_URL"] = dsn(SUPERUSER, values["SUPABASE_ADMIN_PASSWORD"], state.port)
        out.update({k: values[k] for k in secrets.SECRET_KEYS if k in values})
        write_env(self.env_file, out)

    def admin_dsn(self) -> str:
        """The DSN the product uses (SUPABASE_DB_URL): `postgres`, with hosted Supabase's privileges."""
        return self.env()["SUPABASE_DB_URL"]

    def superuser_dsn(self) -> str:
        """The bootstrap superuser's DSN (OPSPROOF_SUPERUSER_DB_URL), for the stack's own plumbing only. A stack
        made before the superuser split has none: its `postgres` is the superuser."""
        env = self.env()
        return env.get("OPSPROOF_SUPERUSER_DB_URL") or env["SUPABASE_DB_URL"]

    def down(self, log=print) -> bool:
        state = self.state()
        if state is None:
            log("stack is not created")
            return False
        primary, replica = self._instances(state)
        stopped = replica.running() or primary.running()
        replica.stop()
        primary.stop()
        log("stack stopped" if stopped else "stack was not running")
        return stopped

    def destroy(self) -> None:
        state = self.state()
        if state is not None:
            primary, replica = self._instances(state)
            replica.destroy()
            primary.destroy()
            shutil.rmtree(Path(state.datadir), ignore_errors=True)
            if state.outside:
                shutil.rmtree(Path(state.outside), ignore_errors=True)
        else:   # no state (deleted by hand): a cluster dir outside the home may still be there
            try:
                runas = resolve(os.environ.get("OPSPROOF_PG_USER"))
            except OpsproofError:
                runas = None
            if runas is not None and runas.dropping:
                self._clear_outside(self.outside_dir(runas), runas, None)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.backups, ignore_errors=True)

    def reset(self, **kwargs) -> dict:
        self.destroy()
        return self.up(**kwargs)

    def status(self) -> dict:
        state = self.state()
        if state is None:
            return {"created": False, "healthy": False, "problems": ["stack not created: run `opsproof stack up`"]}
        primary, replica = self._instances(state)
        out: dict = {"created": True, "port": state.port, "replica_port": state.replica_port,
                     "datadir": state.datadir, "logdir": str(primary.logfile.parent), "runs_as": state.runas,
                     "primary": {"running": primary.running(), "pid": primary.pid()},
                     "replica": {"running": replica.running(), "pid": replica.pid()}, "problems": []}
        if not primary.running():
            out["problems"].append("primary not running")
        if not replica.running():
            out["problems"].append("replica not running")
        if primary.running():
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=5) as conn:
                    rows = conn.execute("select application_name, state, "
                                        "pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint from pg_stat_replication").fetchall()
                    migrations = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0]
                out["replication"] = [{"application": r[0], "state": r[1], "replay_lag_bytes": r[2]} for r in rows]
                out["migrations_applied"] = migrations
                if not any(r[1] == "streaming" for r in rows):
                    out["problems"].append("replica not streaming")
            except psycopg.Error as exc:
                out["problems"].append(f"primary not answering: {str(exc).strip().splitlines()[0]}")
        out["healthy"] = not out["problems"]
        return out

"""Evidence that cannot be re-forged quietly: a forger with write access to the database rewrites the audit
log and recomputes every hash after the change (or deletes the newest rows). ops.verify_audit_chain()
still says ok; CAD-004 must fail because the chain no longer extends the head anchored in yesterday's pack.

Each case's `prepare` lays down "yesterday's" pack in the case's evidence dir with the real suite
(CAD-004 only, --date=yesterday): that pack's audit_anchor.json is the anchor the case's run checks.
Undo puts every original row back byte for byte and relinks the rows appended meanwhile (the daily
suite itself appends audit rows), so the chain verifies and extends every anchor again afterwards.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from opsproof import clock
from suite_runner import run_suite
from violation_cases import Case

_COLUMNS = ("id", "at", "actor", "action", "target", "reason", "run_id", "incident_id", "detail", "prev_hash", "hash")
_LOCK = ("select pg_advisory_xact_lock(hashtextextended('ops.audit_log', 0)); "
         "lock table ops.audit_log in exclusive mode")

# Recompute prev_hash/hash of every row from id %(from)s on, in id order (what a forger with the owner's
# rights does after changing a row; also what undo does to relink rows appended while the case ran).
_RELINK = """
do $$
declare
  r record;
  v_prev text := coalesce((select hash from ops.audit_log where id < {from_id} order by id desc limit 1),
                          repeat('0', 64));
begin
  for r in select * from ops.audit_log where id >= {from_id} order by id loop
    update ops.audit_log
       set prev_hash = v_prev,
           hash = ops.audit_hash(r.id, r.at, r.actor, r.action, r.target, r.reason, r.run_id,
                                 r.incident_id, r.detail, v_prev)
     where id = r.id
    returning hash into v_prev;
  end loop;
end $$
"""


def _stack_home(stack) -> Path:
    return Path(stack.dir).parent


def _chain_ok(conn) -> bool:
    return bool(conn.execute("select ok from ops.verify_audit_chain()").fetchone()[0])


def _lay_down_yesterday(state: dict):
    def prepare(stack, evidence_dir: Path) -> None:
        yesterday = (clock.today() - timedelta(days=1)).isoformat()
        proc, _ = run_suite(_stack_home(stack), evidence_dir, "-m", "daily", "-k", "test_audit_chain",
                            "--opsproof-suite=daily", f"--opsproof-date={yesterday}")
        anchor_file = Path(evidence_dir) / yesterday / "audit_anchor.json"
        if not anchor_file.is_file():
            raise AssertionError("prepare: yesterday's pack holds no audit_anchor.json\n"
                                 + proc.stdout[-2000:] + proc.stderr[-1000:])
        state.clear()
        state["anchor"] = json.loads(anchor_file.read_text())
    return prepare


# -- (a) rewrite a row at or before the anchor, recompute every hash after it ------------------------

def _rewrite(state: dict):
    def inject(stack) -> None:
        with psycopg.connect(stack.admin_dsn()) as conn:
            conn.execute(_LOCK)
            row = conn.execute("select id, reason from ops.audit_log where id <= %s order by id limit 1",
                               (state["anchor"]["last_id"],)).fetchone()
            state["rewritten"] = row
            conn.execute("update ops.audit_log set reason = coalesce(reason, '') || ' (rewritten by a forger)' "
                         "where id = %s", (row[0],))
            conn.execute(_RELINK.format(from_id=int(row[0])))
            assert _chain_ok(conn), "the forgery must verify by itself (else this case proves nothing new)"
    return inject


def _unrewrite(state: dict):
    def undo(stack) -> None:
        row = state.get("rewritten")
        if row is None:
            return
        with psycopg.connect(stack.admin_dsn()) as conn:
            conn.execute(_LOCK)
            conn.execute("update ops.audit_log set reason = %s where id = %s", (row[1], row[0]))
            conn.execute(_RELINK.format(from_id=int(row[0])))
            assert _chain_ok(conn), "undo left a broken audit chain"
        state.pop("rewritten", None)
    return undo


# -- (b) delete the tail (the anchored row and everything after it) ---------------------------------

def _delete_tail(state: dict):
    def inject(stack) -> None:
        with psycopg.connect(stack.admin_dsn()) as conn:
            conn.execute(_LOCK)
            cols = ", ".join(_COLUMNS)
            rows = conn.execute(f"select {cols} from ops.audit_log where id >= %s order by id",
                                (state["anchor"]["last_id"],)).fetchall()
            assert rows, "the anchored row must exist before the case deletes it"
            state["deleted"] = rows
            conn.execute("delete from ops.audit_log where id >= %s", (state["anchor"]["last_id"],))
            if conn.execute("select count(*) from ops.audit_log").fetchone()[0]:
                assert _chain_ok(conn), "what is left must verify by itself (else this case proves nothing new)"
    return inject


def _restore_tail(state: dict):
    def undo(stack) -> None:
        rows = state.get("deleted")
        if not rows:
            return
        with psycopg.connect(stack.admin_dsn()) as conn:
            conn.execute(_LOCK)
            # the chain trigger would re-number and re-hash: put the rows back exactly as they were
            conn.execute("alter table ops.audit_log disable trigger audit_log_chain")
            cols = ", ".join(_COLUMNS)
            marks = ", ".join(["%s"] * len(_COLUMNS))
            with conn.cursor() as cur:
                cur.executemany(f"insert into ops.audit_log ({cols}) values ({marks})",
                                [tuple(Jsonb(v) if c == "detail" else v
                                       for c, v in zip(_COLUMNS, r)) for r in rows])
            conn.execute("alter table ops.audit_log enable trigger audit_log_chain")
            conn.execute(_RELINK.format(from_id=int(rows[0][0])))
            assert _chain_ok(conn), "undo left a broken audit chain"
        state.pop("deleted", None)
    return undo


_A: dict = {}
_B: dict = {}

CASES = [
    Case(name="CAD-004/rewrite-and-recompute", red={"CAD-004": "fail"},
         prepare=_lay_down_yesterday(_A), inject=_rewrite(_A), undo=_unrewrite(_A),
         why="a row rewritten with every later hash recomputed verifies by itself; the anchor in yesterday's "
             "pack no longer matches"),
    Case(name="CAD-004/delete-tail", red={"CAD-004": "fail"},
         prepare=_lay_down_yesterday(_B), inject=_delete_tail(_B), undo=_restore_tail(_B),
         why="deleting the newest rows leaves a chain that verifies by itself; yesterday's anchored row is gone"),
]

"""DLQ replayer with rails: `python -m opsproof.plane.replayer` (and `replay_batch` for drills).

A batch is refused -- hard stop, nothing replayed, an ops.dlq_replays row status 'refused' with the
reason, and an audit row -- when any rail is crossed:
  - autonomy.emergencyStop=true or dlq.replayEnabled=false
  - items > budget replay.batch_items (50)
  - bytes > budget replay.max_bytes (2 MB; an item's size is ops.dlq.bytes, or its payload's size if 0)
  - the running fail rate > budget replay.fail_rate_pct (20): over the DLQ items replayed in the last
    `window` (default 1 h), the share that failed (replay_status 'failed', or their task came back to
    the DLQ after the replay); judged once at least `min_sample` items were replayed in the window.
Within the rails every item is replayed in one transaction: its task is re-queued (attempts reset) --
or re-created from the DLQ payload when the task row is gone -- the DLQ row is stamped replayed, and
one ops.dlq_replays row + one audit row record the batch.

The process (AUTO_RECOVERY=true) polls every OPSPROOF_REPLAY_POLL_S for pending DLQ items and asks for
one batch of at most replay.batch_items.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import psycopg
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Status, StatusCode
from psycopg.types.json import Jsonb

from opsproof.plane import common, span_export
from opsproof.plane.settings import load_or_exit

log = logging.getLogger("opsproof.plane.replayer")
COMPONENT = "plane.replayer"
REPLAY_LOCK = "opsproof.plane.replayer"


@dataclass
class ReplayResult:
    status: str                    # 'replayed' | 'refused' | 'empty'
    items: int
    bytes: int
    failed: int = 0
    reason: str | None = None
    batch_id: str | None = None
    replay_row_id: int | None = None
    audit_id: int | None = None
    replayed_ids: list[int] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.status == "refused"


def running_fail_rate(conn: psycopg.Connection, window: str = "1 hour") -> tuple[float, int]:
    """(fail %, items replayed) over DLQ items replayed within `window`."""
    row = conn.execute(
        """select count(*),
                  count(*) filter (where d.replay_status = 'failed' or exists (
                      select 1 from ops.dlq n where n.task_id = d.task_id and n.id <> d.id
                         and n.created_at > d.replayed_at))
             from ops.dlq d where d.replayed_at > now() - %s::interval""", (window,)).fetchone()
    total, failed = int(row[0]), int(row[1])
    return (100.0 * failed / total if total else 0.0), total


def replay_batch(conn: psycopg.Connection, ids: list[int] | None = None, limit: int | None = None, *,
                 requested_by: str = "dlq@", run_id: str | None = None, tenant_id: str | None = None,
                 window: str = "1 hour", min_sample: int = 5) -> ReplayResult:
    """Replay one batch: the given DLQ ids (pending ones), or the oldest `limit` pending items.
    `conn` must be autocommit; the batch runs in one transaction, serialised by an advisory lock."""
    if ids is None and limit is None:
        raise ValueError("give ids or limit")
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (REPLAY_LOCK,))
        if ids is not None:
            rows = conn.execute(
                """select id, task_id, tenant_id, payload, coalesce(nullif(bytes, 0), octet_length(payload::text))
                     from ops.dlq where id = any(%s::bigint[]) and replayed_at is null order by id for update""",
                (list(ids),)).fetchall()
        else:
            rows = conn.execute(
                """select id, task_id, tenant_id, payload, coalesce(nullif(bytes, 0), octet_length(payload::text))
                     from ops.dlq where replayed_at is null
                      and (%s::uuid is null or tenant_id = %s::uuid)
                    order by id limit %s::int for update""", (tenant_id, tenant_id, limit)).fetchall()
        items, size = len(rows), sum(int(r[4]) for r in rows)
        if items == 0:
            return ReplayResult("empty", 0, 0)

        flags = common.read_flags(conn)
        max_items = int(common.read_budget(conn, "replay.batch_items", 50))
        max_bytes = int(common.read_budget(conn, "replay.max_bytes", 2 * 1024 * 1024))
        max_fail = common.read_budget(conn, "replay.fail_rate_pct", 20)
        rate, sample = running_fail_rate(conn, window)
        reason = None
        if flags.emergency_stop:
            reason = "autonomy.emergencyStop is on"
        elif not flags.replay_enabled:
            reason = "dlq.replayEnabled is off"
        elif items > max_items:
            reason = f"batch of {items} items exceeds replay.batch_items={max_items}"
        elif size > max_bytes:
            reason = f"batch of {size} bytes exceeds replay.max_bytes={max_bytes}"
        elif sample >= min_sample and rate > max_fail:
            reason = f"running fail rate {rate:.1f}% over {sample} items exceeds replay.fail_rate_pct={max_fail:g}"
        detail = {"items": items, "bytes": size, "fail_rate_pct": round(rate, 2), "sample": sample,
                  "dlq_ids": [r[0] for r in rows][:100]}

        if reason:
            rid, bid = conn.execute(
                """insert into ops.dlq_replays (tenant_id, items, bytes, failed, status, reason, requested_by)
                   values (%s, %s::int, %s::bigint, 0, 'refused', %s, %s) returning id, batch_id""",
                (tenant_id, items, size, reason, requested_by)).fetchone()
            aid = common.audit(conn, requested_by, "dlq.replay.refused", "ops.dlq", reason, run_id,
                               {**detail, "batch_id": str(bid)})
            return ReplayResult("refused", items, size, 0, reason, str(bid), rid, aid)

        replayed, failed = [], 0
        for dlq_id, task_id, t_id, payload, _ in rows:
            ok = False
            if task_id is not None:
                ok = conn.execute(
                    """update ops.agent_tasks set status = 'queued', attempts = 0, quarantined = false, error = null,
                              worker = null, started_at = null, finished_at = null
                        where id = %s returning id""", (task_id,)).fetchone() is not None
            if not ok and isinstance(payload, dict) and payload.get("kind"):
                ok = conn.execute(
                    """insert into ops.agent_tasks (tenant_id, kind, payload, trace_id, canary)
                       values (%s, %s, %s, %s, %s) returning id""",
                    (t_id, payload["kind"], Jsonb(payload.get("payload") or {}), payload.get("trace_id"),
                     bool(payload.get("canary", False)))).fetchone() is not None
            conn.execute("update ops.dlq set replayed_at = now(), replay_status = %s where id = %s",
                         ("replayed" if ok else "failed", dlq_id))
            _replay_span(payload, dlq_id, task_id, ok, requested_by)
            if ok:
                replayed.append(dlq_id)
            else:
                failed += 1
        rid, bid = conn.execute(
            """insert into ops.dlq_replays (tenant_id, items, bytes, failed, status, requested_by)
               values (%s, %s::int, %s::bigint, %s::int, 'replayed', %s) returning id, batch_id""",
            (tenant_id, items, size, failed, requested_by)).fetchone()
        aid = common.audit(conn, requested_by, "dlq.replay", "ops.dlq", f"replayed {len(replayed)} of {items}",
                           run_id, {**detail, "batch_id": str(bid), "failed": failed})
        return ReplayResult("replayed", items, size, failed, None, str(bid), rid, aid, replayed)


def _replay_span(payload, dlq_id: int, task_id, ok: bool, requested_by: str) -> None:
    """One `dlq.replay` span on the replayed task's trace (so its trace view shows the replay)."""
    trace_id = payload.get("trace_id") if isinstance(payload, dict) else None
    if not span_export.is_trace_id(trace_id):
        return
    span = span_export.start_task_span(otel_trace.get_tracer("opsproof.plane.replayer"), "dlq.replay", trace_id,
                                       attributes={"dlq.id": dlq_id, "task.id": task_id,
                                                   "replay.status": "replayed" if ok else "failed",
                                                   "replay.requested_by": requested_by})
    span.set_status(Status(StatusCode.OK if ok else StatusCode.ERROR))
    span.end()


def run(settings, stop: threading.Event) -> None:
    conn = common.connect(settings.db_url, app="opsproof-plane-replayer")
    next_poll = 0.0
    last_refusal: tuple[str | None, float] = (None, 0.0)
    batches = 0
    while not stop.is_set():
        try:
            flags = common.read_flags(conn)
            common.heartbeat(conn, COMPONENT, {"auto": settings.auto_recovery, "batches": batches,
                                               "halted": flags.emergency_stop or not flags.replay_enabled})
            if (settings.auto_recovery and time.monotonic() >= next_poll
                    and not flags.emergency_stop and flags.replay_enabled):
                next_poll = time.monotonic() + settings.replay_poll_s
                pending = conn.execute("select count(*) from ops.dlq where replayed_at is null").fetchone()[0]
                if pending:
                    limit = int(common.read_budget(conn, "replay.batch_items", 50))
                    # A standing refusal (fail-rate rail) is recorded at most once a minute, not every poll.
                    if last_refusal[0] and time.monotonic() - last_refusal[1] < 60:
                        pass
                    else:
                        res = replay_batch(conn, limit=limit, requested_by="dlq@", run_id=f"auto-{COMPONENT}")
                        batches += 1
                        last_refusal = (res.reason, time.monotonic()) if res.refused else (None, 0.0)
                        log.info("auto replay: %s %d items%s", res.status, res.items,
                                 f" ({res.reason})" if res.reason else "")
        except psycopg.Error as exc:
            log.warning("replayer db error (%s); reconnecting", type(exc).__name__)
            try:
                conn.close()
                conn = common.connect(settings.db_url, app="opsproof-plane-replayer")
            except psycopg.Error:
                pass
        stop.wait(settings.cycle_s)
    conn.close()


def main() -> None:
    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    stopper = common.Stopper().install()
    log.info("replayer up (auto=%s)", settings.auto_recovery)
    provider = span_export.setup_tracing(COMPONENT, settings.db_url)
    try:
        run(settings, stopper.event)
    finally:
        span_export.shutdown_tracing(provider)


if __name__ == "__main__":
    main()

"""Drill inputs: the work a drill feeds the system (agent tasks, DLQ items). Audited like every lever.

Everything a drill creates carries its run id (payload.drill = run id) so it is attributable; DLQ items a
drill makes only to be refused are created and removed inside one transaction (see docs/drills.md).
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from opsproof.levers.common import audit, connection


def enqueue_tasks(where, n: int, kind: str, payload: dict, run_id: str, reason: str) -> list[int]:
    """Queue n agent tasks (payload gets drill=run_id); one audit row per call."""
    body = {**payload, "drill": run_id}
    with connection(where) as conn:
        with conn.transaction():
            ids = [r[0] for r in conn.execute(
                """insert into ops.agent_tasks (kind, payload) select %s, %s from generate_series(1, %s::int)
                   returning id""", (kind, Jsonb(body), n)).fetchall()]
            audit(conn, action="drill.workload.enqueue", target="ops.agent_tasks", reason=reason, run_id=run_id,
                  detail={"count": len(ids), "kind": kind, "first_id": min(ids, default=None), "last_id": max(ids, default=None)})
    return sorted(ids)


def padded_payload(conn: psycopg.Connection, run_id: str, size: int, kind: str | None = None) -> dict:
    """A JSON payload whose PostgreSQL text rendering (octet_length(payload::text)) is exactly `size` bytes."""
    base = {"drill": run_id, "pad": ""}
    if kind:
        base["kind"] = kind
    empty = conn.execute("select octet_length(%s::jsonb::text)", (Jsonb(base),)).fetchone()[0]
    if size < empty:
        raise ValueError(f"payload cannot be smaller than {empty} bytes")
    body = dict(base, pad="x" * (size - empty))
    got = conn.execute("select octet_length(%s::jsonb::text)", (Jsonb(body),)).fetchone()[0]
    if got != size:
        raise RuntimeError(f"padding miscomputed: {got} != {size}")
    return body


def insert_dlq(conn: psycopg.Connection, payloads: list[dict], run_id: str, reason: str,
               error: str = "drill item") -> list[int]:
    """DLQ items with the given payloads (bytes = 0: the replayer sizes them by their payload); audited."""
    ids = []
    for p in payloads:
        ids.append(conn.execute(
            "insert into ops.dlq (task_id, payload, bytes, error) values (null, %s, 0, %s) returning id",
            (Jsonb(p), error)).fetchone()[0])
    audit(conn, action="drill.workload.dlq_insert", target="ops.dlq", reason=reason, run_id=run_id,
          detail={"count": len(ids), "dlq_ids": ids[:100],
           "bytes": conn.execute("select coalesce(sum(octet_length(payload::text)), 0) from ops.dlq "
                                 "where id = any(%s::bigint[])", (ids,)).fetchone()[0]})
    return ids


def discard_dlq(conn: psycopg.Connection, ids: list[int], run_id: str, reason: str) -> int:
    """Remove drill-made DLQ items that were never replayed (only pending rows carrying this run id)."""
    n = conn.execute(
        """delete from ops.dlq where id = any(%s::bigint[]) and replayed_at is null and payload->>'drill' = %s""",
        (list(ids), run_id)).rowcount
    audit(conn, action="drill.workload.dlq_discard", target="ops.dlq", reason=reason, run_id=run_id,
          detail={"count": n, "dlq_ids": list(ids)[:100]})
    return n

"""The two reads the drill and acceptance measurements go through, on an opsproof Target (a pooled connection)
or on a psycopg Connection the caller holds (a read inside a drill's own transaction sees its uncommitted rows).

Plain results: the public functions of each measure/ module wrap them in a `Measurement` with the statement."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row


def rows(db: Any, statement: str, params: tuple = ()) -> list[dict]:
    if hasattr(db, "rows"):
        return db.rows(statement, params or None)
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(statement, params or None).fetchall()


def value(db: Any, statement: str, params: tuple = ()) -> Any:
    if hasattr(db, "value"):
        return db.value(statement, params or None)
    row = db.execute(statement, params or None).fetchone()
    return None if row is None else row[0]

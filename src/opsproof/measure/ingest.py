"""What the ingest's idempotency did with one key: effects written (ops.ingest_events) and keys stored
(ops.idempotency_keys). Takes a Target or a psycopg Connection."""

from __future__ import annotations

from opsproof.measure import _db
from opsproof.measure.models import Measurement

EFFECTS_SQL = ("select (select count(*) from ops.ingest_events where idempotency_key = %s) as effects, "
               "(select count(*) from ops.idempotency_keys where key = %s) as keys")


def idempotency_effects(db, key: str) -> Measurement[dict]:
    """{"effects": ops.ingest_events rows of the key, "keys": ops.idempotency_keys rows of the key}."""
    params = (key, key)
    return Measurement(_db.rows(db, EFFECTS_SQL, params)[0], EFFECTS_SQL, params)

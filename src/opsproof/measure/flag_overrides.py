"""A leased flag override as the target recorded it (ops.flag_overrides): when it took effect and when it was
released, on the database's clock."""

from __future__ import annotations

from opsproof.measure import _db
from opsproof.measure.models import Measurement
from opsproof.recorder import MeasurementError

TIMES_SQL = "select created_at, released_at from ops.flag_overrides where id = %s"


def override_times(db, override_id: int) -> Measurement[dict]:
    """{"created_at", "released_at" (None while it holds)} of one override (a MeasurementError if it is gone)."""
    params = (override_id,)
    got = _db.rows(db, TIMES_SQL, params)
    if not got:
        raise MeasurementError(f"flag override {override_id} is not in ops.flag_overrides")
    return Measurement(got[0], TIMES_SQL, params)

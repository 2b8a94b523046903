"""A broken DLQ replayer for the DRL-003 proof, loaded into the drill's own process with `-p lax_replayer`
(tests/drills on PYTHONPATH): the real replayer, except that it reads its item rail (replay.batch_items) as
unlimited -- the bug under test. The other rails, and every other budget, are read as usual."""

from __future__ import annotations

from opsproof.plane import common

_read_budget = common.read_budget


def _lax(conn, key, default):
    return 10**9 if key == "replay.batch_items" else _read_budget(conn, key, default)


common.read_budget = _lax

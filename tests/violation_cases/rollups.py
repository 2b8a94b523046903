"""The request rollup (migration 20261203001100) must not become a new way to be falsely green (issue 13).

SLO-002/003 and WCH-001 read the per-minute / per-hour rollup where it can answer and raw rows elsewhere. A rollup
that stopped being refreshed, or lost minutes, must turn TEL-008 to ERROR while every reading stays right (the SLO
controls stay green because the raw fallback gives them the true figures); rows changed after rolling are read raw
until re-rolled. Every case runs with no top-up (the refresh that would repair the rollup does not run); the undo
is `ops.rollup_refresh()`, which catches up, fills gaps and re-rolls dirty minutes.
"""

from __future__ import annotations

from suite_runner import NO_TOP_UP
from violation_cases import Case

STOPPED = {NO_TOP_UP: "0"}
REFRESH = "select ops.rollup_refresh(100000)"

CASES = [
    Case(name="TEL-008/rollup-refresh-stopped-30-min", red={"TEL-008": "error"},
         inject="""
           update ops.rollup_state set rolled_until = rolled_until - interval '30 minutes' where id;
           delete from ops.rollup_minute where minute >= (select rolled_until from ops.rollup_state where id);
           delete from ops.rollup_hour where hour >= date_trunc('hour', (select rolled_until from ops.rollup_state where id));
         """,
         undo=REFRESH, env=dict(STOPPED),
         why="the refresh job stopped 30 min ago: the watermark lags past the 600 s policy (error); the SLO readings "
             "take the last 30 min from raw rows and stay right"),
    Case(name="TEL-008/rollup-gap-5-minutes", red={"TEL-008": "error"},
         inject="""
           delete from ops.rollup_hour where hour = date_trunc('hour', now() - interval '3 hours');
           delete from ops.rollup_minute where minute >= date_trunc('minute', now() - interval '3 hours')
                                           and minute < date_trunc('minute', now() - interval '3 hours') + interval '5 minutes';
         """,
         undo=REFRESH, env=dict(STOPPED),
         why="5 minutes 3 h ago are missing below the watermark: a gap is an error, never 'no traffic'"),
    Case(name="SLO-002/errors-written-after-rolling", red={"SLO-002": "fail"},
         inject="update ops.requests set status = 599 where status = 200 and mod(id, 25) = 0 "
                "and ts >= now() - interval '23 hours' and ts < now() - interval '1 hour'",
         undo="update ops.requests set status = 200 where status = 599; " + REFRESH, env=dict(STOPPED),
         why="rows turned into 5xx AFTER their minutes were rolled (late data): the rollup must not keep the old "
             "success rate; the dirty minutes are read raw and SLO-002 fails"),
    Case(name="ok/rows-changed-after-rolling-are-read-raw", red={},
         inject="update ops.requests set status = status where ts >= now() - interval '2 hours' "
                "and ts < now() - interval '2 hours' + interval '10 minutes'",
         undo=REFRESH, env=dict(STOPPED),
         why="an update of rolled rows marks their minutes dirty: they are read raw until the next refresh re-rolls "
             "them (not a gap, not stale)"),
]

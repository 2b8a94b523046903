"""Flags that only look right: a JSON value of the wrong type is drift, never a pass."""

from violation_cases import Case

_RESTORE_STOP = ("update ops.feature_flags set value = 'false', updated_by = 'migration' "
                 "where key = 'autonomy.emergencyStop'")

CASES = [
    Case(name="FLG-001/zero-is-not-false", red={"FLG-001": "fail"},
         inject="update ops.feature_flags set value = '0', updated_by = 'violation-test' "
                "where key = 'autonomy.emergencyStop'",
         undo=_RESTORE_STOP,
         why="jsonb 0 equals Python False; the kill switch must be the boolean false"),
    Case(name="FLG-001/string-true-is-not-true", red={"FLG-001": "fail"},
         inject="update ops.feature_flags set value = '\"true\"', updated_by = 'violation-test' "
                "where key = 'agents.autonomousEnabled'",
         undo="update ops.feature_flags set value = 'true', updated_by = 'migration' "
              "where key = 'agents.autonomousEnabled'",
         why="the string \"true\" is not the boolean the plane reads"),
    Case(name="FLG-001/newest-override-wins", red={"FLG-001": "fail"},
         inject="insert into ops.flag_overrides (key, value, owner, run_id, reason, expires_at, created_at) values "
                "('autonomy.mode', '\"FULL\"', 'violation-test', 't1', 'old, right value', now() + interval '10 minutes', "
                " now() - interval '1 minute'), "
                "('autonomy.mode', '\"SAFE\"', 'violation-test', 't2', 'new, wrong value', now() + interval '10 minutes', "
                " now())",
         undo="delete from ops.flag_overrides where owner = 'violation-test'",
         why="two live overrides: the effective (newest) one is what counts"),
]

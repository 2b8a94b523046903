"""`opsproof watch`: the green-posture loop (loop.py), its measurements (measure.py), burn-rate rules (burn.py),
alert dedup/escalation (alerts.py); the health score is opsproof.health; actions go through
levers/watch_actions.py (incident levers)."""

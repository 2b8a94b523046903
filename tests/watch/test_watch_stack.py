"""The watch against real stacks: one tick in-process on the session stack (alert mode: samples, no action), and
end to end on a private stack WITH the plane: a breach is injected, `opsproof watch` in act mode alerts and acts
within one interval through an incident lever, the plane obeys, the sample series shows it, a SIGKILLed watch
leaves nothing beyond its lease and never acts twice, and `opsproof incident resume` restores exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psycopg
import pytest

from opsproof import catalog as catalog_mod
from opsproof.measure import incident as mi
from opsproof.policy import load as load_policy
from opsproof.watch.measure import watched_ids

REPO = Path(__file__).resolve().parents[2]


def _samples(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((root / "watch").glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_once_on_the_session_stack(stack, stack_home, tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith(("SUPABASE_", "ALERT_")) or k in ("OPSPROOF_TARGET",):
            monkeypatch.delenv(k)
    monkeypatch.setenv("OPSPROOF_HOME", str(stack_home))
    from opsproof.watch.cli import build

    lines: list[str] = []
    w = build(target=None, policy_path=REPO / "opsproof.toml", evidence_dir=tmp_path / "ev", interval=None,
              log=lines.append)
    assert w.interval_s == 10 and w.policy.watch.mode == "alert"  # the embedded stack's env: seconds, not 300
    w.state_dir = tmp_path / "state"
    from opsproof.watch.alerts import AlertState

    w.state = AlertState.load(w.state_dir / "alerts.json")
    first = w.run(once=True)
    assert len(lines) == 1 and f"score {first['score']}" in lines[0]
    (s,) = _samples(tmp_path / "ev")
    assert {"at", "target", "score", "components", "controls", "alerts", "actions"} <= set(s)
    assert s["target"] == "embedded" and isinstance(s["score"], int) and 0 <= s["score"] <= 100
    ids = [c["id"] for c in s["controls"]]
    assert ids == watched_ids(catalog_mod.load()) and {"FLG-001", "SLO-002", "WCH-002", "TEL-001"} <= set(ids)
    assert all(c["verdict"] in ("pass", "fail", "error") for c in s["controls"])
    assert s["actions"] == []  # alert mode never acts
    assert set(s["burn"]["rules"]) == {"page", "ticket"}
    red = [c for c in s["controls"] if c["verdict"] != "pass"]
    assert bool(red) == bool(s["caps"])  # not all green = capped: never a green-looking score
    # a second tick pages nothing already paged (dedup across the state file)
    w2 = build(target=None, policy_path=REPO / "opsproof.toml", evidence_dir=tmp_path / "ev", interval=None,
               log=lines.append)
    w2.state_dir = tmp_path / "state"
    w2.state = AlertState.load(w2.state_dir / "alerts.json")
    second = w2.run(once=True)
    assert [a for a in second["alerts"] if a["kind"] == "breach"] == []


def _act_policy(tmp_path: Path) -> Path:
    text = (REPO / "opsproof.toml").read_text()
    text = re.sub(r'(?m)^mode = "alert".*$', 'mode = "act"', text)
    p = tmp_path / "opsproof-act.toml"
    p.write_text(text)
    assert load_policy(p).watch.mode == "act"
    return p


def _wait(pred, timeout: float, every: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    return None


def test_act_end_to_end_with_the_plane(watch_home, tmp_path):
    wh = watch_home
    policy = _act_policy(tmp_path)
    ev = tmp_path / "ev"
    interval = 2.0
    with psycopg.connect(wh.dsn, autocommit=True) as c:
        before = mi.table_md5(c).result
        # the breach: agent success drops (40 tasks failed in the last minute; WCH-002 -> quarantine)
        c.execute("""insert into ops.agent_tasks (kind, status, attempts, enqueued_at, started_at, finished_at, error)
                     select 'watch-test', 'failed', 1, now() - interval '50 s', now() - interval '40 s', now(), 'injected'
                       from generate_series(1, 40)""")
    t_inject = time.monotonic()
    proc = wh.popen("watch", "--interval", str(interval), "--policy", str(policy), "--evidence-dir", str(ev),
                    out=tmp_path / "watch.out")
    try:
        def opened():
            with psycopg.connect(wh.dsn, autocommit=True) as c:
                return c.execute("""select id::text, changes, response from ops.incidents where status = 'open'
                                    and response->>'source' = 'opsproof.watch:embedded:WCH-002'""").fetchall()
        rows = _wait(lambda: [r for r in opened() if "verified" in r[2]], 60)  # opened, then verified on the plane
        assert rows, (tmp_path / "watch.out").read_text()
        assert len(rows) == 1
        iid, changes, response = rows[0]
        assert [(c["key"], c["before"], c["after"]) for c in changes] == [("agents.autonomousEnabled", True, False)]
        # the plane obeys: the worker pool halts (its heartbeat says so) -- verified by the lever within the level's timeout
        assert response["verified"], response
        with psycopg.connect(wh.dsn, autocommit=True) as c:
            hb = mi.heartbeats(c, ["plane.worker"]).result["plane.worker"]["detail"]
        assert hb["halted"] is True
        # the sample series shows the breach, the alert and the action, within one interval of the first tick
        samples = _wait(lambda: [s for s in _samples(ev) if s["actions"]] and _samples(ev), 10)
        acted = next(i for i, s in enumerate(samples) if s["actions"])
        assert acted == 0, "the watch acts on the first tick that sees the breach"
        s = samples[acted]
        assert any(a["key"] == "WCH-002" and a["kind"] == "breach" and a.get("delivered") for a in s["alerts"])
        assert s["actions"][0]["incident_id"] == iid and s["actions"][0]["action"] == "quarantine"
        assert next(c for c in s["controls"] if c["id"] == "WCH-002")["verdict"] == "fail"
        latency = time.monotonic() - t_inject
        # a few more ticks: never a second action for the same breach
        n = len(_samples(ev))
        _wait(lambda: len(_samples(ev)) >= n + 2, 20)
        assert len(opened()) == 1
        later = _samples(ev)[-1]
        assert later["score"] <= 49  # FLG-001 (critical) is red while the agents are quarantined: capped
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # a SIGKILLed watch: its acting lease is gone with its connection; nothing but the whole incident remains
    with psycopg.connect(wh.dsn, autocommit=True) as c:
        leases = _wait(lambda: c.execute("select count(*) from pg_stat_activity where application_name = "
                                         "'opsproof-watch-lease'").fetchone()[0] == 0 or None, 10)
        assert leases, "the acting lease outlived the killed watch"
        overrides = c.execute("select count(*) from ops.flag_overrides where released_at is null and "
                              "expires_at > now() and owner like '%watch%'").fetchone()[0]
        assert overrides == 0
    # restarted: the breach still lasts, the action is not taken twice, not re-paged
    again = wh.cli("watch", "--once", "--policy", str(policy), "--evidence-dir", str(ev), timeout=60)
    assert "opsproof watch" in again.stdout, again.stderr
    last = _samples(ev)[-1]
    assert last["actions"] == [] and not [a for a in last["alerts"] if a["key"] == "WCH-002"]
    assert len(opened()) == 1
    # resume restores exactly what changed, and the plane comes back
    res = wh.cli("incident", "resume", iid, timeout=90)
    assert res.returncode == 0, res.stderr + res.stdout
    with psycopg.connect(wh.dsn, autocommit=True) as c:
        assert mi.table_md5(c).result == before
        assert _wait(lambda: mi.heartbeats(c, ["plane.worker"]).result["plane.worker"]["detail"]["halted"] is False, 15)
        c.execute("delete from ops.agent_tasks where kind = 'watch-test'")
    print(f"breach -> action latency: {latency:.1f}s (interval {interval}s)")

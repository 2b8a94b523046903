"""The green-posture loop: every interval, one tick --

  measure   the gate + watchlist controls, in-process, with the suite's measurements and the catalog's
            thresholds (watch/measure.py), and the success SLO's burn rates per window (watch/burn.py)
  score     the health score (opsproof.health) over those entries and the open incidents
  alert     one Slack-format message per breach, deduplicated, escalated, one recovery (watch/alerts.py)
  act       only with [watch] mode = "act" (and never on a production target unless allow_on_production):
            the breach's action from [watch] actions, through the incident levers (levers/watch_actions.py),
            once per breach, under the acting lease; lifted by `opsproof incident resume <id>` or, with
            recovery = "auto", by the watch after recovery_ticks clean ticks
  record    one posture sample, a JSON line in <evidence root>/watch/YYYY-MM-DD.jsonl:
            {at, target, score, components, caps, controls: [{id, verdict, measured, required, ...}], burn,
             alerts, actions, open_incidents, resources, mode, interval_s, tick_s}
  print     one line
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from opsproof import clock
from opsproof.health import score as health_score
from opsproof.watch import burn as burnmod
from opsproof.watch.alerts import AlertState, Breach
from opsproof.watch.measure import measure_controls

UNMEASURED = ("error", "skipped", "interrupted", "not_run")
# breaches of these never pull the big red button: the watch's own actions change flags and budgets
POSTURE_PREFIXES = ("FLG-", "BUD-")


@dataclass
class Watcher:
    settings: Any
    policy: Any
    catalog: Any
    evidence_root: Path
    state_dir: Path
    interval_s: float
    log: Callable[[str], None] = print
    target: Any = None
    lever_ctx: Any = None
    lease: Any = None
    state: AlertState = field(init=False)
    ticks: int = 0

    def __post_init__(self) -> None:
        self.state = AlertState.load(self.state_dir / "alerts.json")

    @property
    def name(self) -> str:
        return self.settings.name

    # -- pieces ---------------------------------------------------------------------------------------------
    def _target(self):
        if self.target is None:
            from opsproof.target.db import Target

            self.target = Target(self.settings.db_url.get_secret_value(), min_size=1, max_size=3)
        return self.target

    def _ctx(self):
        if self.lever_ctx is None:
            from opsproof.levers.incident import context_from_settings

            verify = self.settings.target == "embedded" or os.environ.get("OPSPROOF_WATCH_VERIFY") == "1"
            self.lever_ctx = context_from_settings(self.settings, self.policy, verify=verify, operator="watch")
        return self.lever_ctx

    def _burn(self, end: datetime) -> dict:
        from opsproof.measure import ops

        rules = self.policy.watch.burn_rules
        if not rules:
            return {}
        t = self._target()
        p = self.policy

        def snap(s, e):
            return ops.slo_snapshot(t, s, e, p.slo.success_pct_min, p.slo.uptime_pct_min, burn_hours=[],
                                    settle_s=p.telemetry.settle_s)
        try:
            rates, queries = burnmod.measure_rates(snap, rules, end)
        except Exception as exc:  # no burn rate shown: reported, never a silent "not burning"
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        return {"rates": {f"{w}s": r for w, r in rates.items()}, "rules": burnmod.evaluate(rules, rates),
                "query": next(iter(queries.values()), None)}

    def _open_incidents(self) -> list[dict] | None:
        """The open incidents, or None when they cannot be read (the score is then capped, never credited)."""
        from opsproof.measure import incident as mi

        try:
            rows = mi.open_incidents(self._target()).result
        except Exception:  # noqa: BLE001 - unknown is not zero
            return None
        return [{"id": r["id"], "level": r["level"], "type": r["type"], "plan": r["plan"],
                 "opened_at": r["opened_at"].isoformat() if hasattr(r["opened_at"], "isoformat") else r["opened_at"]}
                for r in rows]

    def _trace(self) -> str | None:
        from opsproof.measure import incident as mi

        try:
            ids = mi.recent_failed_traces(self._target(), limit=1).result
        except Exception:
            return None
        return ids[0] if ids else None

    @staticmethod
    def _first_bad(entry: dict) -> dict:
        recs = entry.get("records") or []
        return next((r for r in recs if r.get("verdict") == "fail"), recs[0] if recs else {})

    def _breaches(self, entries: list[dict], burn: dict) -> list[Breach]:
        out: list[Breach] = []
        trace = None
        for e in entries:
            v = e["verdict"]
            if v == "pass" or v == "waived":
                continue
            if e["id"] == "SLO-002" and v == "fail" and "rules" in burn:
                continue  # the success SLO pages through its burn-rate rules: a slow burn does not page
            r = self._first_bad(e)
            tid = None
            det = r.get("detail")
            if isinstance(det, list) and det and isinstance(det[0], dict):
                tid = det[0].get("trace_id")
            if tid is None:
                trace = trace or self._trace()
                tid = trace
            out.append(Breach(key=e["id"], severity=e["severity"], control=e["id"],
                              title=e["title"] if v == "fail" else f"{e['title']} (cannot measure)",
                              measured=r.get("measured") if v == "fail" else "not measured",
                              required=r.get("threshold"), message=e.get("message", ""), trace_id=tid))
        for name, rule in (burn.get("rules") or {}).items():
            if rule["firing"]:
                trace = trace or self._trace()
                out.append(Breach(key=f"burn:{name}", severity=rule["severity"], control="SLO-002",
                                  title=f"error budget burning ({name})",
                                  measured=f"{rule['long_burn']}x / {rule['short_burn']}x",
                                  required=f"< {rule['factor']}x over {rule['long_s']}s and {rule['short_s']}s",
                                  message=rule["why"], trace_id=trace))
        if "error" in burn:
            out.append(Breach(key="burn:error", severity="high", control="SLO-002",
                              title="burn rates cannot be measured", measured="not measured", required="a burn rate",
                              message=burn["error"]))
        return out

    def _post(self, msg: dict) -> dict:
        url = self.settings.alert_webhook_url
        if url is None:
            return {"delivered": False, "error": "no ALERT_WEBHOOK_URL"}
        try:
            resp = httpx.post(url.get_secret_value(), json=msg["payload"], timeout=5.0)
            return {"delivered": resp.is_success, "status": resp.status_code}
        except httpx.HTTPError as exc:
            return {"delivered": False, "error": type(exc).__name__}

    def _may_act(self) -> tuple[bool, str]:
        w = self.policy.watch
        if w.mode != "act":
            return False, 'mode "alert"'
        if self.settings.production and not w.allow_on_production:
            return False, "target marked production ([watch] allow_on_production = false)"
        return True, ""

    def _act(self, breaches: list[Breach]) -> list[dict]:
        from opsproof.errors import OpsproofError
        from opsproof.levers import incident as inc
        from opsproof.levers import watch_actions as wa

        w = self.policy.watch
        done: list[dict] = []
        current = {b.key: b for b in breaches}
        ok, why = self._may_act()
        # bookkeeping of earlier actions: the operator's resume, the recovery rule
        for key, a in list(self.state.actions.items()):
            status = a.get("status", "open")
            if status == "open":
                try:
                    status = wa.incident_status(self._ctx().dsn, a["incident_id"]) or "resolved"
                except Exception:
                    status = "open"
                a["status"] = status
            if key in current:
                a["clean_ticks"] = 0
                continue
            a["clean_ticks"] = a.get("clean_ticks", 0) + 1
            if status == "open" and w.recovery == "auto" and a["clean_ticks"] >= w.recovery_ticks and ok:
                try:
                    inc.resume_or_report(self._ctx(), a["incident_id"])
                    a["status"] = "resolved"
                    done.append({"key": key, "action": "resume", "incident_id": a["incident_id"],
                                 "why": f"recovered for {a['clean_ticks']} ticks (recovery = auto)"})
                except OpsproofError as exc:
                    done.append({"key": key, "action": "resume", "incident_id": a["incident_id"], "error": str(exc)})
            if a["status"] != "open":
                self.state.actions.pop(key)  # the breach is over and its action lifted: a new breach may act again
        if not ok:
            return done
        todo: list[tuple[Breach, str]] = []
        for b in breaches:
            action = w.actions.get(b.key)
            if action is None and w.big_red_button and b.severity == "critical" \
                    and not b.key.startswith(POSTURE_PREFIXES):
                action = "big_red_button"
            if action is None or b.key in self.state.actions:
                continue  # never twice for one breach
            todo.append((b, action))
        if not todo:
            return done
        if self.lease is None:
            self.lease = wa.ActingLease(self._ctx().dsn, self.name)
        if not self.lease.acquire():
            return done + [{"key": b.key, "action": a, "skipped": "another watch holds the acting lease"}
                           for b, a in todo]
        for b, action in todo:
            t0 = time.monotonic()
            try:
                res = wa.act(self._ctx(), action, target=self.name, key=b.key, level=b.severity,
                             description=f"{b.key} {b.title}: measured {b.measured}, required {b.required}",
                             throttle_step_pct=w.throttle_step_pct, throttle_min=w.throttle_min,
                             rollback_webhook=w.rollback_webhook, trace_id=b.trace_id)
            except OpsproofError as exc:
                done.append({"key": b.key, "action": action, "error": str(exc)})
                continue
            self.state.actions[b.key] = {"incident_id": res["id"], "action": action, "status": "open",
                                         "at": clock.now().isoformat(), "clean_ticks": 0}
            self.state.save()  # at once: a watch killed after this point never acts twice for this breach
            r = res["response"]
            done.append({"key": b.key, "action": action, "incident_id": res["id"], "reused": res["reused"],
                         "changed": [{k: c[k] for k in ("kind", "key", "before", "after") if k in c}
                                     for c in res["changes"] if "before" in c],
                         "verified": r.get("verified"), "time_to_effect_s": r.get("time_to_effect_s"),
                         "problems": r.get("problems", []), "s": round(time.monotonic() - t0, 3)})
        return done

    def _write(self, sample: dict) -> Path:
        day = sample["at"][:10]
        folder = self.evidence_root / "watch"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{day}.jsonl"
        line = json.dumps(sample, default=str, separators=(",", ":")) + "\n"
        with open(path, "a", encoding="utf-8") as fh:   # one write of one line: readers never see half a sample
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._prune(folder)
        return path

    def _prune(self, folder: Path) -> None:
        keep = self.policy.evidence.retention_days
        cutoff = (clock.now().astimezone(timezone.utc).date() - timedelta(days=keep)).isoformat()
        for p in folder.glob("*.jsonl"):
            if p.stem < cutoff:
                p.unlink(missing_ok=True)

    # -- the tick -------------------------------------------------------------------------------------------
    def tick(self) -> dict:
        t0 = time.monotonic()
        now = clock.now().astimezone(timezone.utc)
        try:
            entries = measure_controls(self._target(), self.settings, self.policy, self.catalog, now)
            burn = self._burn(now)
        except Exception as exc:  # the target is gone: every control is unmeasured, which is an error, never a pass
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            from opsproof.watch.measure import watched_ids

            entries = [{"id": cid, "title": self.catalog.get(cid).title, "area": self.catalog.get(cid).area,
                        "severity": self.catalog.get(cid).severity, "verdict": "error", "message": msg,
                        "records": []} for cid in watched_ids(self.catalog)]
            burn = {"error": msg}
        open_inc = self._open_incidents()
        health = health_score(entries, self.policy, open_incidents=open_inc)
        breaches = self._breaches(entries, burn)
        messages = self.state.update(breaches, target=self.name, trace_link_template=self.settings.trace_link_template)
        alerts = []
        for m in messages:
            alerts.append({k: m[k] for k in ("kind", "key", "severity", "title", "trace_link")} | self._post(m))
        actions = self._act(breaches)
        if actions:
            open_inc = self._open_incidents()
        self.state.save()
        self.ticks += 1
        resources = next((r.get("detail") for e in entries if e["id"] == "RES-001" for r in e["records"]), None)
        conns = next((r.get("detail") for e in entries if e["id"] == "RES-002" for r in e["records"]), None)
        sample = {
            "at": now.isoformat(), "target": self.name, "score": health["score"], "components": health["components"],
            "caps": health["caps"], "formula": health["formula"],
            "controls": [{"id": e["id"], "verdict": e["verdict"], "measured": self._first_bad(e).get("measured"),
                          "required": self._first_bad(e).get("threshold"), "severity": e["severity"],
                          "area": e["area"], "window": e.get("window"), "message": e.get("message", "")[:300]}
                         for e in entries],
            "burn": burn, "alerts": alerts, "actions": actions, "open_incidents": open_inc,
            "breaches": sorted(self.state.open), "acted": {k: v["incident_id"] for k, v in self.state.actions.items()},
            "resources": {"disk": resources, "connections": conns} if resources or conns else None,
            "mode": self.policy.watch.mode, "interval_s": self.interval_s, "tick_s": round(time.monotonic() - t0, 3),
        }
        self._write(sample)
        self.log(self.line(sample))
        return sample

    @staticmethod
    def line(s: dict) -> str:
        ctl = s["controls"]
        npass = sum(1 for c in ctl if c["verdict"] == "pass")
        bad = [f"{c['id']} {c['verdict']}" for c in ctl if c["verdict"] != "pass"]
        page = ((s.get("burn") or {}).get("rules") or {}).get("page")
        burn = f" burn(page) {page['long_burn']}x/{page['short_burn']}x" if page else ""
        acts = [f"{a['action']}:{a.get('incident_id', a.get('error', a.get('skipped', '')))}" for a in s["actions"]]
        return (f"{s['at'][:19]}Z {s['target']} score {s['score']} | {npass}/{len(ctl)} pass"
                + (f" ({', '.join(bad[:6])})" if bad else "") + burn
                + f" | alerts {len(s['alerts'])} | actions {', '.join(acts) if acts else 0} | {s['tick_s']}s")

    def close(self) -> None:
        if self.lease is not None:
            self.lease.release()
        if self.target is not None:
            self.target.close()
            self.target = None

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> dict | None:
        stop = stop or threading.Event()
        last = None

        def _halt(signum, frame):
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _halt)
            signal.signal(signal.SIGINT, _halt)
        try:
            while True:
                t0 = time.monotonic()
                last = self.tick()
                if once or stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0))):
                    break
        finally:
            self.close()
        return last

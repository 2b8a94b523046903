"""Traffic generator: `python -m opsproof.plane.traffic`.

A steady, bounded rate (OPSPROOF_TRAFFIC_RATE req/s, default 5) of real HTTP requests to the API front:
each tick POSTs a load (write to primary) and GETs it back by id (routed read). Every acknowledged
write and every read is one JSON line in <plane dir>/traffic.jsonl:
  {"op": "write", "id": 17, "status": 201, "ts": ...}
  {"op": "read",  "id": 17, "status": 200, "read_from": "replica", "ts": ...}
`lost_writes()` re-reads every acknowledged id through the API and returns those it cannot find: the
proof that a cutover lost or missed no acknowledged write.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path

import httpx

from opsproof.plane import common
from opsproof.plane.settings import PlaneSettings, load_or_exit

log = logging.getLogger("opsproof.plane.traffic")
COMPONENT = "plane.traffic"


def api_url(settings: PlaneSettings) -> str:
    if not settings.ingest_url:
        raise RuntimeError("no API front (OPSPROOF_INGEST_URL)")
    return settings.ingest_url.rstrip("/")


def drive(base_url: str, rate: float, stop: threading.Event, log_path: Path, *, duration_s: float | None = None,
          on_tick=None) -> dict:
    """Send write+read pairs at `rate` pairs/s until stop (or duration). Returns counters."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"writes": 0, "reads": 0, "errors": 0, "read_misses": 0}
    period = 1.0 / rate
    t_end = time.monotonic() + duration_s if duration_s else None
    next_t = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10.0) as client, log_path.open("a") as out:
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            try:
                r = client.post("/api/loads", json={"ref": f"L-{uuid.uuid4().hex[:10]}", "source": "traffic"})
                if r.status_code == 201:
                    oid = r.json()["id"]
                    counts["writes"] += 1
                    out.write(json.dumps({"op": "write", "id": oid, "status": 201, "ts": time.time()}) + "\n")
                    g = client.get(f"/api/loads/{oid}")
                    counts["reads"] += 1
                    if g.status_code != 200:
                        counts["read_misses"] += 1
                    out.write(json.dumps({"op": "read", "id": oid, "status": g.status_code,
                                          "read_from": g.headers.get("x-read-from"), "ts": time.time()}) + "\n")
                else:
                    counts["errors"] += 1
                    out.write(json.dumps({"op": "write", "id": None, "status": r.status_code, "ts": time.time()}) + "\n")
            except httpx.HTTPError as exc:
                counts["errors"] += 1
                out.write(json.dumps({"op": "error", "error": type(exc).__name__, "ts": time.time()}) + "\n")
            out.flush()
            if on_tick:
                on_tick(counts)
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # fell behind (slow server): don't burst to catch up
                next_t = time.monotonic()
            stop.wait(max(0.0, delay))
    return counts


def acknowledged_ids(log_path: Path) -> list[int]:
    if not log_path.exists():
        return []
    ids = []
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("op") == "write" and rec.get("status") == 201:
            ids.append(int(rec["id"]))
    return ids


def lost_writes(base_url: str, log_path: Path) -> list[int]:
    """Acknowledged ids the API cannot read back now."""
    missing = []
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=10.0) as client:
        for oid in acknowledged_ids(log_path):
            if client.get(f"/api/loads/{oid}").status_code != 200:
                missing.append(oid)
    return missing


def run(settings: PlaneSettings, stop: threading.Event) -> None:
    state = {"conn": None, "last": 0.0}

    def tick(counts: dict) -> None:
        if time.monotonic() - state["last"] >= settings.cycle_s:
            state["last"] = time.monotonic()
            try:
                if state["conn"] is None or state["conn"].closed:
                    state["conn"] = common.connect(settings.db_url, app="opsproof-plane-traffic")
                common.heartbeat(state["conn"], COMPONENT, {"rate": settings.traffic_rate, **counts})
            except Exception as exc:  # noqa: BLE001
                log.warning("heartbeat failed: %s", type(exc).__name__)
                state["conn"] = None

    tick({})
    drive(api_url(settings), settings.traffic_rate, stop, settings.plane_dir / "traffic.jsonl", on_tick=tick)
    if state["conn"] is not None:
        state["conn"].close()


def main() -> None:
    common.setup_logging(COMPONENT)
    settings = load_or_exit()
    stopper = common.Stopper().install()
    log.info("traffic up: %.1f req/s -> %s", settings.traffic_rate, api_url(settings))
    run(settings, stopper.event)


if __name__ == "__main__":
    main()

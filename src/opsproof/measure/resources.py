"""Resource utilization: disk, connections, memory and CPU of the target's database server.

Two sources, the same document:

- hosted Supabase (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY): the project's Metrics API
  (`https://<ref>.supabase.co/customer/v1/privileged/metrics`, Prometheus text, HTTP Basic `service_role`),
  parsed with prometheus_client's parser. Series (the supabase-grafana dashboard's): disk = node_filesystem_
  {size,avail}_bytes of the data volume (mountpoint /data, else /); connections = pg_stat_database_num_backends
  vs max_connections_connection_count; memory = 1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes;
  CPU = the non-idle share of node_cpu_seconds_total since boot (one scrape has no rate; evidence only).
- anywhere else (the embedded default, or a target without the Metrics API): Postgres itself -- client backends
  in pg_stat_activity vs max_connections, and the database's size vs the policy's disk budget
  ([resources] disk_budget_bytes). Memory and CPU are not visible from SQL: reported as not measured.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from opsproof.measure.models import Measurement
from opsproof.recorder import MeasurementError

SQL_SOURCE = "sql"
METRICS_SOURCE = "metrics-api"

SQL = ("select pg_database_size(current_database())::bigint as db_bytes, "
       "(select count(*) from pg_stat_activity where backend_type = 'client backend')::int as connections, "
       "current_setting('max_connections')::int as max_connections")

DATA_MOUNTS = ("/data", "/")


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 2)


def from_postgres(target, disk_budget_bytes: int) -> Measurement[dict]:
    """The embedded default's figures, from one statement."""
    row = target.rows(SQL)
    if not row:
        raise MeasurementError("the resource query returned no row")
    r = row[0]
    doc = {
        "source": SQL_SOURCE,
        "disk": {"used_bytes": int(r["db_bytes"]), "size_bytes": int(disk_budget_bytes),
                 "used_pct": _pct(r["db_bytes"], disk_budget_bytes),
                 "what": "pg_database_size(current_database()) vs [resources] disk_budget_bytes"},
        "connections": {"used": int(r["connections"]), "max": int(r["max_connections"]),
                        "used_pct": _pct(r["connections"], r["max_connections"]),
                        "what": "client backends in pg_stat_activity vs max_connections"},
        "memory": None, "cpu": None,
        "not_measured": "memory and CPU are not visible from SQL (the Metrics API reports them on hosted Supabase)",
    }
    return Measurement(doc, SQL)


def _samples(text: str) -> dict[str, list[tuple[dict, float]]]:
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError) as exc:
        raise MeasurementError(f"the Metrics API answer is not Prometheus text: {str(exc)[:120]}") from None
    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in families:
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _one(samples: dict, name: str, **labels: str) -> float | None:
    vals = [v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    return sum(vals) if vals else None


def parse_metrics(text: str) -> dict[str, Any]:
    """The Metrics API's Prometheus text -> the resource document (None where a series is absent)."""
    samples = _samples(text)
    if not samples:
        raise MeasurementError("the Metrics API answered with no series")
    disk = None
    for mount in DATA_MOUNTS:
        size = _one(samples, "node_filesystem_size_bytes", mountpoint=mount)
        avail = _one(samples, "node_filesystem_avail_bytes", mountpoint=mount)
        if size and avail is not None:
            disk = {"used_bytes": int(size - avail), "size_bytes": int(size), "used_pct": _pct(size - avail, size),
                    "what": f"node_filesystem_size_bytes - node_filesystem_avail_bytes of {mount}", "mountpoint": mount}
            break
    backends = _one(samples, "pg_stat_database_num_backends")
    max_conn = _one(samples, "max_connections_connection_count")
    connections = None if backends is None or not max_conn else {
        "used": int(backends), "max": int(max_conn), "used_pct": _pct(backends, max_conn),
        "what": "pg_stat_database_num_backends vs max_connections_connection_count"}
    mem_total = _one(samples, "node_memory_MemTotal_bytes")
    mem_avail = _one(samples, "node_memory_MemAvailable_bytes")
    memory = None if not mem_total or mem_avail is None else {
        "used_bytes": int(mem_total - mem_avail), "total_bytes": int(mem_total),
        "used_pct": _pct(mem_total - mem_avail, mem_total)}
    cpu_all = samples.get("node_cpu_seconds_total", [])
    total = sum(v for _, v in cpu_all)
    idle = sum(v for lab, v in cpu_all if lab.get("mode") == "idle")
    cpu = None if not total else {"busy_pct_since_boot": _pct(total - idle, total),
                                  "cpus": len({lab.get("cpu") for lab, _ in cpu_all})}
    return {"source": METRICS_SOURCE, "disk": disk, "connections": connections, "memory": memory, "cpu": cpu,
            "series": len(samples)}


def from_metrics_api(fetch) -> Measurement[dict]:
    """`fetch()` -> (url, Prometheus text): target.http.metrics_text bound to the settings."""
    url, text = fetch()
    doc = parse_metrics(text)
    return Measurement(doc, f"GET {url} (HTTP Basic service_role; Prometheus text, {doc['series']} series)",
                       source=METRICS_SOURCE)


def measure(target, settings, disk_budget_bytes: int) -> Measurement[dict]:
    """The Metrics API when configured (hosted), else Postgres itself."""
    from opsproof.target import http

    if http.metrics_configured(settings):
        return from_metrics_api(lambda: http.metrics_text(settings))
    return from_postgres(target, disk_budget_bytes)

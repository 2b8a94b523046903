"""Resource utilization: disk and connection saturation of the target's database server.

Hosted Supabase: the project's Metrics API (CPU, memory, disk, connections); anywhere else: Postgres itself
(database size vs the policy's disk budget, client backends vs max_connections). Each record names its source.
"""

from __future__ import annotations

import pytest

from opsproof.measure import resources


@pytest.fixture(scope="module")
def measured(target, settings, policy):
    return resources.measure(target, settings, policy.resources.disk_budget_bytes)


def _artifact(evidence, m):
    evidence.artifact("resources.json", {**m.result, "query": m.query})


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("RES-001")
def test_disk_usage(measured, policy, evidence):
    _artifact(evidence, measured)
    disk = measured.result.get("disk")
    evidence.require(disk is not None and disk.get("used_pct") is not None,
                     f"the {measured.source} answer holds no disk figures: disk usage cannot be shown")
    evidence.check("disk used", disk["used_pct"], "<=", policy.resources.disk_used_pct_max, unit="%",
                   query=measured.query, source=measured.source,
                   detail={**disk, "memory": measured.result.get("memory"), "cpu": measured.result.get("cpu")})


@pytest.mark.daily
@pytest.mark.watchlist
@pytest.mark.control("RES-002")
def test_connection_saturation(measured, policy, evidence):
    _artifact(evidence, measured)
    conns = measured.result.get("connections")
    evidence.require(conns is not None and conns.get("used_pct") is not None,
                     f"the {measured.source} answer holds no connection figures: saturation cannot be shown")
    evidence.check("connections used", conns["used_pct"], "<=", policy.resources.connections_used_pct_max,
                   unit="%", query=measured.query, source=measured.source, detail=conns)

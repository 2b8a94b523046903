"""measure/backups.py: a backup counts only when opsproof re-establishes it in this run -- file readable,
sha256 matches, `pg_restore --list` lists it -- or the Management API lists it COMPLETED. Each backup that
does not count is named with why."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx

from opsproof.errors import UsageError
from opsproof.measure import backups
from opsproof.target.http import ManagementApi

RECORDED = Path(__file__).parent / "target" / "recorded"
REF = "abcdefghijklmnopqrst"
TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"
NOW = datetime.now(timezone.utc)


class FakeTarget:
    def __init__(self, rows):
        self._rows = rows
        self.queries = []

    def rows(self, sql, params=None):
        self.queries.append(sql)
        return sorted(self._rows, key=lambda r: r["taken_at"], reverse=True)[: params[0]]


def row(i, location, sha=None, *, hours=1.0, verified=True, size=100):
    return {"id": i, "taken_at": NOW - timedelta(hours=hours), "kind": "pg_dump", "location": str(location),
            "bytes": size, "sha256": sha, "verified": verified}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real_dump(stack) -> Path:
    """The real pg_dump -Fc the session stack took at creation (stack/backup.py)."""
    dumps = sorted(stack.backups.glob("*.dump"))
    assert dumps, "the session stack took no backup"
    return dumps[-1]


@pytest.fixture(scope="module")
def pg_restore() -> Path:
    from opsproof.stack.binaries import find_bindir

    return find_bindir() / "pg_restore"


def test_a_real_archive_reverifies(tmp_path, real_dump, pg_restore):
    r = backups.measure(FakeTarget([row(1, real_dump, sha(real_dump))]), pg_restore=pg_restore)
    assert r.newest is not None and r.newest.verified and "pg_restore --list" in r.newest.how
    assert r.unverified == [] and 0.9 < r.age_hours(NOW) < 1.1
    assert any(q.startswith(f"{pg_restore} --list") for q in r.ran) and r.ran[0].startswith("select")


@pytest.mark.parametrize("case, why", [
    ("remote", "remote location and no Management API configured"),
    ("no-sha", "no sha256 recorded"),
    ("missing", "does not exist"),
    ("mismatch", "does not match its recorded sha256"),
    ("garbage", "pg_restore --list rejects"),
    ("relative", "not an absolute path"),
    ("flag-off", "not marked verified"),
])
def test_each_kind_of_unverifiable_backup_is_walked_past_and_named(case, why, tmp_path, real_dump, pg_restore):
    copy = tmp_path / "copy.dump"
    shutil.copyfile(real_dump, copy)
    garbage = tmp_path / "garbage.dump"
    garbage.write_bytes(b"not an archive\n" * 100)
    bad = {
        "remote": row(9, "s3://bucket/x.dump", "ab" * 32),
        "no-sha": row(9, copy, None),
        "missing": row(9, tmp_path / "gone.dump", "ab" * 32),
        "mismatch": row(9, copy, "ab" * 32),
        "garbage": row(9, garbage, sha(garbage)),
        "relative": row(9, "backups/x.dump", "ab" * 32),
        "flag-off": row(9, copy, sha(copy), verified=False),
    }[case]
    good_but_old = row(1, real_dump, sha(real_dump), hours=72)
    r = backups.measure(FakeTarget([bad, good_but_old]), pg_restore=pg_restore)
    assert [c.ref.split(" (")[0] for c in r.tried] == ["ops.backups id 9", "ops.backups id 1"]
    assert r.unverified[0].why and why in r.unverified[0].why, r.unverified[0].why
    assert r.newest.ref.startswith("ops.backups id 1") and 71.9 < r.age_hours(NOW) < 72.1


def test_nothing_verifiable_gives_no_newest(tmp_path):
    r = backups.measure(FakeTarget([row(1, "s3://b/1.dump", "ab" * 32), row(2, tmp_path / "x", "ab" * 32, hours=2)]),
                        pg_restore=None)
    assert r.newest is None and len(r.unverified) == 2
    assert backups.measure(FakeTarget([]), pg_restore=None).newest is None


def test_no_pg_restore_means_not_verified(tmp_path, real_dump):
    r = backups.measure(FakeTarget([row(1, real_dump, sha(real_dump))]), pg_restore=None)
    assert r.newest is None and "no pg_restore" in r.unverified[0].why


def test_walk_stops_at_the_first_reverified_backup(tmp_path, real_dump, pg_restore):
    r = backups.measure(FakeTarget([row(1, real_dump, sha(real_dump), hours=1),
                                    row(2, tmp_path / "older-missing.dump", "ab" * 32, hours=30)]),
                        pg_restore=pg_restore)
    assert len(r.tried) == 1 and r.newest.verified


# -- hosted Supabase: the platform's own list (recorded Management API answers) ------------------------

def recorded(name: str) -> httpx.Response:
    rec = json.loads((RECORDED / f"{name}.json").read_text())
    return httpx.Response(rec["status"], headers=rec.get("headers", {}), content=json.dumps(rec["body"]).encode())


@pytest.fixture
def api():
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as mock:
        yield mock


def mgmt():
    return ManagementApi(TOKEN, REF)


def test_platform_list_counts_completed_backups(api):
    route = api.get(f"https://api.supabase.com/v1/projects/{REF}/database/backups").mock(
        return_value=recorded("mgmt_backups"))
    r = backups.measure(FakeTarget([row(7, "s3://bucket/x.dump", "ab" * 32,
                                        hours=(NOW - datetime(2025, 6, 14, tzinfo=timezone.utc)).total_seconds() / 3600)]),
                        management_api=mgmt, pg_restore=None)
    assert route.called and route.calls[0].request.headers["authorization"] == f"Bearer {TOKEN}"
    # newest first: the ops.backups row (remote: the platform list is checked instead), the PENDING one, then COMPLETED
    assert "platform's backup list" in r.tried[0].why
    assert r.tried[1].why == "platform status PENDING"
    assert r.newest.ref == "platform backup 48123907 (physical)"
    assert r.newest.taken_at == datetime(2025, 6, 12, 3, 7, 41, 512000, tzinfo=timezone.utc)
    assert f"GET /v1/projects/{REF}/database/backups" in r.ran and "management-api" in r.sources


def test_platform_pitr_point_counts(api):
    api.get(f"https://api.supabase.com/v1/projects/{REF}/database/backups").mock(return_value=recorded("mgmt_backups_pitr"))
    r = backups.measure(FakeTarget([]), management_api=mgmt, pg_restore=None)
    assert r.newest.kind == "pitr" and r.newest.taken_at == datetime.fromtimestamp(1749769200, tz=timezone.utc)


def test_platform_with_no_backups_verifies_nothing(api):
    api.get(f"https://api.supabase.com/v1/projects/{REF}/database/backups").mock(return_value=recorded("mgmt_backups_none"))
    assert backups.measure(FakeTarget([]), management_api=mgmt, pg_restore=None).newest is None


def test_platform_refusing_the_token_is_an_error_not_a_pass(api):
    api.get(f"https://api.supabase.com/v1/projects/{REF}/database/backups").mock(return_value=recorded("mgmt_401"))
    with pytest.raises(UsageError, match="refused the token"):
        backups.measure(FakeTarget([]), management_api=mgmt, pg_restore=None)

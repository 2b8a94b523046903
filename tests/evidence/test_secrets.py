"""Secrets never reach the pack: commit refuses (naming the file, never the secret); the scan sees bytes,
encodings and tarball members."""

from __future__ import annotations

import gzip
import io
import tarfile
from datetime import date

import pytest

from opsproof.evidence import EvidenceError, PackWriter, find_secrets, redact

DAY = date(2026, 11, 20)
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DB_PASSWORD = "p@ss/w0rd&more"
SECRETS = [JWT_SECRET, DB_PASSWORD, "short"]


def test_commit_refused_when_a_file_holds_a_secret(tmp_path):
    w = PackWriter(tmp_path, DAY)
    w.add_json("results.json", {"ok": True})
    w.add_text("logs/run.log", f"connecting with key={JWT_SECRET}\n")
    with pytest.raises(EvidenceError) as err:
        w.commit({"target": "embedded"}, secrets=SECRETS)
    msg = str(err.value)
    assert "logs/run.log" in msg
    assert JWT_SECRET not in msg and DB_PASSWORD not in msg
    assert list(tmp_path.iterdir()) == []  # nothing committed, staging (with the secret) gone


def test_commit_refused_for_encoded_secret_and_metadata(tmp_path):
    w = PackWriter(tmp_path, DAY)
    w.add_text("report.html", "<td>postgresql://postgres:p%40ss%2Fw0rd%26more@db:5432</td>")
    with pytest.raises(EvidenceError, match="report.html"):
        w.commit({}, secrets=SECRETS)
    w = PackWriter(tmp_path, DAY)
    w.add_text("junit.xml", "<failure>p@ss/w0rd&amp;more</failure>")
    with pytest.raises(EvidenceError, match="junit.xml"):
        w.commit({}, secrets=SECRETS)
    w = PackWriter(tmp_path, DAY)
    w.add_json("ok.json", {})
    with pytest.raises(EvidenceError, match="metadata") as err:
        w.commit({"note": JWT_SECRET}, secrets=SECRETS)
    assert JWT_SECRET not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_scrub_redacts_text_and_commits(tmp_path):
    w = PackWriter(tmp_path, DAY)
    w.add_text("junit.xml", f"<system-out>token {JWT_SECRET}</system-out>")
    pack = w.commit({}, secrets=SECRETS, scrub=True)
    assert "[REDACTED]" in (pack / "junit.xml").read_text()
    assert find_secrets(pack, SECRETS) == []


def test_clean_pack_commits_and_whole_pack_grep_is_clean(tmp_path):
    w = PackWriter(tmp_path, DAY)
    w.add_json("results.json", {"host": "db:5432"})
    w.add_text("short.txt", "short short")  # secrets under 8 chars are not scanned
    pack = w.commit({"host": f"postgresql://postgres:{DB_PASSWORD}@db:5432/postgres"}, secrets=SECRETS)
    assert find_secrets(tmp_path, SECRETS) == []
    assert DB_PASSWORD not in (pack / "manifest.json").read_text()


def test_find_secrets_bytes_names_and_tarballs(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x00\xff" + JWT_SECRET.encode() + b"\x00")
    (tmp_path / "utf16.txt").write_bytes(f"x {JWT_SECRET} y".encode("utf-16-le"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"pw={DB_PASSWORD}".encode()
        info = tarfile.TarInfo("2026-11-01/env.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "2026-11-01.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    hits = find_secrets(tmp_path, SECRETS)
    assert ("blob.bin", 0) in hits and ("utf16.txt", 0) in hits
    assert ("2026-11-01.tar.gz/2026-11-01/env.txt", 1) in hits
    assert all(JWT_SECRET not in f and DB_PASSWORD not in f for f, _ in hits)
    labelled = find_secrets(tmp_path / "blob.bin", {"SUPABASE_JWT_SECRET": JWT_SECRET})
    assert labelled == [("blob.bin", "SUPABASE_JWT_SECRET")]


def test_secret_across_chunk_boundary(tmp_path):
    from opsproof.evidence import secrets as mod

    big = b"a" * (mod._CHUNK - 5) + JWT_SECRET.encode() + b"b" * 100
    (tmp_path / "big.log").write_bytes(big)
    assert find_secrets(tmp_path, SECRETS) == [("big.log", 0)]


def test_redact():
    text = f"jwt={JWT_SECRET} dsn=postgresql://u:p%40ss%2Fw0rd%26more@h short"
    out = redact(text, SECRETS)
    assert JWT_SECRET not in out and "p%40ss" not in out and out.count("[REDACTED]") == 2
    assert out.endswith("short")
    assert redact(JWT_SECRET.encode(), SECRETS) == b"[REDACTED]"

"""Signed manifests: ed25519 over manifest.json, key outside the evidence tree, verify with and without a
trusted key; tampering, re-signing with another key and stripping the signature are all caught."""

from __future__ import annotations

import json
import stat
from datetime import date, timedelta
from pathlib import Path

import pytest

from helpers import run_cli
from opsproof.errors import UsageError
from opsproof.evidence import PackWriter, compress_pack, verify_chain, verify_pack
from opsproof.evidence.common import sha256_bytes
from opsproof.evidence.signing import (PUBKEY, SIG, fingerprint, generate, load_public, load_signer,
                                       public_pem, signer_for, trusted_keys)

DAY = date(2026, 11, 20)


def make_pack(root: Path, day: date, signer=None, marker: str = "v1") -> Path:
    w = PackWriter(root, day)
    w.add_json("results.json", {"controls": [], "marker": marker})
    w.add_json("audit_anchor.json", {"last_id": 3, "last_hash": "ab" * 32, "rows": 3})
    return w.commit({"target": "embedded", "host": "127.0.0.1:5432/postgres"}, signer=signer)


@pytest.fixture
def key(tmp_path):
    return generate(tmp_path / "keys" / "k.pem")


@pytest.fixture
def other(tmp_path):
    return generate(tmp_path / "keys" / "other.pem")


def test_keygen_writes_a_0600_key_and_refuses_to_replace_it(tmp_path):
    path = tmp_path / "keys" / "k.pem"
    s = generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    assert load_signer(path).key_sha256 == s.key_sha256 and "PRIVATE" not in repr(s)
    with pytest.raises(UsageError, match="not replacing"):
        generate(path)
    assert load_public(path) is not None  # a private key file also serves as the trusted key


def test_bad_key_files_are_one_line_usage_errors(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        load_signer(junk)
    with pytest.raises(UsageError, match="no such file"):
        load_signer(tmp_path / "missing.pem")
    with pytest.raises(UsageError, match="not a PEM ed25519"):
        load_public(junk)


def test_signed_pack_verifies_with_and_without_the_trusted_key(tmp_path, key, other):
    pack = make_pack(tmp_path / "ev", DAY, key)
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["signing"] == {"alg": "ed25519", "key_sha256": key.key_sha256}
    assert (pack / SIG).is_file() and (pack / PUBKEY).is_file()
    assert SIG not in {f["path"] for f in manifest["files"]}
    res = verify_pack(pack)
    assert res.ok and res.signatures == {"2026-11-20": key.key_sha256}
    assert verify_pack(pack, [key.public]).ok
    res = verify_pack(pack, [other.public])
    assert not res.ok and "not a trusted key" in res.problems[0]
    assert verify_pack(pack, [other.public, key.public]).ok  # rotation: several trusted keys


def test_tampered_manifest_fails_even_with_recomputed_hashes(tmp_path, key):
    pack = make_pack(tmp_path, DAY, key)
    # the forger edits a file AND rewrites its sha256 in the manifest: hashes agree, the signature does not
    (pack / "results.json").write_text('{"controls": [], "forged": true}\n')
    m = json.loads((pack / "manifest.json").read_text())
    for f in m["files"]:
        if f["path"] == "results.json":
            f["sha256"] = sha256_bytes((pack / "results.json").read_bytes())
    (pack / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    for trusted in (None, [key.public]):
        res = verify_pack(pack, trusted)
        assert not res.ok and res.problems == ["2026-11-20/manifest.sig: signature does not verify manifest.json"]


def test_resigned_with_another_key_passes_alone_but_fails_against_the_trusted_key(tmp_path, key, other):
    pack = make_pack(tmp_path, DAY, key)
    # the forger re-seals the whole pack with a key of their own (manifest, sig and pubkey all consistent)
    m = json.loads((pack / "manifest.json").read_text())
    m["signing"]["key_sha256"] = other.key_sha256
    raw = (json.dumps(m, indent=2, sort_keys=True) + "\n").encode()
    (pack / "manifest.json").write_bytes(raw)
    (pack / SIG).write_text(other.sign(raw) + "\n")
    (pack / PUBKEY).write_bytes(public_pem(other.public))
    assert verify_pack(pack).ok  # self-consistent: this is why a trusted key matters (docs/evidence.md)
    res = verify_pack(pack, [key.public])
    assert not res.ok and res.problems[0] == f"2026-11-20: signed by key {other.key_sha256[:16]}, which is not a trusted key"


def test_stripped_signature_is_caught_with_or_without_a_key(tmp_path, key):
    pack = make_pack(tmp_path, DAY, key)
    (pack / SIG).unlink()
    res = verify_pack(pack)
    assert not res.ok and res.problems[0].startswith("2026-11-20/manifest.sig: missing (manifest.json says it is signed")
    # strip the claim from the manifest too: the pack is then plainly unsigned ...
    (pack / PUBKEY).unlink()
    m = json.loads((pack / "manifest.json").read_text())
    del m["signing"]
    (pack / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    res = verify_pack(pack)
    assert res.ok and res.signatures == {"2026-11-20": "unsigned"} and res.notes == ["2026-11-20: unsigned"]
    # ... which fails as soon as a key is configured
    res = verify_pack(pack, [key.public])
    assert not res.ok and "unsigned (a signing key is configured" in res.problems[0]


def test_a_stray_signature_on_an_unsigned_manifest_is_a_problem(tmp_path, key):
    pack = make_pack(tmp_path, DAY)
    (pack / SIG).write_text(key.sign((pack / "manifest.json").read_bytes()))
    res = verify_pack(pack)
    assert not res.ok and res.problems == ["2026-11-20/manifest.sig: present, but manifest.json names no signing key"]


def test_wrong_pubkey_shipped_is_a_problem(tmp_path, key, other):
    pack = make_pack(tmp_path, DAY, key)
    (pack / PUBKEY).write_bytes(public_pem(other.public))
    res = verify_pack(pack)
    assert not res.ok and res.problems[0] == "2026-11-20/pubkey.pem: not the key manifest.json names"


def test_chain_links_still_checked_and_rewriting_the_chain_needs_the_key(tmp_path, key, other):
    root = tmp_path / "ev"
    for i in range(3):
        make_pack(root, DAY + timedelta(days=i), key)
    today = DAY + timedelta(days=2)
    res = verify_chain(root, today=today, trusted=[key.public])
    assert res.ok and len(res.signatures) == 3
    # rewrite day 1 and re-seal it (and every later day) with another key: links hold, signatures don't
    make_pack(root, DAY + timedelta(days=1), other, marker="forged")
    res = verify_chain(root, today=today, trusted=[key.public])
    assert not res.ok
    assert res.problems[0] == f"2026-11-21: signed by key {other.key_sha256[:16]}, which is not a trusted key"
    assert "2026-11-22: broken link" in res.problems[1]
    # without a trusted key, a key change mid-chain is at least reported
    make_pack(root, DAY + timedelta(days=2), other, marker="forged")
    res = verify_chain(root, today=today)
    assert res.ok and any("key changed" in n for n in res.notes)


def test_compressed_signed_pack_verifies(tmp_path, key):
    pack = make_pack(tmp_path, DAY, key)
    archive = compress_pack(pack)
    assert verify_pack(archive, [key.public]).ok


def test_amending_a_signed_pack_drops_the_old_seal_and_resigns_with_the_configured_key(tmp_path, key, monkeypatch):
    monkeypatch.setenv("OPSPROOF_SIGNING_KEY", str(tmp_path / "keys" / "k.pem"))
    pack = make_pack(tmp_path / "ev", DAY, key)
    w = PackWriter(tmp_path / "ev", DAY)  # what `opsproof cadence` does: copy everything but the manifest
    for src in sorted(pack.rglob("*")):
        if src.is_file() and src.name != "manifest.json":
            w.add_file(src.relative_to(pack).as_posix(), src)
    w.add_json("cadence/ttl.json", {"ok": True})
    amended = w.commit({"target": "embedded"})
    m = json.loads((amended / "manifest.json").read_text())
    assert SIG not in {f["path"] for f in m["files"]} and PUBKEY not in {f["path"] for f in m["files"]}
    assert verify_pack(amended, [key.public]).ok


def test_signer_for_settings(tmp_path, monkeypatch, key):
    class S:
        signing_key = None
        target = "embedded"

    monkeypatch.delenv("OPSPROOF_SIGNING_KEY", raising=False)
    monkeypatch.setenv("OPSPROOF_HOME", str(tmp_path / "home"))
    s = signer_for(S())  # embedded default: generated once under the stack home
    path = tmp_path / "home" / "keys" / "evidence-ed25519.pem"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signer_for(S()).key_sha256 == s.key_sha256
    S.target = "env"
    assert signer_for(S()) is None and trusted_keys(None, S()) == []
    S.signing_key = str(tmp_path / "keys" / "k.pem")
    assert signer_for(S()).key_sha256 == key.key_sha256
    assert [fingerprint(k) for k in trusted_keys(None, S())] == [key.key_sha256]
    S.signing_key = str(tmp_path / "nope.pem")
    with pytest.raises(UsageError):
        signer_for(S())


def test_cli_keygen_and_verify(tmp_path):
    home = tmp_path / "home"
    keyfile = tmp_path / "keys" / "ev.pem"
    r = run_cli("evidence", "keygen", str(keyfile), home=home)
    assert r.returncode == 0, r.stderr
    assert keyfile.is_file() and (tmp_path / "keys" / "ev.pub.pem").is_file()
    assert run_cli("evidence", "keygen", str(keyfile), home=home).returncode == 2
    root = tmp_path / "ev"
    make_pack(root, DAY, load_signer(keyfile))
    env = {"OPSPROOF_SIGNING_KEY": ""}
    r = run_cli("evidence", "verify", "--root", str(root), "--today", DAY.isoformat(), home=home, env=env)
    assert r.returncode == 0 and "NOT checked against a trusted key" in r.stdout, r.stdout + r.stderr
    pub = tmp_path / "keys" / "ev.pub.pem"
    r = run_cli("evidence", "verify", "--root", str(root), "--today", DAY.isoformat(), "--pubkey", str(pub),
                home=home, env=env)
    assert r.returncode == 0 and "signed by a trusted key" in r.stdout, r.stdout + r.stderr
    r = run_cli("evidence", "verify", "--root", str(root), "--today", DAY.isoformat(), home=home,
                env={"OPSPROOF_SIGNING_KEY": str(keyfile)})
    assert r.returncode == 0 and "signed by a trusted key" in r.stdout, r.stdout + r.stderr
    other = tmp_path / "other.pem"
    generate(other)
    r = run_cli("evidence", "verify", "--root", str(root), "--today", DAY.isoformat(), "--pubkey", str(other),
                home=home, env=env)
    assert r.returncode == 1 and "not a trusted key" in r.stderr
    r = run_cli("evidence", "verify", "--root", str(root), "--today", DAY.isoformat(), "--pubkey",
                str(tmp_path / "missing.pem"), home=home, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    unsigned = tmp_path / "ev2"
    make_pack(unsigned, DAY)
    r = run_cli("evidence", "verify", "--root", str(unsigned), "--today", DAY.isoformat(), home=home, env=env)
    assert r.returncode == 0 and "unsigned" in r.stdout
    r = run_cli("evidence", "verify", "--root", str(unsigned), "--today", DAY.isoformat(), "--pubkey", str(pub),
                home=home, env=env)
    assert r.returncode == 1 and "unsigned" in r.stderr

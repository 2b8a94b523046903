"""Ed25519 signatures over a pack's manifest.json (library: `cryptography`).

The private key lives OUTSIDE the evidence tree: OPSPROOF_SIGNING_KEY names a PEM file (PKCS#8, made by
`opsproof evidence keygen PATH`, mode 0600). On the embedded default, when the setting is unset, a key is
generated once under the stack home (`.opsproof/keys/evidence-ed25519.pem`).

At commit a signed pack gets two more files, next to manifest.json and not listed in it:
  manifest.sig   hex ed25519 signature over the exact bytes of manifest.json
  pubkey.pem     the public key (SubjectPublicKeyInfo PEM)
and manifest.json itself names the key it is signed with ("signing": {"alg", "key_sha256"}), so a
signature cannot be stripped without changing the manifest (which breaks the next day's link).

A public key travels with the pack for convenience only: it proves nothing on its own (a forger can
re-sign with a key of their own). What counts is a key the verifier trusts (`--pubkey PATH` or the
setting). See docs/evidence.md.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from opsproof.errors import UsageError

SIG = "manifest.sig"
PUBKEY = "pubkey.pem"
SEAL_FILES = (SIG, PUBKEY)
ALG = "ed25519"
SETTING = "OPSPROOF_SIGNING_KEY"
DEFAULT_KEY_NAME = "evidence-ed25519.pem"


def fingerprint(public: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Signer:
    """A loaded private key. Never printed (repr shows the fingerprint only)."""

    key: Ed25519PrivateKey
    path: Path | None = None

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def key_sha256(self) -> str:
        return fingerprint(self.public)

    def sign(self, data: bytes) -> str:
        return self.key.sign(data).hex()

    def __repr__(self) -> str:
        return f"Signer(key_sha256={self.key_sha256[:16]}...)"


def generate(path: Path | str, *, overwrite: bool = False) -> Signer:
    """Write a new ed25519 private key (PEM, PKCS#8, unencrypted) at path with mode 0600.
    Refuses to replace an existing file unless overwrite (a replaced key orphans every signed pack)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists: not replacing a signing key (packs signed with it would no longer verify)")
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic create-if-absent: two racing generators keep one key
    except FileExistsError:
        pass
    finally:
        if tmp.exists():
            tmp.unlink()
    return load_signer(path)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"signing key {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"signing key {path}: unreadable ({exc.strerror or type(exc).__name__})") from None


def load_signer(path: Path | str) -> Signer:
    """The private key at path. A public key, a non-ed25519 key or garbage is a UsageError (never echoed)."""
    path = Path(path)
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"signing key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"signing key {path}: not an ed25519 key")
    return Signer(key, path)


def load_public(path: Path | str) -> Ed25519PublicKey:
    """A trusted public key from a PEM file holding either the public key or the private key."""
    path = Path(path)
    data = _read(path)
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            priv = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise UsageError(f"key {path}: not a PEM ed25519 public or private key") from None
        pub = priv.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise UsageError(f"key {path}: not an ed25519 key")
    return pub


def parse_public_pem(data: bytes) -> Ed25519PublicKey | None:
    """The public key shipped in a pack, or None when it is not an ed25519 public key PEM."""
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return None
    return pub if isinstance(pub, Ed25519PublicKey) else None


def signature_ok(public: Ed25519PublicKey, data: bytes, sig_hex: str) -> bool:
    try:
        return public.verify(bytes.fromhex(sig_hex.strip()), data) is None
    except (InvalidSignature, ValueError):
        return False


def default_key_path() -> Path:
    from opsproof import paths

    return paths.state_dir() / "keys" / DEFAULT_KEY_NAME


def _configured_path(settings=None) -> str | None:
    value = getattr(settings, "signing_key", None) if settings is not None else None
    return value or os.environ.get(SETTING) or None


def signer_for(settings) -> Signer | None:
    """The key a suite run signs with: the setting when set (a missing/bad file is a UsageError: exit 2);
    otherwise, on the embedded default, the stack home's key (generated the first time); otherwise None."""
    configured = _configured_path(settings)
    if configured:
        return load_signer(Path(configured).expanduser())
    if getattr(settings, "target", None) == "embedded":
        path = default_key_path()
        if path.exists():
            return load_signer(path)
        return generate(path)
    return None


def existing_signer() -> Signer | None:
    """The configured key, or the embedded default's key if it already exists; never generates.
    Used to keep a re-sealed (amended) pack signed."""
    configured = _configured_path()
    if configured:
        return load_signer(Path(configured).expanduser())
    path = default_key_path()
    return load_signer(path) if path.exists() else None


def trusted_keys(pubkeys: list[Path] | None = None, settings=None) -> list[Ed25519PublicKey]:
    """The keys a verifier trusts: --pubkey files when given, else the setting (its public half), else none."""
    if pubkeys:
        return [load_public(Path(p).expanduser()) for p in pubkeys]
    configured = _configured_path(settings)
    if configured:
        return [load_public(Path(configured).expanduser())]
    return []

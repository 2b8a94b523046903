"""The evidence pack: writer (staging + manifest + hash chain + atomic swap), verify, retention, secrets scan,
Allure HTML. See docs/architecture.md, "The evidence pack"."""

from opsproof.evidence.common import MANIFEST, EvidenceError, list_packs
from opsproof.evidence.pack import PackWriter, sanitize_host
from opsproof.evidence.retention import compress_pack, prune
from opsproof.evidence.secrets import find_secrets, redact
from opsproof.evidence.verify import VerifyResult, verify_chain, verify_pack

__all__ = [
    "MANIFEST", "EvidenceError", "PackWriter", "VerifyResult", "compress_pack", "find_secrets", "list_packs",
    "prune", "redact", "sanitize_host", "verify_chain", "verify_pack",
]

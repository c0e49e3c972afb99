"""The one key derivation: every key the package uses comes from a configured master key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """One 256-bit key per purpose (HKDF-SHA256, RFC 5869), so no two uses share a key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"temporal-ciba {purpose}".encode()).derive(
        master_key
    )

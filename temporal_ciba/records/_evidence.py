"""The evidence at rest: each record's ID token encrypted under the operator's record key.

AES-256-GCM with a key derived from CIBA_RECORD_KEY; the stored value names its key id, so the
key can rotate (the first key encrypts, every configured key decrypts). The associated data is
the digest of the rest of the record (DecisionRecord.body_digest): evidence cannot be moved to
another record, and a record changed in the store no longer opens its evidence.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from temporal_ciba.crypto import derive_key

EVIDENCE_PREFIX = "evidence.v1"


class EvidenceError(Exception):
    """Evidence that is malformed, under an unknown key, or that belongs to another record."""


class _Key:
    def __init__(self, master_key: bytes) -> None:
        key = derive_key(master_key, "decision record evidence v1")
        self.key_id = hashlib.sha256(key).hexdigest()[:16]
        self.aead = AESGCM(key)


class EvidenceKeys:
    """The record keys: the first encrypts, each decrypts what names its key id."""

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise ValueError("at least one record key is needed")
        self._keys = [_Key(key) for key in master_keys]
        self._by_id = {key.key_id: key for key in self._keys}

    def __repr__(self) -> str:
        return f"EvidenceKeys(key_ids={list(self._by_id)!r})"

    @property
    def current_key_id(self) -> str:
        return self._keys[0].key_id

    def encrypt(self, id_token: str, *, body_digest: str) -> str:
        key = self._keys[0]
        nonce = os.urandom(12)
        ciphertext = key.aead.encrypt(nonce, id_token.encode(), _associated_data(key.key_id, body_digest))
        return f"{EVIDENCE_PREFIX}.{key.key_id}.{base64.urlsafe_b64encode(nonce + ciphertext).decode('ascii')}"

    def decrypt(self, evidence: str, *, body_digest: str) -> str:
        prefix, _, rest = evidence.partition(".")
        version, _, rest = rest.partition(".")
        key_id, _, blob = rest.partition(".")
        if f"{prefix}.{version}" != EVIDENCE_PREFIX or not blob:
            raise EvidenceError("not record evidence")
        key = self._by_id.get(key_id)
        if key is None:
            raise EvidenceError(f"encrypted under record key {key_id[:16]!r}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(blob)
            plaintext = key.aead.decrypt(raw[:12], raw[12:], _associated_data(key_id, body_digest))
        except (InvalidTag, ValueError):
            raise EvidenceError("the evidence does not open for this record (altered, or another record's)") from None
        return plaintext.decode()


def _associated_data(key_id: str, body_digest: str) -> bytes:
    return f"{EVIDENCE_PREFIX} {key_id} {body_digest}".encode()

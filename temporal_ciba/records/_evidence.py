"""The evidence at rest: each record's ID token encrypted under the operator's record key.

AES-256-GCM with a key derived from CIBA_RECORD_KEY; the stored value names its key id, so the
key can rotate (the first key encrypts, every configured key decrypts). The associated data is
the digest of the rest of the record (DecisionRecord.body_digest): evidence cannot be moved to
another record, and a record changed in the store no longer opens its evidence.

Every record, with or without evidence, also carries a MAC (HMAC-SHA256 under another key
derived from the same record key) of its id, its sequence number in the log and its leaf hash,
which covers every field: an edit in the store fails at export even where there is no evidence.

The outcome the approval returned (its sealed access token among it) is kept beside its record,
encrypted the same way under another prefix and bound to the record's body: the decision an
approval takes back when a worker died after writing the record (records.activity).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from temporal_ciba.crypto import derive_key

EVIDENCE_PREFIX = "evidence.v1"
OUTCOME_PREFIX = "outcome.v1"
MAC_PREFIX = "mac.v1"


class EvidenceError(Exception):
    """Evidence that is malformed, under an unknown key, or that belongs to another record."""


class _Key:
    def __init__(self, master_key: bytes) -> None:
        key = derive_key(master_key, "decision record evidence v1")
        self.key_id = hashlib.sha256(key).hexdigest()[:16]
        self.aead = AESGCM(key)
        self.mac_key = derive_key(master_key, "decision record body mac v1")


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
        """The ID token encrypted for the record whose body digest is `body_digest`."""
        return self._encrypt(EVIDENCE_PREFIX, id_token, body_digest)

    def decrypt(self, evidence: str, *, body_digest: str) -> str:
        """The ID token of `encrypt`; EvidenceError unless it was encrypted for this record."""
        return self._decrypt(EVIDENCE_PREFIX, evidence, body_digest, "the evidence")

    def encrypt_outcome(self, outcome_json: str, *, body_digest: str) -> str:
        """The approval's outcome encrypted for the record whose body digest is `body_digest`."""
        return self._encrypt(OUTCOME_PREFIX, outcome_json, body_digest)

    def decrypt_outcome(self, sealed: str, *, body_digest: str) -> str:
        """The outcome of `encrypt_outcome`; EvidenceError unless it was encrypted for this record."""
        return self._decrypt(OUTCOME_PREFIX, sealed, body_digest, "the outcome")

    def _encrypt(self, prefix: str, plaintext: str, body_digest: str) -> str:
        key = self._keys[0]
        nonce = os.urandom(12)
        ciphertext = key.aead.encrypt(nonce, plaintext.encode(), _associated_data(prefix, key.key_id, body_digest))
        return f"{prefix}.{key.key_id}.{base64.urlsafe_b64encode(nonce + ciphertext).decode('ascii')}"

    def _decrypt(self, prefix: str, sealed: str, body_digest: str, what: str) -> str:
        head, _, rest = sealed.partition(".")
        version, _, rest = rest.partition(".")
        key_id, _, blob = rest.partition(".")
        if f"{head}.{version}" != prefix or not blob:
            raise EvidenceError(f"not {what} of a record")
        key = self._by_id.get(key_id)
        if key is None:
            raise EvidenceError(f"encrypted under record key {key_id[:16]!r}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(blob)
            plaintext = key.aead.decrypt(raw[:12], raw[12:], _associated_data(prefix, key_id, body_digest))
        except (InvalidTag, ValueError):
            raise EvidenceError(f"{what} does not open for this record (altered, or another record's)") from None
        return plaintext.decode()

    def mac(self, record_id: str, seq: int, leaf_hash: bytes) -> str:
        """The record's MAC under the current key: `mac.v1.<key id>.<hex>`."""
        key = self._keys[0]
        return f"{MAC_PREFIX}.{key.key_id}.{_mac(key, record_id, seq, leaf_hash)}"

    def check_mac(self, mac: str | None, record_id: str, seq: int, leaf_hash: bytes) -> None:
        """EvidenceError unless `mac` authenticates this record id, sequence number and leaf hash."""
        prefix, _, rest = (mac or "").partition(".")
        version, _, rest = rest.partition(".")
        key_id, _, value = rest.partition(".")
        if f"{prefix}.{version}" != MAC_PREFIX or not value:
            raise EvidenceError("the record carries no MAC of the record key")
        key = self._by_id.get(key_id)
        if key is None:
            raise EvidenceError(f"authenticated under record key {key_id[:16]!r}, which is not configured")
        if not hmac.compare_digest(value, _mac(key, record_id, seq, leaf_hash)):
            raise EvidenceError("the record was altered in the store (its MAC under the record key does not match)")


def _mac(key: _Key, record_id: str, seq: int, leaf_hash: bytes) -> str:
    message = f"{MAC_PREFIX} {record_id} {seq} {leaf_hash.hex()}".encode()
    return hmac.new(key.mac_key, message, hashlib.sha256).hexdigest()


def _associated_data(prefix: str, key_id: str, body_digest: str) -> bytes:
    return f"{prefix} {key_id} {body_digest}".encode()

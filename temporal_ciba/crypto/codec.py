"""AES-256-GCM payload codec: every payload in history is ciphertext.

The key is derived from CIBA_PAYLOAD_KEY for this purpose only; each payload carries the id
of the key that sealed it, so a wrong key fails loudly instead of returning garbage.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from temporal_ciba.crypto.keys import derive_key

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12


class PayloadDecryptionError(Exception):
    """A payload was sealed with another key, or altered."""


class AesGcmCodec(PayloadCodec):
    def __init__(self, payload_key: bytes) -> None:
        key = derive_key(payload_key, "payload codec v1")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"AesGcmCodec(key_id={self.key_id!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        # The key id is authenticated too: moving a payload under another key id fails to decrypt.
        ciphertext = self._aead.encrypt(nonce, payload.SerializeToString(), self.key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self.key_id.encode()},
            data=nonce + ciphertext,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
        if key_id != self.key_id:
            raise PayloadDecryptionError(f"payload encrypted with key {key_id!r}, this codec holds {self.key_id!r}")
        try:
            plaintext = self._aead.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError("payload failed authentication (altered or wrong key)") from None
        return Payload.FromString(plaintext)

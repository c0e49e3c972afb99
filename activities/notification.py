"""Client notification tokens that need no database (CIBA §7.1, §10.2, §10.3).

The token we send with a ping or push request is the waiting workflow's id, encrypted and
authenticated (AES-256-GCM, a key derived from CIBA_PAYLOAD_KEY for this purpose) with 128
random bits inside. The callback service opens it to find the workflow; a guessed or altered
bearer fails authentication before any workflow is looked up, so it can neither reach nor
probe one. The token is bearer syntax (base64url, RFC 6750) and carries at least 224 random
bits (96-bit nonce, 128-bit salt); workflow ids up to 700 bytes keep it under CIBA's 1024
characters.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from activities.sealing import derive_key

_AAD = b"ciba client_notification_token v1"
_NONCE = 12
_SALT = 16
MAX_WORKFLOW_ID_BYTES = 700


class NotificationTokens:
    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(derive_key(master_key, "notification token v1"))

    def __repr__(self) -> str:
        return "NotificationTokens()"

    def issue(self, workflow_id: str) -> str:
        """A fresh token naming this workflow."""
        encoded = workflow_id.encode()
        if len(encoded) > MAX_WORKFLOW_ID_BYTES:
            raise ValueError(
                f"workflow id longer than {MAX_WORKFLOW_ID_BYTES} bytes cannot travel in a notification token"
            )
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, os.urandom(_SALT) + encoded, _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> str | None:
        """The workflow id inside a token we issued; None for anything else."""
        if not token or len(token) > 1024:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            # Only the exact string we issued: no padding, no other spelling of the same bytes.
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
                return None
            plaintext = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
            return plaintext[_SALT:].decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            return None

"""Client notification tokens that need no database (CIBA §7.1, §10.2, §10.3).

The token we send with a ping or push request names the waiting approval: its workflow id
and the first run id of its run chain (the run that sent the request), encrypted and
authenticated with AES-256-GCM under a key derived from CIBA_TOKEN_KEY, with 128 random bits
inside. The callback service opens it to find the workflow; a guessed or altered bearer fails
authentication before any workflow is looked up, so it can neither reach nor probe one, and a
token of an earlier approval under the same workflow id names another run chain and is
refused. The token is bearer syntax (base64url, RFC 6750) and carries at least 224 random
bits (96-bit nonce, 128-bit salt); workflow ids up to 600 bytes keep it under CIBA's 1024
characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from temporal_ciba.crypto._keys import derive_key

_AAD = b"ciba client_notification_token v2"
_NONCE = 12
_SALT = 16
MAX_WORKFLOW_ID_BYTES = 600


@dataclass(frozen=True)
class NotifiedApproval:
    """What a notification token names."""

    workflow_id: str
    first_run_id: str


class NotificationTokens:
    def __init__(self, token_key: bytes) -> None:
        self._aead = AESGCM(derive_key(token_key, "notification token v2"))

    def __repr__(self) -> str:
        return "NotificationTokens()"

    def issue(self, workflow_id: str, first_run_id: str) -> str:
        """A fresh token naming this approval."""
        workflow = workflow_id.encode()
        run = first_run_id.encode()
        if len(workflow) > MAX_WORKFLOW_ID_BYTES:
            raise ValueError(f"a workflow id over {MAX_WORKFLOW_ID_BYTES} bytes does not fit a notification token")
        if not 0 < len(run) < 256:
            raise ValueError("the run id must be 1 to 255 bytes")
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, os.urandom(_SALT) + bytes([len(run)]) + run + workflow, _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> NotifiedApproval | None:
        """The approval a token we issued names; None for anything else."""
        if not token or len(token) > 1024:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            # Only the exact string we issued: no padding, no other spelling of the same bytes.
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
                return None
            plaintext = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)[_SALT:]
            run_length = plaintext[0]
            return NotifiedApproval(
                workflow_id=plaintext[1 + run_length :].decode(), first_run_id=plaintext[1 : 1 + run_length].decode()
            )
        except (InvalidTag, ValueError, IndexError, binascii.Error, UnicodeDecodeError):
            return None


class NotificationProofs:
    """Proof that the callback made a notification: an HMAC only holders of CIBA_TOKEN_KEY make.

    The callback proves what it signals (a ping, a push with its tokens or its error) under a key
    derived from the token key for this purpose alone (HKDF, "notification proof v1"), over the
    workflow and run chain the bearer named, the signal's name, the auth_req_id and the content
    (sealed tokens, error, error description). The payload key, which operators and the codec
    server hold, makes none: whoever can only signal or read history cannot write a notification
    that passes, nor move one to another approval, request, signal or content."""

    # The signal names a proof binds (the callback's, temporal_ciba._workflow's NOTIFY_SIGNAL and
    # DELIVER_SIGNAL): a ping's proof is no push's.
    PING = "ciba.notify"
    PUSH = "ciba.deliver"

    def __init__(self, token_key: bytes) -> None:
        self._key = derive_key(token_key, "notification proof v1")

    def __repr__(self) -> str:
        return "NotificationProofs()"

    def prove(
        self,
        *,
        workflow_id: str,
        first_run_id: str,
        signal: str,
        auth_req_id: str,
        content: tuple[str | None, ...] = (),
    ) -> str:
        """The proof for one notification (base64url, no padding)."""
        message = json.dumps(
            ["temporal-ciba notification v1", workflow_id, first_run_id, signal, auth_req_id, *content],
            ensure_ascii=True,
            separators=(",", ":"),
        ).encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def check(
        self,
        proof: str | None,
        *,
        workflow_id: str,
        first_run_id: str | None,
        signal: str,
        auth_req_id: str,
        content: tuple[str | None, ...] = (),
    ) -> bool:
        """Whether `proof` is the one for this notification; False without a proof or a run chain."""
        if not proof or not first_run_id or len(proof) > 64:
            return False
        expected = self.prove(
            workflow_id=workflow_id, first_run_id=first_run_id, signal=signal, auth_req_id=auth_req_id, content=content
        )
        return hmac.compare_digest(expected.encode("ascii"), proof.encode("utf-8", errors="replace"))

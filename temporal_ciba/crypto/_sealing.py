"""Sealing tokens before they enter a Temporal payload.

The payload codec already encrypts every payload, but anyone holding the codec key (an
operator decoding history in the Temporal UI) would read what is inside. Tokens are therefore
sealed once more, with a key derived for this purpose only, and bound (AEAD associated data)
to the request they belong to, so a sealed token cannot be moved into another approval.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from temporal_ciba.crypto._dpop_keys import DPoPKeys
from temporal_ciba.crypto._keys import derive_key

SEALED_PREFIX = "sealed.v1."


class SealError(Exception):
    """A sealed value is malformed, was sealed with another key, or belongs to another context."""


class TokenSealer:
    """AES-256-GCM sealing of secrets, each bound to a context string."""

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(derive_key(master_key, "token seal v1"))
        # Whoever can open an approval's sealed token can also prove possession of its DPoP key.
        self.dpop_keys = DPoPKeys(master_key)

    def __repr__(self) -> str:
        return "TokenSealer()"

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + ciphertext).decode("ascii")

    def unseal(self, sealed: str, *, context: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :])
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise SealError("the sealed value does not open with this key and context") from None


def tokens_context(auth_req_id: str, approval_workflow_id: str) -> str:
    """The sealing context of a whole token response, between the token request and validation.

    The token response comes from the token request or the push; it opens only in the approval
    workflow that asked, for its own auth_req_id."""
    return f"token-response v2 {len(auth_req_id)}:{auth_req_id} {approval_workflow_id}"


def access_token_context(auth_req_id: str, *, action_digest: str | None, workflow_id: str, run_id: str) -> str:
    """The sealing context of an approved access token: one action in one workflow run.

    The action is named by its digest, the run is the one that asked for the approval, so the
    token opens nowhere else (temporal_ciba._grant)."""
    return f"access-token v2 {len(auth_req_id)}:{auth_req_id} {action_digest or '-'} {workflow_id} {run_id}"


def id_token_context(auth_req_id: str, approval_workflow_id: str) -> str:
    """The sealing context of a validated ID token kept as evidence (temporal_ciba.records).

    It leaves the validating activity sealed and opens only in the approval workflow that asked,
    in the activity that writes the decision record."""
    return f"id-token v1 {len(auth_req_id)}:{auth_req_id} {approval_workflow_id}"

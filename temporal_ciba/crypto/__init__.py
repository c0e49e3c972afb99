"""The package's cryptography, each part under its own derived key.

The payload codec (history), token sealing (tokens inside payloads) and notification tokens
(ping and push bearers)."""

from ._codec import AesGcmCodec, PayloadDecryptionError, refusal
from ._dpop_keys import DPoPKeys
from ._keys import derive_key
from ._notification import NotificationProofs, NotificationTokens, NotifiedApproval
from ._sealing import SealError, TokenSealer, access_token_context, id_token_context, tokens_context

__all__ = [
    "AesGcmCodec",
    "DPoPKeys",
    "NotificationProofs",
    "NotificationTokens",
    "NotifiedApproval",
    "PayloadDecryptionError",
    "SealError",
    "TokenSealer",
    "access_token_context",
    "derive_key",
    "id_token_context",
    "refusal",
    "tokens_context",
]

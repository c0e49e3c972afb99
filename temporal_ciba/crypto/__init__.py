"""The package's cryptography: the payload codec (history), token sealing (tokens inside
payloads) and notification tokens (ping and push bearers), each under its own derived key."""

from .codec import AesGcmCodec, PayloadDecryptionError
from .dpop_keys import DPoPKeys
from .keys import derive_key
from .notification import NotificationTokens, NotifiedApproval
from .sealing import SealError, TokenSealer, access_token_context, tokens_context

__all__ = [
    "AesGcmCodec",
    "DPoPKeys",
    "NotificationTokens",
    "NotifiedApproval",
    "PayloadDecryptionError",
    "SealError",
    "TokenSealer",
    "access_token_context",
    "derive_key",
    "tokens_context",
]

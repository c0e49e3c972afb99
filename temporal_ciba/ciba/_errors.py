"""Errors raised by the CIBA client.

    CibaError
     ├── DiscoveryError        the OP's metadata cannot be used for CIBA
     ├── ProtocolError         the OP answered outside the spec (a malformed acknowledgement, ...)
     ├── TransportError        the OP could not be reached, or answered 5xx; safe to retry
     ├── TokenRequestInFlight  a second token request for one auth_req_id while one is running
     ├── InvalidAuthenticationRequest  (also a ValueError) a request that breaks CIBA §7.1 or the
     │                         OP's metadata, refused before it is sent
     ├── TokenRejected         tokens arrived but failed validation (stale, mismatched, forged)
     │    └── KeyNotFound      no JWKS key matches the ID token: refetch the JWKS once, then reject
     └── OAuthError            the OP answered with an error code; one subclass per code
          ├── InvalidRequest, InvalidScope, ExpiredLoginHintToken, UnknownUserId,
          │   UnauthorizedClient, MissingUserCode, InvalidUserCode, InvalidBindingMessage,
          │   InvalidClient, AccessDenied                  (CIBA Core 1.0 §13)
          ├── ExpiredToken, InvalidGrant, UnsupportedGrantType   (CIBA Core 1.0 §11, RFC 6749 §5.2)
          └── TransactionFailed                             (CIBA Core 1.0 §12, push errors)

`authorization_pending` and `slow_down` are not errors: the token endpoint returns them as data
(`temporal_ciba.ciba._token.Pending`, `SlowDown`).

No message built here contains a token, a secret or a client notification token.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def one_line(text: str, limit: int = 200) -> str:
    """Untrusted text (an OP's error_description) made into one short printable line."""
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CibaError(Exception):
    """Base class of every error the CIBA client raises."""


class DiscoveryError(CibaError):
    """The OP's discovery document is missing, malformed, or does not offer what we need.

    `document_issuer` is the issuer the document names when that is what differs from the
    configured one (OIDC Discovery §4.3), else None."""

    def __init__(self, message: str, *, document_issuer: str | None = None) -> None:
        super().__init__(message)
        self.document_issuer = document_issuer


class ProtocolError(CibaError):
    """The OP answered in a way the specification does not allow."""


class TransportError(CibaError):
    """The OP could not be reached or failed (5xx); the same request may be retried.

    `request_sent` is True when the request may have reached the OP before the failure (a
    read timeout, a dropped connection): retrying a backchannel request then risks asking the
    user twice.
    """

    def __init__(self, message: str, *, request_sent: bool = False) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class TokenRequestInFlight(CibaError):
    """CIBA §7.3: a client must not poll one auth_req_id with two requests at once."""


class TokenRejected(CibaError):
    """Tokens arrived but do not prove an approval of *our* request.

    `code` is stable (e.g. ``iss_mismatch``), `claim` names what was checked and `expected`
    what it had to be, so one log line says exactly what was wrong.
    """

    def __init__(self, code: str, claim: str, reason: str, expected: str | None = None) -> None:
        self.code = code
        self.claim = claim
        self.expected = expected
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class KeyNotFound(TokenRejected):
    """No key of the JWKS matches: the caller may refetch the JWKS once and try again."""


class InvalidAuthenticationRequest(CibaError, ValueError):
    """The request cannot be sent as asked: it breaks a rule of CIBA §7.1 or the OP's metadata."""


class OAuthError(CibaError):
    """The OP returned an OAuth error response (RFC 6749 §5.2, CIBA §11 and §13).

    `final` says whether the request (or auth_req_id) is finished for good; every error
    code the CIBA specification defines is final, only transport failures are not.
    """

    error: str = "oauth_error"
    final: bool = True

    def __init__(self, description: str | None = None, *, status: int | None = None, error: str | None = None) -> None:
        if error is not None:
            self.error = error
        self.description = one_line(description) if description else None
        self.status = status
        super().__init__(f"{self.error}: {self.description}" if self.description else self.error)


# CIBA Core 1.0 §13: errors of the backchannel authentication endpoint.
class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class ExpiredLoginHintToken(OAuthError):
    error = "expired_login_hint_token"


class UnknownUserId(OAuthError):
    error = "unknown_user_id"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class MissingUserCode(OAuthError):
    error = "missing_user_code"


class InvalidUserCode(OAuthError):
    error = "invalid_user_code"


class InvalidBindingMessage(OAuthError):
    error = "invalid_binding_message"


class InvalidClient(OAuthError):
    error = "invalid_client"


class AccessDenied(OAuthError):
    """The end-user denied the request (§11, §13) or the OP refused it."""

    error = "access_denied"


# CIBA Core 1.0 §11: errors of the token endpoint for the CIBA grant.
class ExpiredToken(OAuthError):
    """The auth_req_id has expired; the client must start a new request."""

    error = "expired_token"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


# CIBA Core 1.0 §12: an error delivered in push mode.
class TransactionFailed(OAuthError):
    error = "transaction_failed"


OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    cls.error: cls
    for cls in (
        InvalidRequest,
        InvalidScope,
        ExpiredLoginHintToken,
        UnknownUserId,
        UnauthorizedClient,
        MissingUserCode,
        InvalidUserCode,
        InvalidBindingMessage,
        InvalidClient,
        AccessDenied,
        ExpiredToken,
        InvalidGrant,
        UnsupportedGrantType,
        TransactionFailed,
    )
}


def oauth_error(error: str, description: str | None = None, *, status: int | None = None) -> OAuthError:
    """The typed exception for an OAuth error code; unknown codes keep their code."""
    cls = OAUTH_ERRORS.get(error)
    if cls is None:
        return OAuthError(description, status=status, error=one_line(error, 64))
    return cls(description, status=status)

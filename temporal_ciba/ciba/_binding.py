"""What a token response is validated against, and what a validation vouches for.

The request as sent and acknowledged (RequestBinding), the local rules (ValidationPolicy), and
what a validation vouches for (ValidatedApproval)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from pydantic import BaseModel, ConfigDict

from ._backchannel import Acknowledgement, AuthenticationRequest
from ._discovery import DeliveryMode
from ._errors import TokenRejected
from ._types import AuthorizationDetails

AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
DEFAULT_ALLOWED_ALGS = ("RS256", "PS256", "ES256")
# Algorithms we can verify with a public key. HMAC (HS*) is excluded on purpose: an OP's
# public key must never be usable as an HMAC secret.
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
_HASH_FOR_ALG = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
# OIDC Core §5.4: scopes that only release claims about the approver to this client. An OP may
# add them to the grant (Keycloak adds the client's default scopes). offline_access (§11) is not
# one: it asks for a refresh token, a long-lived credential that would outlive the one decision
# (README, "What an approval grants"), so an OP that adds it is rejected unless configured.
IDENTITY_SCOPES = frozenset({"profile", "email", "address", "phone"})


@dataclass(frozen=True)
class ValidationPolicy:
    """Local rules: which algorithms we accept and how much clock skew we tolerate."""

    allowed_algs: tuple[str, ...] = DEFAULT_ALLOWED_ALGS
    # Audiences besides our client_id that we trust to share an ID token with us.
    trusted_audiences: frozenset[str] = field(default_factory=frozenset)
    leeway_seconds: int = 60
    # An ID token older than this is stale, whatever its exp says (the OIDF plan's week-old iat).
    max_iat_age_seconds: int = 600
    # Require the auth_req_id claim in every mode, not only push (CIBA §10.3.1). Only for an OP
    # that adds it to every CIBA ID token: then it, not just the TLS exchange at the token
    # endpoint, binds the tokens to our request (README, "Threat model").
    require_auth_req_id_claim: bool = False
    # Scopes the OP may grant beyond those requested (never instead of them).
    extra_scopes_allowed: frozenset[str] = IDENTITY_SCOPES
    # RFC 9396 §6.1: per authorization_details type, the top-level members the OP may add to
    # what was requested (an enriched grant). Types not listed must come back exactly as asked.
    authorization_details_enrichment: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # A requested acr value -> the values an OP answers for it that are at least as strong
    # (Keycloak answers level-of-assurance values such as "1" or "gold"); list no weaker one.
    acr_equivalents: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unsafe = [alg for alg in self.allowed_algs if alg not in ASYMMETRIC_ALGS]
        if unsafe:
            raise ValueError(f"ID token algorithms must be asymmetric signature algorithms, not {', '.join(unsafe)}")


class RequestBinding(BaseModel):
    """What the tokens must match: the original request, as sent and acknowledged."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    client_id: str
    auth_req_id: str
    # When we sent the request (epoch seconds): nothing issued before it can answer it.
    requested_at: float
    scope: str
    acr_values: str | None = None
    authorization_details: AuthorizationDetails | None = None
    # The user we asked about, where known (from an id_token_hint, or given by the caller).
    expected_subject: str | None = None
    delivery_mode: DeliveryMode = "poll"

    @classmethod
    def for_request(
        cls,
        request: AuthenticationRequest,
        ack: Acknowledgement,
        *,
        issuer: str,
        client_id: str,
        requested_at: float,
        delivery_mode: DeliveryMode,
        expected_subject: str | None = None,
    ) -> RequestBinding:
        """The binding of a sent request; with an id_token_hint, its subject is the expected one."""
        if expected_subject is None and request.id_token_hint is not None:
            hint = jwt.decode(request.id_token_hint.get_secret_value(), options={"verify_signature": False})
            expected_subject = hint.get("sub") if isinstance(hint.get("sub"), str) else None
        return cls(
            issuer=issuer,
            client_id=client_id,
            auth_req_id=ack.auth_req_id,
            requested_at=requested_at,
            scope=request.scope,
            acr_values=request.acr_values,
            authorization_details=request.authorization_details,
            expected_subject=expected_subject,
            delivery_mode=delivery_mode,
        )


class ValidatedApproval(BaseModel):
    """The claims of a validated approval: who approved, how, and what they granted."""

    model_config = ConfigDict(frozen=True)

    sub: str
    acr: str | None = None
    amr: list[str] | None = None
    auth_time: int | None = None
    scope: str
    authorization_details: AuthorizationDetails | None = None
    issued_at: int
    expires_at: int


def _reject(code: str, claim: str, reason: str, expected: str | None = None) -> TokenRejected:
    return TokenRejected(code, claim, reason, expected)

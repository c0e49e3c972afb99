"""Signed authentication requests (CIBA Core 1.0 §7.1.1).

Every authentication request parameter goes into one JWT signed with the client's key, sent as
the `request` form parameter; only what client authentication needs stays outside it. The JWT
also carries `iss` (our client_id), `aud` (the OP's issuer identifier), `exp`, `nbf`, `iat` and a
random `jti`. Nothing here does I/O.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt

from ._client_auth import ClientSigningKey

# FAPI-CIBA §5.2.2 (by FAPI 1.0 Advanced §5.2.2-13): exp - nbf no longer than 60 minutes. A
# request object is used at once, so five minutes leaves room for clock skew and nothing more.
REQUEST_OBJECT_LIFETIME_SECONDS = 300
_JSON_MEMBERS = ("authorization_details", "claims")
_INTEGER_MEMBERS = ("requested_expiry",)


def request_object_claims(
    form: Mapping[str, str | list[str]], *, client_id: str, audience: str, now: float
) -> dict[str, Any]:
    """The JWT claims for a request form: its parameters as JSON values, plus the registered claims.

    In a request object, `authorization_details` is the JSON array itself (RFC 9396 §3) and
    `requested_expiry` a number (CIBA §7.1.1's example), not their form-encoded strings; a
    repeated parameter (RFC 8707's `resource`) an array.
    """
    claims: dict[str, Any] = {}
    for name, value in form.items():
        if isinstance(value, list):
            claims[name] = value
        elif name in _JSON_MEMBERS:
            claims[name] = json.loads(value)
        elif name in _INTEGER_MEMBERS:
            claims[name] = int(value)
        else:
            claims[name] = value
    issued_at = int(now)
    claims.update(
        iss=client_id,
        aud=audience,
        iat=issued_at,
        nbf=issued_at,
        exp=issued_at + REQUEST_OBJECT_LIFETIME_SECONDS,
        jti=secrets.token_urlsafe(24),
    )
    return claims


def signed_request_form(
    form: Mapping[str, str | list[str]],
    *,
    client_id: str,
    audience: str,
    signing_key: ClientSigningKey,
    now: float,
    allowed_algs: tuple[str, ...] | None,
) -> dict[str, str]:
    """CIBA §7.1.1: the form that carries `form` as a signed request object, and nothing else.

    "Authentication request parameters MUST NOT be present outside of the JWT"; the client
    authentication parameters are added afterwards by the caller. `allowed_algs` is the OP's
    backchannel_authentication_request_signing_alg_values_supported (CIBA §4).
    """
    alg = signing_key.choose_algorithm(allowed_algs, purpose="signed authentication requests")
    claims = request_object_claims(form, client_id=client_id, audience=audience, now=now)
    headers = {"kid": signing_key.kid} if signing_key.kid else None
    return {"request": jwt.encode(claims, signing_key.key, algorithm=alg, headers=headers)}

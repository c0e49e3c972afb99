"""Validation of a CIBA token response against the request it answers.

One ordered pipeline (OIDC Core 1.0 §3.1.3.7 as CIBA Core 1.0 §10.1.1 applies it, and the
OIDF client test plan's negative cases):

1. the JWS header: algorithm on our allow-list (never `none`, never HMAC), no `crit`;
2. the signature, with a key of the OP's JWKS chosen by kid and key type;
3. iss, aud (+ azp), exp, iat, nbf;
4. the binding to our request: auth_req_id claim, at_hash, rt_hash (required in push mode,
   CIBA §10.3.1), sub, acr, auth_time not older than the request;
5. the token response itself: every requested scope granted (extras only from an allow-list),
   authorization_details equal to the request (or enriched only as configured, RFC 9396 §6.1):
   temporal_ciba.ciba._grant_check.

What the tokens are held against (the request, the local rules) is in temporal_ciba.ciba._binding.

CIBA has no nonce: what ties the tokens to *our* request is the auth_req_id, the time of the
request, the granted scope and authorization_details, and the subject. Every step is a pure
function of its inputs and `now`; every failure is a TokenRejected with a stable code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

import jwt

from ._binding import (
    _HASH_FOR_ALG,
    AUTH_REQ_ID_CLAIM,
    RequestBinding,
    ValidatedApproval,
    ValidationPolicy,
    _reject,
)
from ._errors import KeyNotFound
from ._grant_check import check_grant
from ._jwks import PublicKey, select_keys
from ._token import TokenResponse

# 1. Header ---------------------------------------------------------------------------------


def check_header(header: dict[str, Any], policy: ValidationPolicy) -> str:
    """The alg must be on our allow-list (OIDC Core §3.1.3.7 step 7; RFC 8725 §3.1)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise _reject("alg_none", "alg", "unsigned ID token (alg none) is never accepted")
    if alg not in policy.allowed_algs:
        raise _reject("alg_not_allowed", "alg", f"algorithm {alg[:16]} is not allowed", ", ".join(policy.allowed_algs))
    # RFC 7515 §4.1.11: extensions we do not understand must make the JWS invalid.
    if "crit" in header:
        raise _reject("crit_header", "crit", "the ID token header has critical extensions we do not understand")
    return alg


# 2. Signature ------------------------------------------------------------------------------


def unverified_header(id_token: str) -> dict[str, Any]:
    """The JOSE header, read before any check (pyjwt would refuse some of what we must name)."""
    parts = id_token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        raise _reject("malformed", "id_token", "the ID token is not a compact JWS") from None
    if not isinstance(header, dict):
        raise _reject("malformed", "id_token", "the ID token header is not a JSON object")
    return header


def verify_signature(id_token: str, keys: Sequence[PublicKey], policy: ValidationPolicy) -> tuple[str, dict[str, Any]]:
    """Verify the JWS with the one key it names; return its alg and claims."""
    header = unverified_header(id_token)
    alg = check_header(header, policy)
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    candidates = select_keys(keys, alg=alg, kid=kid)
    if not candidates:
        raise KeyNotFound(
            "key_not_found", "kid", f"no {alg} key in the OP's JWKS" + (f" with kid {kid[:64]!r}" if kid else "")
        )
    if kid is None and len(candidates) > 1:
        raise _reject(
            "key_ambiguous", "kid", f"the ID token names no kid and the JWKS has {len(candidates)} {alg} keys"
        )
    try:
        decoded = jwt.PyJWS().decode_complete(id_token, key=candidates[0].key, algorithms=[alg])
    except jwt.InvalidSignatureError:
        raise _reject("signature_invalid", "signature", "the ID token signature does not verify") from None
    except jwt.PyJWTError:
        raise _reject("malformed", "id_token", "the ID token could not be decoded") from None
    try:
        claims = json.loads(decoded["payload"])
    except ValueError:
        raise _reject("malformed", "id_token", "the ID token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise _reject("malformed", "id_token", "the ID token payload is not a JSON object")
    return alg, claims


# 3. Standard claims ------------------------------------------------------------------------


def _numeric_date(claims: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _reject(f"{name}_missing", name, f"the ID token has no {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _reject(f"{name}_invalid", name, f"{name} is not a NumericDate")
    return int(value)


def check_issuer(claims: dict[str, Any], issuer: str) -> None:
    """OIDC Core §3.1.3.7 step 2: iss MUST exactly match the OP's issuer identifier."""
    iss = claims.get("iss")
    if iss is None:
        raise _reject("iss_missing", "iss", "the ID token has no iss", issuer)
    if iss != issuer:
        raise _reject("iss_mismatch", "iss", "the ID token was issued by another issuer", issuer)


def check_audience(claims: dict[str, Any], client_id: str, policy: ValidationPolicy) -> None:
    """OIDC Core §3.1.3.7 steps 3-5: aud contains us and no untrusted audience; azp when several."""
    aud = claims.get("aud")
    if aud is None:
        raise _reject("aud_missing", "aud", "the ID token has no aud", client_id)
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(item, str) for item in audiences):
        raise _reject("aud_invalid", "aud", "aud is neither a string nor a list of strings", client_id)
    if client_id not in audiences:
        raise _reject("aud_mismatch", "aud", "the ID token is not for this client", client_id)
    untrusted = [item for item in audiences if item != client_id and item not in policy.trusted_audiences]
    if untrusted:
        raise _reject(
            "aud_untrusted", "aud", f"the ID token is also for {len(untrusted)} untrusted audience(s)", client_id
        )
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise _reject(
            "azp_missing", "azp", "an ID token with several audiences must name the authorized party", client_id
        )
    if azp is not None and azp != client_id:
        raise _reject("azp_mismatch", "azp", "the authorized party is another client", client_id)


def check_times(
    claims: dict[str, Any], *, requested_at: float, now: float, policy: ValidationPolicy
) -> tuple[int, int]:
    """OIDC Core §3.1.3.7 steps 9-10: exp in the future, iat recent; and not issued before our request."""
    leeway = policy.leeway_seconds
    exp = _numeric_date(claims, "exp", required=True)
    iat = _numeric_date(claims, "iat", required=True)
    assert exp is not None and iat is not None
    if exp <= now - leeway:
        raise _reject("exp_expired", "exp", "the ID token has expired")
    if iat > now + leeway:
        raise _reject("iat_future", "iat", "the ID token is issued in the future")
    if iat < now - policy.max_iat_age_seconds:
        raise _reject("iat_stale", "iat", f"the ID token was issued more than {policy.max_iat_age_seconds} s ago")
    if iat < requested_at - leeway:
        raise _reject("iat_before_request", "iat", "the ID token was issued before this request was sent (replayed)")
    nbf = _numeric_date(claims, "nbf", required=False)
    if nbf is not None and nbf > now + leeway:
        raise _reject("nbf_future", "nbf", "the ID token is not valid yet")
    return iat, exp


# 4. Binding to our request -----------------------------------------------------------------


def token_hash(value: str, alg: str) -> str:
    """OIDC Core §3.3.2.11: base64url of the left half of the hash that the JWS alg uses."""
    digest = (hashlib.sha512 if alg == "EdDSA" else _HASH_FOR_ALG[alg[-3:]])(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def _check_hash(claims: dict[str, Any], name: str, token: str | None, alg: str, *, required: bool) -> None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _reject(f"{name}_missing", name, f"the ID token has no {name} (required in push mode, CIBA §10.3.1)")
        return
    if token is None:
        raise _reject(f"{name}_mismatch", name, f"the ID token has {name} but the response carries no such token")
    if not isinstance(value, str) or not hmac.compare_digest(value.encode(), token_hash(token, alg).encode()):
        raise _reject(f"{name}_mismatch", name, f"{name} does not match the token it covers")


def check_binding(
    claims: dict[str, Any], tokens: TokenResponse, alg: str, binding: RequestBinding, *, policy: ValidationPolicy
) -> None:
    push = binding.delivery_mode == "push"
    auth_req_id = claims.get(AUTH_REQ_ID_CLAIM)
    if auth_req_id is None and push:
        raise _reject(
            "auth_req_id_missing", AUTH_REQ_ID_CLAIM, "pushed ID token lacks the auth_req_id claim (CIBA §10.3.1)"
        )
    if auth_req_id is None and policy.require_auth_req_id_claim:
        raise _reject(
            "auth_req_id_missing",
            AUTH_REQ_ID_CLAIM,
            "the ID token lacks the auth_req_id claim, which CIBA_REQUIRE_AUTH_REQ_ID_CLAIM requires",
        )
    if auth_req_id is not None and (
        not isinstance(auth_req_id, str) or not hmac.compare_digest(auth_req_id.encode(), binding.auth_req_id.encode())
    ):
        raise _reject(
            "auth_req_id_mismatch", AUTH_REQ_ID_CLAIM, "the ID token answers another request", binding.auth_req_id
        )

    _check_hash(claims, "at_hash", tokens.access_token.get_secret_value(), alg, required=push)
    refresh = tokens.refresh_token.get_secret_value() if tokens.refresh_token else None
    _check_hash(claims, "rt_hash", refresh, alg, required=push and refresh is not None)

    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _reject("sub_missing", "sub", "the ID token has no sub")
    if binding.expected_subject is not None and sub != binding.expected_subject:
        raise _reject("sub_mismatch", "sub", "the ID token is for another user", binding.expected_subject)

    # OIDC Core §3.1.3.7 step 12: acr must satisfy what we asked for.
    acr = claims.get("acr")
    if acr is not None and not isinstance(acr, str):
        raise _reject("acr_invalid", "acr", "acr is not a string")
    if binding.acr_values:
        requested = binding.acr_values.split()
        if acr is None:
            raise _reject(
                "acr_missing", "acr", "acr_values were requested but the ID token has no acr", binding.acr_values
            )
        accepted = set(requested).union(*(policy.acr_equivalents.get(value, ()) for value in requested))
        if acr not in accepted:
            raise _reject(
                "acr_not_requested",
                "acr",
                f"authentication context {acr[:64]!r} is not one requested",
                binding.acr_values,
            )

    amr = claims.get("amr")
    if amr is not None and (not isinstance(amr, list) or not all(isinstance(item, str) for item in amr)):
        raise _reject("amr_invalid", "amr", "amr is not a list of strings")

    # The user must have authenticated for this request, not before it was sent.
    auth_time = _numeric_date(claims, "auth_time", required=False)
    if auth_time is not None and auth_time < binding.requested_at - policy.leeway_seconds:
        raise _reject("auth_time_before_request", "auth_time", "the user authenticated before this request was sent")


def check_id_token_hint(
    id_token_hint: str, keys: Sequence[PublicKey], *, issuer: str, client_id: str, policy: ValidationPolicy
) -> str:
    """Prove an id_token_hint is an ID token the OP issued to this client; returns its `sub`.

    CIBA §7.1: an id_token_hint is "an ID Token previously issued to the Client by the OpenID
    Provider". Before it pins the approver, prove that: signed by the OP with an allowed alg,
    `iss` the issuer, `aud` this client (OIDC Core §3.1.3.7 steps 2-7). Its exp and iat are
    not checked: a hint may be old, it names a person and grants nothing."""
    _, claims = verify_signature(id_token_hint, keys, policy)
    check_issuer(claims, issuer)
    check_audience(claims, client_id, policy)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _reject("sub_missing", "sub", "the id_token_hint has no sub")
    return sub


# 5. The token response: temporal_ciba.ciba._grant_check -------------------------------------


def validate_token_response(
    tokens: TokenResponse,
    binding: RequestBinding,
    keys: Sequence[PublicKey],
    *,
    now: float,
    policy: ValidationPolicy,
) -> ValidatedApproval:
    """Every rule, in order; the first failure raises TokenRejected."""
    alg, claims = verify_signature(tokens.id_token.get_secret_value(), keys, policy)
    check_issuer(claims, binding.issuer)
    check_audience(claims, binding.client_id, policy)
    iat, exp = check_times(claims, requested_at=binding.requested_at, now=now, policy=policy)
    check_binding(claims, tokens, alg, binding, policy=policy)
    scope = check_grant(tokens, binding, policy)
    auth_time = claims.get("auth_time")
    return ValidatedApproval(
        sub=claims["sub"],
        acr=claims.get("acr"),
        amr=claims.get("amr"),
        auth_time=int(auth_time) if auth_time is not None else None,
        scope=scope,
        authorization_details=tokens.authorization_details,
        issued_at=iat,
        expires_at=exp,
    )

"""Token responses that ID token validation must refuse, each with the error code it must give."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from temporal_ciba.ciba import TokenResponse
from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM, RequestBinding, ValidationPolicy
from temporal_ciba.ciba._validation import token_hash, validate_token_response
from tests.support.tokens import (
    CLIENT_ID,
    DETAILS,
    NOW,
    Keys,
    b64url,
    binding,
    claims,
    token_response,
)

POLICY = ValidationPolicy()


KEYS = Keys()


DAY = 24 * 3600


@dataclass
class Case:
    """One row: the token response and request binding to validate, and the code expected."""

    tokens: Callable[[], TokenResponse]
    binding: Callable[[], RequestBinding] = binding
    policy: ValidationPolicy = POLICY


def signed(**overrides: object) -> Callable[[], TokenResponse]:
    return lambda: token_response(KEYS.sign(claims(**overrides)))


def _alg_none() -> TokenResponse:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    return token_response(f"{header}.{payload}.")


def _alternate_alg() -> TokenResponse:
    # Signed with RS256, but the header claims PS256 (OIDF: "alternate alg").
    token = KEYS.sign(claims(), alg="RS256")
    _, payload, signature = token.split(".")
    header = b64url(json.dumps({"alg": "PS256", "kid": "rsa-1"}).encode())
    return token_response(f"{header}.{payload}.{signature}")


def _hmac_with_public_key() -> TokenResponse:
    # The classic key-confusion attack: HS256 keyed with the OP's public key.
    header = b64url(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    import hashlib
    import hmac

    mac = hmac.new(KEYS.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return token_response(f"{header}.{payload}.{b64url(mac)}")


def _stale_replay() -> TokenResponse:
    # Tokens the OP issued for an earlier request, replayed into this one.
    return token_response(KEYS.sign(claims(iat=int(NOW) - 300, auth_time=int(NOW) - 310, **{AUTH_REQ_ID_CLAIM: None})))


NEGATIVE = {
    # The OIDF client test plan.
    "invalid_iss": (Case(signed(iss="https://evil.example.test")), "iss_mismatch"),
    "missing_iss": (Case(signed(iss=None)), "iss_missing"),
    "invalid_aud": (Case(signed(aud="another-client")), "aud_mismatch"),
    "missing_aud": (Case(signed(aud=None)), "aud_missing"),
    "untrusted_secondary_aud": (
        Case(signed(aud=[CLIENT_ID, "https://untrusted.example"], azp=CLIENT_ID)),
        "aud_untrusted",
    ),
    "invalid_signature": (Case(lambda: token_response(KEYS.sign(claims(), key=KEYS.attacker))), "signature_invalid"),
    "alg_none": (Case(_alg_none), "alg_none"),
    "alternate_alg_ps256_header_rs256_signature": (Case(_alternate_alg), "signature_invalid"),
    "expired_exp": (Case(signed(exp=int(NOW) - 120, iat=int(NOW) - 200)), "exp_expired"),
    "missing_exp": (Case(signed(exp=None)), "exp_missing"),
    "iat_a_week_old": (Case(signed(iat=int(NOW) - 7 * DAY, auth_time=None)), "iat_stale"),
    # Ours.
    "auth_req_id_of_another_request": (Case(signed(**{AUTH_REQ_ID_CLAIM: "req-other"})), "auth_req_id_mismatch"),
    "bad_at_hash": (Case(signed(at_hash=token_hash("another-access-token", "RS256"))), "at_hash_mismatch"),
    "bad_rt_hash": (Case(signed(rt_hash=token_hash("another-refresh-token", "RS256"))), "rt_hash_mismatch"),
    "sub_of_another_user": (Case(signed(sub="mallory")), "sub_mismatch"),
    "acr_weaker_than_asked": (Case(signed(acr="urn:example:acr:basic")), "acr_not_requested"),
    "granted_authorization_details_differ": (
        Case(
            lambda: token_response(
                KEYS.sign(claims()), authorization_details=[{**DETAILS[0], "creditorName": "Mallory Ltd"}]
            )
        ),
        "authorization_details_mismatch",
    ),
    "stale_tokens_replayed_into_new_request": (Case(_stale_replay), "iat_before_request"),
    # Further rules of our own (docs/security/validated.md).
    "hmac_alg_with_public_key": (Case(_hmac_with_public_key), "alg_not_allowed"),
    "alg_not_on_allow_list": (Case(lambda: token_response(KEYS.sign(claims(), alg="RS384"))), "alg_not_allowed"),
    "unknown_kid": (Case(lambda: token_response(KEYS.sign(claims(), kid="rotated-away"))), "key_not_found"),
    "crit_header": (Case(lambda: token_response(KEYS.sign(claims(), headers={"crit": ["exp"]}))), "crit_header"),
    "malformed_token": (Case(lambda: token_response("not-a-jwt")), "malformed"),
    "missing_iat": (Case(signed(iat=None)), "iat_missing"),
    "iat_in_the_future": (Case(signed(iat=int(NOW) + 3600)), "iat_future"),
    "nbf_in_the_future": (Case(signed(nbf=int(NOW) + 3600)), "nbf_future"),
    "exp_not_a_number": (Case(signed(exp="tomorrow")), "exp_invalid"),
    "several_aud_without_azp": (
        Case(
            signed(aud=[CLIENT_ID, "https://api.example"]),
            policy=ValidationPolicy(trusted_audiences=frozenset({"https://api.example"})),
        ),
        "azp_missing",
    ),
    "azp_of_another_client": (Case(signed(azp="another-client")), "azp_mismatch"),
    "missing_sub": (Case(signed(sub=None)), "sub_missing"),
    "acr_missing_when_asked": (Case(signed(acr=None)), "acr_missing"),
    "amr_not_a_list": (Case(signed(amr="pwd")), "amr_invalid"),
    "auth_time_before_request": (Case(signed(auth_time=int(NOW) - 3600)), "auth_time_before_request"),
    "scope_not_granted": (Case(lambda: token_response(KEYS.sign(claims()), scope="openid")), "scope_mismatch"),
    "scope_more_than_requested": (
        Case(lambda: token_response(KEYS.sign(claims()), scope="openid payments admin")),
        "scope_mismatch",
    ),
    "authorization_details_missing_from_grant": (
        Case(lambda: token_response(KEYS.sign(claims()), authorization_details=None)),
        "authorization_details_missing",
    ),
    "authorization_details_never_requested": (
        Case(signed(), binding=lambda: binding(authorization_details=None)),
        "authorization_details_mismatch",
    ),
    "push_without_auth_req_id_claim": (
        Case(signed(**{AUTH_REQ_ID_CLAIM: None}), binding=lambda: binding(delivery_mode="push")),
        "auth_req_id_missing",
    ),
    "push_without_at_hash": (
        Case(signed(at_hash=None), binding=lambda: binding(delivery_mode="push")),
        "at_hash_missing",
    ),
    "push_without_rt_hash_when_refresh_token_came": (
        Case(signed(rt_hash=None), binding=lambda: binding(delivery_mode="push")),
        "rt_hash_missing",
    ),
    "rt_hash_without_refresh_token": (
        Case(lambda: token_response(KEYS.sign(claims()), refresh_token=None)),
        "rt_hash_mismatch",
    ),
}


def _validate(case: Case) -> object:
    return validate_token_response(case.tokens(), case.binding(), KEYS.jwks(), now=NOW, policy=case.policy)

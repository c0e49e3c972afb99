"""Validation of token responses: every negative case of the OIDF client test plan, and our
own additions, rejected with a reason naming the rule; the positive cases accepted. Keys and
tokens are made here; the clock is fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest

from temporal_ciba.ciba import TokenRejected, TokenResponse
from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM, RequestBinding, ValidationPolicy
from temporal_ciba.ciba._jwks import parse_jwks
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
    # Further rules of our own (README, "Validation").
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


@pytest.mark.parametrize("case,code", list(NEGATIVE.values()), ids=list(NEGATIVE))
def test_rejected(case: Case, code: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        _validate(case)
    assert caught.value.code == code
    # One line that names the rule, and never the token itself.
    message = str(caught.value)
    assert message.startswith(code + ": ") and "\n" not in message
    assert "eyJ" not in message and "at-aaaa" not in message


POSITIVE = {
    "rs256_poll": Case(signed()),
    "es256_with_its_own_hashes": Case(
        lambda: token_response(
            KEYS.sign(
                claims(at_hash=token_hash("at-" + "a" * 40, "ES256"), rt_hash=token_hash("rt-" + "r" * 40, "ES256")),
                alg="ES256",
                kid="ec-1",
            )
        )
    ),
    "push_with_every_binding_claim": Case(signed(), binding=lambda: binding(delivery_mode="push")),
    "poll_without_optional_binding_claims": Case(signed(**{AUTH_REQ_ID_CLAIM: None, "at_hash": None, "rt_hash": None})),
    "trusted_secondary_aud_with_azp": Case(
        signed(aud=[CLIENT_ID, "https://api.example"], azp=CLIENT_ID),
        policy=ValidationPolicy(trusted_audiences=frozenset({"https://api.example"})),
    ),
    "scope_omitted_means_as_requested": Case(lambda: token_response(KEYS.sign(claims()), scope=None)),
    "resource_scope_without_openid": Case(lambda: token_response(KEYS.sign(claims()), scope="payments")),
    "acr_any_of_the_requested": Case(
        signed(acr="urn:example:acr:basic"),
        binding=lambda: binding(acr_values="urn:example:acr:mfa urn:example:acr:basic"),
    ),
    "no_kid_single_matching_key": Case(lambda: token_response(KEYS.sign(claims(), kid=None))),
    "subject_unknown_to_the_request": Case(signed(sub="bob"), binding=lambda: binding(expected_subject=None)),
    "within_clock_leeway": Case(signed(iat=int(NOW) + 30, exp=int(NOW) - 30)),
}


@pytest.mark.parametrize("case", list(POSITIVE.values()), ids=list(POSITIVE))
def test_accepted(case: Case) -> None:
    approval = _validate(case)
    tokens = case.tokens()
    payload = jwt.decode(tokens.id_token.get_secret_value(), options={"verify_signature": False})
    assert approval.sub == payload["sub"]  # type: ignore[attr-defined]
    assert approval.issued_at == payload["iat"]  # type: ignore[attr-defined]
    assert approval.authorization_details == DETAILS  # type: ignore[attr-defined]


def test_validated_claims_are_reported() -> None:
    approval = _validate(Case(signed()))
    assert approval.model_dump() == {  # type: ignore[attr-defined]
        "sub": "alice",
        "acr": "urn:example:acr:mfa",
        "amr": ["pwd", "hwk"],
        "auth_time": int(NOW) - 10,
        "scope": "openid payments",
        "authorization_details": DETAILS,
        "issued_at": int(NOW) - 5,
        "expires_at": int(NOW) + 600,
    }


def test_hmac_algorithms_cannot_be_allowed() -> None:
    with pytest.raises(ValueError, match="HS256"):
        ValidationPolicy(allowed_algs=("RS256", "HS256"))


def test_jwks_skips_symmetric_private_and_encryption_keys() -> None:
    document = KEYS.jwks_document()
    document["keys"] += [
        {"kty": "oct", "k": b64url(b"secret" * 6), "kid": "hmac"},
        {**document["keys"][0], "kid": "enc", "use": "enc"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
    ]
    assert [key.kid for key in parse_jwks(document)] == ["rsa-1", "ec-1"]


def test_token_repr_hides_secrets() -> None:
    tokens = token_response(KEYS.sign(claims()))
    text = repr(tokens) + str(tokens)
    assert "at-aaaa" not in text and "rt-rrrr" not in text and "eyJ" not in text

"""Validation of token responses.

Every negative case of the OIDF client test plan, and our own additions, rejected with a reason
naming the rule; the positive cases accepted. Keys and tokens are made here; the clock is fixed."""

from __future__ import annotations

import jwt
import pytest

from temporal_ciba.ciba import TokenRejected
from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM, ValidationPolicy
from temporal_ciba.ciba._jwks import parse_jwks
from temporal_ciba.ciba._validation import token_hash
from tests.support.tokens import (
    CLIENT_ID,
    DETAILS,
    NOW,
    b64url,
    binding,
    claims,
    token_response,
)
from tests.support.validation_cases import (
    KEYS,
    NEGATIVE,
    Case,
    _validate,
    signed,
)


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

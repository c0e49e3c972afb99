"""The rules of temporal_ciba/ciba/_validation.py at their edges.

Each test breaks or grazes one rule and names it, so deleting or loosening the rule fails here
(scripts/mutation.sh checks that no such change survives). The negative table lives in
tests.support.validation_cases, the positive one in test_validation.py."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr

from temporal_ciba.ciba import TokenRejected
from temporal_ciba.ciba._backchannel import Acknowledgement, AuthenticationRequest
from temporal_ciba.ciba._binding import AUTH_REQ_ID_CLAIM, RequestBinding, ValidatedApproval, ValidationPolicy
from temporal_ciba.ciba._jwks import parse_jwks
from temporal_ciba.ciba._validation import token_hash, validate_token_response
from tests.support.tokens import CLIENT_ID, DETAILS, ISSUER, NOW, b64url, binding, claims, token_response
from tests.support.validation_cases import KEYS, NEGATIVE, Case, _validate

POLICY = ValidationPolicy()
LEEWAY = POLICY.leeway_seconds
REQUESTED_AT = binding().requested_at

# What each rejection names besides its code: the claim checked and the value it had to be.
NAMED = {
    "invalid_iss": ("iss", ISSUER),
    "missing_iss": ("iss", ISSUER),
    "invalid_aud": ("aud", CLIENT_ID),
    "missing_aud": ("aud", CLIENT_ID),
    "untrusted_secondary_aud": ("aud", CLIENT_ID),
    "invalid_signature": ("signature", None),
    "alg_none": ("alg", None),
    "alternate_alg_ps256_header_rs256_signature": ("signature", None),
    "expired_exp": ("exp", None),
    "missing_exp": ("exp", None),
    "iat_a_week_old": ("iat", None),
    "auth_req_id_of_another_request": (AUTH_REQ_ID_CLAIM, binding().auth_req_id),
    "bad_at_hash": ("at_hash", None),
    "bad_rt_hash": ("rt_hash", None),
    "sub_of_another_user": ("sub", "alice"),
    "acr_weaker_than_asked": ("acr", "urn:example:acr:mfa"),
    "granted_authorization_details_differ": ("authorization_details", None),
    "stale_tokens_replayed_into_new_request": ("iat", None),
    "hmac_alg_with_public_key": ("alg", "RS256, PS256, ES256"),
    "alg_not_on_allow_list": ("alg", "RS256, PS256, ES256"),
    "unknown_kid": ("kid", None),
    "crit_header": ("crit", None),
    "malformed_token": ("id_token", None),
    "missing_iat": ("iat", None),
    "iat_in_the_future": ("iat", None),
    "nbf_in_the_future": ("nbf", None),
    "exp_not_a_number": ("exp", None),
    "several_aud_without_azp": ("azp", CLIENT_ID),
    "azp_of_another_client": ("azp", CLIENT_ID),
    "missing_sub": ("sub", None),
    "acr_missing_when_asked": ("acr", "urn:example:acr:mfa"),
    "amr_not_a_list": ("amr", None),
    "auth_time_before_request": ("auth_time", None),
    "scope_not_granted": ("scope", "openid payments"),
    "scope_more_than_requested": ("scope", "openid payments"),
    "authorization_details_missing_from_grant": ("authorization_details", None),
    "authorization_details_never_requested": ("authorization_details", None),
    "push_without_auth_req_id_claim": (AUTH_REQ_ID_CLAIM, None),
    "push_without_at_hash": ("at_hash", None),
    "push_without_rt_hash_when_refresh_token_came": ("rt_hash", None),
    "rt_hash_without_refresh_token": ("rt_hash", None),
}


def _rejection(case: Case) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        _validate(case)
    return caught.value


def _signed(policy: ValidationPolicy = POLICY, **overrides: object) -> ValidatedApproval:
    tokens = token_response(KEYS.sign(claims(**overrides)))
    return validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=policy)


def _rejected_code(policy: ValidationPolicy = POLICY, **overrides: object) -> str:
    with pytest.raises(TokenRejected) as caught:
        _signed(policy, **overrides)
    return caught.value.code


def test_every_table_case_is_named() -> None:
    assert set(NAMED) == set(NEGATIVE)


@pytest.mark.parametrize("name", list(NEGATIVE))
def test_rejection_names_the_claim_and_the_expected_value(name: str) -> None:
    case, code = NEGATIVE[name]
    rejected = _rejection(case)
    assert (rejected.code, rejected.claim, rejected.expected) == (code, *NAMED[name])
    assert isinstance(rejected.reason, str) and rejected.reason.strip()


# Time rules, at their boundaries -------------------------------------------------------------


def test_exp_rule_rejects_an_exp_exactly_at_the_leeway() -> None:
    assert _rejected_code(exp=int(NOW) - LEEWAY) == "exp_expired"
    assert _signed(exp=int(NOW) - LEEWAY + 1).expires_at == int(NOW) - LEEWAY + 1


def test_iat_future_rule_accepts_an_iat_exactly_at_the_leeway() -> None:
    assert _signed(iat=int(NOW) + LEEWAY).issued_at == int(NOW) + LEEWAY
    assert _rejected_code(iat=int(NOW) + LEEWAY + 1) == "iat_future"


def test_iat_age_rule_accepts_an_iat_exactly_max_age_old() -> None:
    policy = ValidationPolicy(max_iat_age_seconds=20)
    # requested_at is NOW - 30: an iat 20 s old is after the request and exactly at the age limit.
    assert _signed(policy, iat=int(NOW) - 20, auth_time=None).issued_at == int(NOW) - 20
    assert _rejected_code(policy, iat=int(NOW) - 21, auth_time=None) == "iat_stale"


def test_iat_before_request_rule_accepts_an_iat_exactly_at_the_leeway() -> None:
    edge = int(REQUESTED_AT - LEEWAY)
    assert _signed(iat=edge, auth_time=None).issued_at == edge
    assert _rejected_code(iat=edge - 1, auth_time=None) == "iat_before_request"


def test_nbf_rule_accepts_nbf_now_and_exactly_at_the_leeway() -> None:
    assert _signed(nbf=int(NOW)).sub == "alice"
    assert _signed(nbf=int(NOW) + LEEWAY).sub == "alice"
    assert _rejected_code(nbf=int(NOW) + LEEWAY + 1) == "nbf_future"


def test_auth_time_rule_accepts_auth_time_exactly_at_the_leeway_and_its_absence() -> None:
    edge = int(REQUESTED_AT - LEEWAY)
    assert _signed(auth_time=edge).auth_time == edge
    assert _rejected_code(auth_time=edge - 1) == "auth_time_before_request"
    assert _signed(auth_time=None).auth_time is None


# Claim shapes --------------------------------------------------------------------------------


def test_sub_rule_rejects_a_sub_that_is_not_a_string() -> None:
    assert _rejected_code(sub=42) == "sub_missing"


def _named(policy: ValidationPolicy = POLICY, **overrides: object) -> tuple[str, str, str | None]:
    with pytest.raises(TokenRejected) as caught:
        _signed(policy, **overrides)
    return caught.value.code, caught.value.claim, caught.value.expected


def test_aud_rule_rejects_a_list_with_a_non_string_audience() -> None:
    assert _named(aud=[CLIENT_ID, 42]) == ("aud_invalid", "aud", CLIENT_ID)


def test_acr_rule_rejects_an_acr_that_is_not_a_string() -> None:
    assert _named(acr=42) == ("acr_invalid", "acr", None)


def _jws(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = KEYS.rsa.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@pytest.mark.parametrize(
    "header,payload",
    [
        (b"[1]", json.dumps(claims()).encode()),
        (b'{"alg": "RS256", "kid": "rsa-1"}', b"not json"),
        (b'{"alg": "RS256", "kid": "rsa-1"}', b"[1]"),
    ],
    ids=["header_not_an_object", "payload_not_json", "payload_not_an_object"],
)
def test_malformed_rule_rejects_a_jws_that_is_not_a_json_object(header: bytes, payload: bytes) -> None:
    rejected = _rejection(Case(lambda: token_response(_jws(header, payload))))
    assert (rejected.code, rejected.claim) == ("malformed", "id_token")


def test_kid_rule_rejects_a_non_string_kid_as_malformed_not_as_an_unknown_key() -> None:
    # An unknown kid makes the caller refetch the JWKS; a kid that is no string must not.
    header = b64url(json.dumps({"alg": "RS256", "kid": 42}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signature = KEYS.rsa.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    case = Case(lambda: token_response(f"{header}.{payload}.{b64url(signature)}"))
    assert (_rejection(case).code, _rejection(case).claim) == ("malformed", "id_token")


def test_kid_rule_refuses_to_guess_between_two_keys_of_the_alg() -> None:
    document = KEYS.jwks_document()
    document["keys"].append({**document["keys"][0], "kid": "rsa-2"})
    with pytest.raises(TokenRejected) as caught:
        validate_token_response(
            token_response(KEYS.sign(claims(), kid=None)), binding(), parse_jwks(document), now=NOW, policy=POLICY
        )
    assert (caught.value.code, caught.value.claim) == ("key_ambiguous", "kid")


def test_kid_rule_names_the_missing_kid() -> None:
    with pytest.raises(TokenRejected) as caught:
        _validate(Case(lambda: token_response(KEYS.sign(claims(), kid="rotated-away"))))
    assert "'rotated-away'" in caught.value.reason


# The grant -----------------------------------------------------------------------------------


def test_scope_rule_names_what_was_not_granted_and_not_requested() -> None:
    tokens = token_response(KEYS.sign(claims()), scope="openid admin audit")
    with pytest.raises(TokenRejected) as caught:
        validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=POLICY)
    assert "(not granted: payments; not requested: admin audit)" in caught.value.reason
    tokens = token_response(KEYS.sign(claims()), scope="openid")
    with pytest.raises(TokenRejected) as caught:
        validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=POLICY)
    assert caught.value.reason.endswith("(not granted: payments)")
    tokens = token_response(KEYS.sign(claims()), scope="openid payments admin")
    with pytest.raises(TokenRejected) as caught:
        validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=POLICY)
    assert caught.value.reason.endswith("(not requested: admin)")
    tokens = token_response(KEYS.sign(claims()), scope="openid")
    with pytest.raises(TokenRejected) as caught:
        validate_token_response(tokens, binding(scope="openid payments audit"), KEYS.jwks(), now=NOW, policy=POLICY)
    assert caught.value.reason.endswith("(not granted: payments audit)")


def test_authorization_details_rule_ignores_member_order() -> None:
    reordered = [dict(reversed(list(DETAILS[0].items())))]
    assert list(reordered[0]) != list(DETAILS[0])
    tokens = token_response(KEYS.sign(claims()), authorization_details=reordered)
    approval = validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=POLICY)
    assert approval.authorization_details == reordered


# Hashes (OIDC Core §3.3.2.11) ----------------------------------------------------------------


def _left_half(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")


@pytest.mark.parametrize(
    "alg,value,hash_function",
    [
        ("RS256", "at-known", hashlib.sha256),
        ("ES256", "at-known", hashlib.sha256),
        # A value whose 384-bit half-hash ends in "X": nothing but padding may be stripped.
        ("PS384", "at-0", hashlib.sha384),
        ("RS512", "at-known", hashlib.sha512),
        ("EdDSA", "at-known", hashlib.sha512),
    ],
)
def test_hash_rule_is_the_left_half_of_the_algs_hash(alg: str, value: str, hash_function: object) -> None:
    expected = _left_half(hash_function(value.encode()).digest())  # type: ignore[operator]
    assert token_hash(value, alg) == expected and "=" not in expected


# The auth_req_id claim where the OP offers it (CIBA_REQUIRE_AUTH_REQ_ID_CLAIM) ---------------


def test_auth_req_id_claim_rule_is_optional_in_poll_mode_by_default() -> None:
    assert _signed(**{AUTH_REQ_ID_CLAIM: None}).sub == "alice"


def test_auth_req_id_claim_rule_when_required_rejects_its_absence_in_poll_mode() -> None:
    policy = ValidationPolicy(require_auth_req_id_claim=True)
    with pytest.raises(TokenRejected) as caught:
        _signed(policy, **{AUTH_REQ_ID_CLAIM: None})
    assert (caught.value.code, caught.value.claim) == ("auth_req_id_missing", AUTH_REQ_ID_CLAIM)
    assert _signed(policy).sub == "alice"


# The binding of a sent request ---------------------------------------------------------------


def _request(**fields: object) -> AuthenticationRequest:
    return AuthenticationRequest(scope="openid payments", binding_message="Pay", **fields)  # type: ignore[arg-type]


def test_binding_rule_carries_every_field_of_the_request_and_its_acknowledgement() -> None:
    request = _request(login_hint="alice", acr_values="urn:example:acr:mfa", authorization_details=DETAILS)
    ack = Acknowledgement(auth_req_id="req-9", expires_in=600, received_at=NOW)
    bound = RequestBinding.for_request(
        request, ack, issuer=ISSUER, client_id=CLIENT_ID, requested_at=NOW, delivery_mode="ping"
    )
    assert bound.model_dump() == {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "auth_req_id": "req-9",
        "requested_at": NOW,
        "scope": "openid payments",
        "acr_values": "urn:example:acr:mfa",
        "authorization_details": DETAILS,
        "expected_subject": None,
        "delivery_mode": "ping",
    }


def _hint(sub: object) -> SecretStr:
    return SecretStr(jwt.encode({"sub": sub, "iss": ISSUER}, KEYS.rsa, algorithm="RS256"))


@pytest.mark.parametrize(
    "hint_sub,given,expected",
    [("bob", None, "bob"), ("bob", "carol", "carol"), (42, None, None)],
    ids=["hint_subject_expected", "given_subject_wins", "non_string_subject_ignored"],
)
def test_binding_rule_expects_the_id_token_hints_subject(hint_sub: object, given: str | None, expected: str) -> None:
    ack = Acknowledgement(auth_req_id="req-9", expires_in=600, received_at=NOW)
    bound = RequestBinding.for_request(
        _request(id_token_hint=_hint(hint_sub)),
        ack,
        issuer=ISSUER,
        client_id=CLIENT_ID,
        requested_at=NOW,
        delivery_mode="poll",
        expected_subject=given,
    )
    assert bound.expected_subject == expected

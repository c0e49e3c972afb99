"""The grant against the request.

Every requested scope granted, extra scopes only from the allow-list; authorization_details exact,
or enriched only as configured (RFC 9396 §6.1) and never less than requested; acr equivalents
(Keycloak's level-of-assurance values). Table-driven on literal data with a fixed clock."""

from __future__ import annotations

from typing import Any

import pytest

from temporal_ciba.ciba import TokenRejected
from temporal_ciba.ciba._binding import IDENTITY_SCOPES, ValidationPolicy
from temporal_ciba.ciba._validation import check_id_token_hint, validate_token_response
from tests.support.tokens import CLIENT_ID, DETAILS, ISSUER, NOW, Keys, binding, claims, token_response

KEYS = Keys()
DEFAULT = ValidationPolicy()
PAYMENT = DETAILS[0]
ENRICHING = ValidationPolicy(
    authorization_details_enrichment={"payment_initiation": frozenset({"consentId", "status"})}
)


def _validate(policy: ValidationPolicy, *, id_claims: dict[str, Any] | None = None, **response: Any) -> Any:
    tokens = token_response(KEYS.sign(claims(**(id_claims or {}))), **response)
    return validate_token_response(tokens, binding(), KEYS.jwks(), now=NOW, policy=policy)


def test_identity_scopes_are_the_oidc_claim_scopes_and_not_offline_access() -> None:
    assert IDENTITY_SCOPES == {"profile", "email", "address", "phone"}
    assert DEFAULT.extra_scopes_allowed == IDENTITY_SCOPES


# Requested: "openid payments".
@pytest.mark.parametrize(
    "granted,policy,expected",
    [
        ("openid payments", DEFAULT, "openid payments"),
        ("payments", DEFAULT, "openid payments"),
        (None, DEFAULT, "openid payments"),
        ("openid payments profile email", DEFAULT, "openid payments profile email"),
        ("payments phone address", DEFAULT, "openid payments phone address"),
        (
            "openid payments offline_access",
            ValidationPolicy(extra_scopes_allowed=frozenset({"offline_access"})),
            "openid payments offline_access",
        ),
    ],
    ids=[
        "equal",
        "openid_not_listed",
        "omitted_means_equal",
        "identity_scopes_added",
        "other_identity_scopes",
        "offline_access_when_configured",
    ],
)
def test_scope_granted(granted: str | None, policy: ValidationPolicy, expected: str) -> None:
    assert _validate(policy, scope=granted).scope == expected


@pytest.mark.parametrize(
    "granted,policy,detail",
    [
        ("openid", DEFAULT, "not granted: payments"),
        ("openid profile email", DEFAULT, "not granted: payments"),
        ("openid payments admin", DEFAULT, "not requested: admin"),
        ("openid payments offline_access", DEFAULT, "not requested: offline_access"),
        ("openid payments profile", ValidationPolicy(extra_scopes_allowed=frozenset()), "not requested: profile"),
        ("openid profile admin", DEFAULT, "not granted: payments; not requested: admin"),
    ],
    ids=[
        "narrowed",
        "narrowed_but_identity_added",
        "non_identity_added",
        "offline_access_added",
        "identity_scope_with_empty_allow_list",
        "narrowed_and_added",
    ],
)
def test_scope_rejected(granted: str, policy: ValidationPolicy, detail: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        _validate(policy, scope=granted)
    assert caught.value.code == "scope_mismatch"
    assert caught.value.reason.endswith(f"({detail})")


@pytest.mark.parametrize(
    "granted,policy",
    [
        ([PAYMENT], DEFAULT),
        ([dict(reversed(list(PAYMENT.items())))], DEFAULT),
        ([{**PAYMENT, "consentId": "c-1"}], ENRICHING),
        ([{**PAYMENT, "consentId": "c-1", "status": "authorised"}], ENRICHING),
    ],
    ids=["exact", "member_order", "enriched_by_one_allowed_member", "enriched_by_two_allowed_members"],
)
def test_authorization_details_granted(granted: list[dict[str, Any]], policy: ValidationPolicy) -> None:
    assert _validate(policy, authorization_details=granted).authorization_details == granted


@pytest.mark.parametrize(
    "granted,policy",
    [
        ([{**PAYMENT, "consentId": "c-1"}], DEFAULT),
        ([{**PAYMENT, "creditorName": "Mallory Ltd"}], ENRICHING),
        ([{key: value for key, value in PAYMENT.items() if key != "creditorName"}], ENRICHING),
        ([{**PAYMENT, "consentId": "c-1", "creditorName": "Mallory Ltd"}], ENRICHING),
        ([{**PAYMENT, "instructedAmount": {**PAYMENT["instructedAmount"], "extra": 1}}], ENRICHING),
        ([{**PAYMENT, "debtorAccount": {"iban": "DE00"}}], ENRICHING),
        ([{**PAYMENT, "type": "account_reset"}], ENRICHING),
        ([PAYMENT, {"type": "payment_initiation"}], ENRICHING),
        ([], ENRICHING),
        (
            [{**PAYMENT, "consentId": "c-1"}],
            ValidationPolicy(authorization_details_enrichment={"account_reset": frozenset({"consentId"})}),
        ),
    ],
    ids=[
        "enriched_without_configuration",
        "member_changed",
        "member_missing",
        "allowed_added_but_member_changed",
        "nested_member_added",
        "member_added_not_configured",
        "type_changed",
        "detail_added",
        "details_emptied",
        "enrichment_configured_for_another_type",
    ],
)
def test_authorization_details_rejected(granted: list[Any], policy: ValidationPolicy) -> None:
    with pytest.raises(TokenRejected) as caught:
        _validate(policy, authorization_details=granted)
    assert caught.value.code == "authorization_details_mismatch"


# Requested: acr_values "urn:example:acr:mfa".
KEYCLOAK_LOA = ValidationPolicy(acr_equivalents={"urn:example:acr:mfa": frozenset({"gold", "2"})})


@pytest.mark.parametrize(
    "acr,policy",
    [
        ("urn:example:acr:mfa", DEFAULT),
        ("gold", KEYCLOAK_LOA),
        ("2", KEYCLOAK_LOA),
        ("urn:example:acr:mfa", KEYCLOAK_LOA),
    ],
    ids=["requested", "equivalent_name", "equivalent_level", "requested_with_map"],
)
def test_acr_accepted(acr: str, policy: ValidationPolicy) -> None:
    assert _validate(policy, id_claims={"acr": acr}).acr == acr


@pytest.mark.parametrize(
    "acr,policy",
    [
        ("gold", DEFAULT),
        ("1", KEYCLOAK_LOA),
        ("urn:example:acr:basic", KEYCLOAK_LOA),
        ("silver", ValidationPolicy(acr_equivalents={"urn:example:acr:basic": frozenset({"silver"})})),
    ],
    ids=["equivalent_without_map", "weaker_level", "weaker_requestable_value", "equivalent_of_a_value_not_requested"],
)
def test_acr_rejected(acr: str, policy: ValidationPolicy) -> None:
    with pytest.raises(TokenRejected) as caught:
        _validate(policy, id_claims={"acr": acr})
    assert caught.value.code == "acr_not_requested"


# id_token_hint (CIBA §7.1): an ID token this OP issued to this client; its sub pins the approver.
HINT_KEYS = Keys()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"exp": int(NOW) - 7 * 86400, "iat": int(NOW) - 8 * 86400}, {"aud": [CLIENT_ID, "https://api.example"]}],
    ids=["fresh", "expired_long_ago", "trusted_second_audience_with_azp"],
)
def test_id_token_hint_of_this_op_for_this_client(overrides: dict[str, Any]) -> None:
    policy = ValidationPolicy(trusted_audiences=frozenset({"https://api.example"}))
    hint = KEYS.sign(claims(**{"azp": CLIENT_ID, **overrides}))
    assert check_id_token_hint(hint, KEYS.jwks(), issuer=ISSUER, client_id=CLIENT_ID, policy=policy) == "alice"


@pytest.mark.parametrize(
    "hint,code,claim",
    [
        (lambda: KEYS.sign(claims(iss="https://evil.example")), "iss_mismatch", "iss"),
        (lambda: KEYS.sign(claims(iss=None)), "iss_missing", "iss"),
        (lambda: KEYS.sign(claims(aud="another-client")), "aud_mismatch", "aud"),
        (lambda: KEYS.sign(claims(aud=[CLIENT_ID, "https://untrusted.example"])), "aud_untrusted", "aud"),
        (lambda: KEYS.sign(claims(sub=None)), "sub_missing", "sub"),
        (lambda: KEYS.sign(claims(sub="")), "sub_missing", "sub"),
        (lambda: KEYS.sign(claims(sub=42)), "sub_missing", "sub"),
        (lambda: KEYS.sign(claims(), alg="RS384"), "alg_not_allowed", "alg"),
        (lambda: HINT_KEYS.sign(claims()), "signature_invalid", "signature"),
        (lambda: "not-a-jwt", "malformed", "id_token"),
    ],
    ids=[
        "another_issuer",
        "no_issuer",
        "another_client",
        "untrusted_audience",
        "no_sub",
        "empty_sub",
        "sub_not_a_string",
        "alg_not_allowed",
        "signed_by_another_key",
        "malformed",
    ],
)
def test_id_token_hint_refused(hint: Any, code: str, claim: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        check_id_token_hint(hint(), KEYS.jwks(), issuer=ISSUER, client_id=CLIENT_ID, policy=DEFAULT)
    assert (caught.value.code, caught.value.claim) == (code, claim)

"""The request builders and response processors of the protocol, on literal HTTP responses."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from temporal_ciba.ciba import (
    AuthenticationRequest,
    InvalidAuthenticationRequest,
    InvalidClient,
    OAuthError,
    ProtocolError,
    TransportError,
    UnknownUserId,
    new_client_notification_token,
)
from temporal_ciba.ciba._backchannel import (
    authentication_request_form,
    check_client_notification_token,
    process_authentication_response,
)
from temporal_ciba.ciba._discovery import DeliveryMode, ProviderMetadata, parse_provider_metadata
from temporal_ciba.ciba._errors import OAUTH_ERRORS

ISSUER = "https://op.example.test"
NOW = 1_800_000_000.0


def metadata(**overrides: Any) -> ProviderMetadata:
    document = {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "backchannel_authentication_endpoint": f"{ISSUER}/backchannel",
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_user_code_parameter_supported": False,
        "grant_types_supported": ["urn:openid:params:grant-type:ciba"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        **overrides,
    }
    return parse_provider_metadata({k: v for k, v in document.items() if v is not None}, ISSUER)


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers={"content-type": "application/json", **(headers or {})})


# Authentication request (CIBA §7.1) -------------------------------------------------------


def test_request_needs_openid_scope() -> None:
    with pytest.raises(ValidationError, match="openid"):
        AuthenticationRequest(scope="payments", login_hint="alice")


@pytest.mark.parametrize(
    "hints",
    [
        {},
        {"login_hint": "alice", "id_token_hint": "eyJ.x.y"},
        {"login_hint": "a", "login_hint_token": "t", "id_token_hint": "i"},
    ],
    ids=["none", "two", "three"],
)
def test_request_needs_exactly_one_hint(hints: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        AuthenticationRequest(**hints)  # type: ignore[arg-type]


@pytest.mark.parametrize("message", ["", "two\nlines", "x" * 129], ids=["empty", "newline", "too_long"])
def test_binding_message_is_short_plain_text(message: str) -> None:
    with pytest.raises(ValidationError, match="binding_message"):
        AuthenticationRequest(login_hint="alice", binding_message=message)


@pytest.mark.parametrize(
    "token", ["has space" + "x" * 30, "x" * 1025, "short"], ids=["syntax", "too_long", "too_short"]
)
def test_notification_token_rules(token: str) -> None:
    with pytest.raises(ValidationError, match="client_notification_token"):
        AuthenticationRequest(login_hint="alice", client_notification_token=token)  # type: ignore[arg-type]


def test_generated_notification_token_has_256_bits_and_bearer_syntax() -> None:
    tokens = {new_client_notification_token() for _ in range(100)}
    assert len(tokens) == 100
    request = AuthenticationRequest(login_hint="alice", client_notification_token=tokens.pop())  # type: ignore[arg-type]
    assert request.client_notification_token is not None
    assert len(request.client_notification_token.get_secret_value()) == 43


@pytest.mark.parametrize(("length", "accepted"), [(21, False), (22, True), (1024, True), (1025, False)])
def test_notification_token_length_limits_are_inclusive(length: int, accepted: bool) -> None:
    """CIBA §7.1: at most 1024 characters; at least 22 (128 bits in base64url)."""
    token = "x" * length
    if accepted:
        assert check_client_notification_token(token) == token
    else:
        with pytest.raises(ValueError, match="client_notification_token"):
            check_client_notification_token(token)


@pytest.mark.parametrize(
    "resource",
    ["/payments", "rs.example.test/payments", "https://rs.example.test/payments#x", "https://rs.example.test/#"],
    ids=["relative", "no_scheme", "fragment", "empty_fragment"],
)
def test_resource_must_be_an_absolute_uri_without_a_fragment(resource: str) -> None:
    with pytest.raises(ValidationError, match="resource must be an absolute URI without a fragment"):
        AuthenticationRequest(login_hint="alice", resource=("https://rs.example.test/accounts", resource))


def test_requested_expiry_positive_and_details_typed() -> None:
    with pytest.raises(ValidationError):
        AuthenticationRequest(login_hint="alice", requested_expiry=0)
    with pytest.raises(ValidationError, match="type"):
        AuthenticationRequest(login_hint="alice", authorization_details=[{"amount": "1"}])


def test_request_form_carries_every_parameter() -> None:
    details = [{"type": "payment_initiation", "amount": "1.00"}]
    request = AuthenticationRequest(
        scope="openid payments openid",
        login_hint="alice",
        binding_message="Pay 1.00 EUR, code 4F2A",
        requested_expiry=120,
        acr_values="urn:example:acr:mfa",
        authorization_details=details,
        client_notification_token=new_client_notification_token(),  # type: ignore[arg-type]
    )
    form = authentication_request_form(request, metadata(), "ping")
    assert form["scope"] == "openid payments"
    assert form["login_hint"] == "alice"
    assert form["binding_message"] == "Pay 1.00 EUR, code 4F2A"
    assert form["requested_expiry"] == "120"
    assert form["acr_values"] == "urn:example:acr:mfa"
    assert json.loads(form["authorization_details"]) == details
    assert len(form["client_notification_token"]) == 43
    assert "notification" not in repr(request).replace("client_notification_token=SecretStr", "")


def test_request_form_checks_mode_and_op_support() -> None:
    plain = AuthenticationRequest(login_hint="alice")
    with pytest.raises(InvalidAuthenticationRequest, match="ping mode requires"):
        authentication_request_form(plain, metadata(), "ping")
    with_token = AuthenticationRequest(login_hint="alice", client_notification_token=new_client_notification_token())  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthenticationRequest, match="poll mode must not"):
        authentication_request_form(with_token, metadata(), "poll")
    with_code = AuthenticationRequest(login_hint="alice", user_code="1234")  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthenticationRequest, match="backchannel_user_code_parameter_supported"):
        authentication_request_form(with_code, metadata(), "poll")
    assert (
        authentication_request_form(with_code, metadata(backchannel_user_code_parameter_supported=True), "poll")[
            "user_code"
        ]
        == "1234"
    )
    detailed = AuthenticationRequest(login_hint="alice", authorization_details=[{"type": "payment_initiation"}])
    with pytest.raises(InvalidAuthenticationRequest, match="payment_initiation"):
        authentication_request_form(detailed, metadata(authorization_details_types_supported=["other"]), "poll")


def test_request_form_carries_the_claims_as_json_and_each_resource_once() -> None:
    """OIDC Core §5.5: claims is a JSON object; RFC 8707 §2: one resource parameter per server."""
    claims = {"id_token": {"acr": {"essential": True, "values": ["urn:example:acr:mfa"]}, "auth_time": None}}
    payments, accounts = "https://rs.example.test/payments", "https://rs.example.test/accounts"
    request = AuthenticationRequest(login_hint="alice", claims=claims, resource=(payments, accounts, payments))
    form = authentication_request_form(request, metadata(), "poll")
    assert json.loads(form["claims"]) == claims  # type: ignore[arg-type]
    assert form["resource"] == [payments, accounts]
    plain = authentication_request_form(AuthenticationRequest(login_hint="alice"), metadata(), "poll")
    assert "claims" not in plain and "resource" not in plain


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_request_form_ping_and_push_need_a_notification_token(mode: DeliveryMode) -> None:
    with pytest.raises(InvalidAuthenticationRequest) as caught:
        authentication_request_form(AuthenticationRequest(login_hint="alice"), metadata(), mode)
    assert str(caught.value) == f"{mode} mode requires a client_notification_token (CIBA §7.1)"


def test_request_form_refusals_say_why_in_full() -> None:
    with_token = AuthenticationRequest(login_hint="alice", client_notification_token=new_client_notification_token())  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthenticationRequest) as caught:
        authentication_request_form(with_token, metadata(), "poll")
    assert str(caught.value) == "poll mode must not send a client_notification_token (CIBA §7.1)"
    with_code = AuthenticationRequest(login_hint="alice", user_code="1234")  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthenticationRequest) as caught:
        authentication_request_form(with_code, metadata(), "poll")
    assert str(caught.value) == (
        "user_code given but the OP does not advertise backchannel_user_code_parameter_supported (CIBA §4)"
    )


# Acknowledgement (CIBA §7.3) and its errors (§13) -----------------------------------------


def test_ack_defaults_interval_and_ignores_unknown_members() -> None:
    ack = process_authentication_response(response(200, {"auth_req_id": "r1", "expires_in": 120, "x": 1}), now=NOW)
    assert (ack.auth_req_id, ack.expires_in, ack.interval) == ("r1", 120, 5)
    ack = process_authentication_response(
        response(200, {"auth_req_id": "r1", "expires_in": 120, "interval": 2}), now=NOW
    )
    assert ack.interval == 2


@pytest.mark.parametrize(
    "members,expected",
    [
        ({"expires_in": 120}, (120, 5)),
        ({"expires_in": 1}, (1, 5)),
        ({"expires_in": 120.0, "interval": 2.0}, (120, 2)),
        ({"expires_in": "120"}, (120, 5)),
        ({"expires_in": 120, "interval": "7"}, (120, 7)),
        ({"expires_in": "0120", "interval": "0"}, (120, 5)),
        ({"expires_in": 120, "interval": 0}, (120, 5)),
        ({"expires_in": 120, "interval": None}, (120, 5)),
    ],
    ids=[
        "no_interval",
        "one_second_expires_in",
        "whole_floats",
        "string_expires_in",
        "string_interval",
        "string_zero_interval",
        "zero_interval",
        "null_interval",
    ],
)
def test_ack_lenient_where_harmless(members: dict[str, Any], expected: tuple[int, int]) -> None:
    """CIBA §7.3: interval 0 or absent means 5 s; digits in a string are read (with a warning)."""
    ack = process_authentication_response(response(200, {"auth_req_id": "r1", **members}), now=NOW)
    assert (ack.expires_in, ack.interval) == expected


@pytest.mark.parametrize("member", ["expires_in", "interval"])
def test_ack_string_number_is_logged(member: str, caplog: pytest.LogCaptureFixture) -> None:
    body = {"auth_req_id": "r1", "expires_in": 120, member: "7"}
    with caplog.at_level("WARNING", logger="temporal_ciba.ciba"):
        process_authentication_response(response(200, body), now=NOW)
    assert f"{member} is a string (7), read as a number" in caplog.text


@pytest.mark.parametrize(
    ("resp", "error", "message"),
    [
        (httpx.Response(503), TransportError, "backchannel authentication: HTTP 503"),
        (
            httpx.Response(200, content=b"ok"),
            ProtocolError,
            "backchannel authentication: response is not JSON (HTTP 200)",
        ),
    ],
    ids=["server_error", "not_json"],
)
def test_ack_failures_name_the_backchannel_authentication_endpoint(
    resp: httpx.Response, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        process_authentication_response(resp, now=NOW)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "body,message",
    [
        ({"expires_in": 120}, "no auth_req_id"),
        ({"auth_req_id": "r1"}, "no expires_in"),
        ({"auth_req_id": "r1", "expires_in": None}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": -5}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": 0}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": "0"}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": "-5"}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": "12a"}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": " 120"}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": "1e3"}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": 120.5}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": True}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": [120]}, "expires_in is not a positive integer"),
        ({"auth_req_id": "r1", "expires_in": 120, "interval": -1}, "interval"),
        ({"auth_req_id": "r1", "expires_in": 120, "interval": "-1"}, "interval"),
        ({"auth_req_id": "r1", "expires_in": 120, "interval": 2.5}, "interval"),
        ({"auth_req_id": "r1", "expires_in": 120, "interval": True}, "interval"),
        ({"auth_req_id": "r1", "expires_in": 120, "interval": "five"}, "interval"),
        ({"auth_req_id": "", "expires_in": 120}, "no auth_req_id"),
    ],
    ids=[
        "ack_without_auth_req_id",
        "ack_without_expires_in",
        "null_expires_in",
        "negative_expires_in",
        "zero_expires_in",
        "string_zero_expires_in",
        "string_negative_expires_in",
        "string_non_numeric_expires_in",
        "string_padded_expires_in",
        "string_exponent_expires_in",
        "fractional_expires_in",
        "boolean_expires_in",
        "list_expires_in",
        "negative_interval",
        "string_negative_interval",
        "fractional_interval",
        "boolean_interval",
        "non_numeric_interval",
        "empty_auth_req_id",
    ],
)
def test_ack_rejected(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        process_authentication_response(response(200, body), now=NOW)


@pytest.mark.parametrize("code", sorted(OAUTH_ERRORS))
def test_every_error_code_has_its_type(code: str) -> None:
    status = {"invalid_client": 401, "access_denied": 403}.get(code, 400)
    with pytest.raises(OAUTH_ERRORS[code]) as caught:
        process_authentication_response(response(status, {"error": code, "error_description": "why\nnot"}), now=NOW)
    assert caught.value.error == code and caught.value.final and caught.value.status == status
    assert "\n" not in str(caught.value)


def test_unknown_error_code_is_kept() -> None:
    with pytest.raises(OAuthError) as caught:
        process_authentication_response(response(400, {"error": "vendor_specific"}), now=NOW)
    assert type(caught.value) is OAuthError and caught.value.error == "vendor_specific"


def test_unknown_user_and_bad_client_are_typed() -> None:
    with pytest.raises(UnknownUserId):
        process_authentication_response(response(400, {"error": "unknown_user_id"}), now=NOW)
    with pytest.raises(InvalidClient):
        process_authentication_response(response(401, {"error": "invalid_client"}), now=NOW)


def test_server_errors_and_redirects() -> None:
    with pytest.raises(TransportError):
        process_authentication_response(httpx.Response(502, content=b"<html>bad gateway</html>"), now=NOW)
    with pytest.raises(ProtocolError, match="redirect"):
        process_authentication_response(httpx.Response(302, headers={"location": "https://evil.example"}), now=NOW)
    with pytest.raises(ProtocolError, match="not JSON"):
        process_authentication_response(httpx.Response(200, content=b"ok"), now=NOW)

"""The token endpoint (CIBA Core 1.0 §10.1 and §11, RFC 6749 §5).

The request form, the answers that are data (pending, slow_down, Retry-After), the final errors, the
poll schedule, and the token response, where each malformed answer is a ProtocolError that names the
endpoint and the member at fault."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import (
    AccessDenied,
    ExpiredToken,
    Granted,
    InvalidClient,
    OAuthError,
    Pending,
    PollSchedule,
    ProtocolError,
    RetryLater,
    SlowDown,
    TransportError,
)
from temporal_ciba.ciba._backchannel import process_authentication_response
from temporal_ciba.ciba._token import parse_token_response, process_token_response, token_request_form

TOKENS = {"access_token": "at", "token_type": "Bearer", "id_token": "a.b.c", "expires_in": 60}
MISSING = object()


@pytest.mark.parametrize("member", ["access_token", "token_type", "id_token"])
@pytest.mark.parametrize("value", [MISSING, "", 123, None], ids=["missing", "empty", "number", "null"])
def test_each_required_member_must_be_a_non_empty_string(member: str, value: object) -> None:
    body = {key: item for key, item in TOKENS.items() if key != member}
    if value is not MISSING:
        body[member] = value
    with pytest.raises(ProtocolError) as caught:
        parse_token_response(body)
    assert str(caught.value) == f"token response has no {member} (RFC 6749 §5.1, CIBA §10.1.1)"


@pytest.mark.parametrize(
    "overrides,where",
    [
        ({"expires_in": "soon"}, "expires_in"),
        ({"refresh_token": 7}, "refresh_token"),
        ({"authorization_details": [{"type": "payment"}, "not an object"]}, "authorization_details.1"),
    ],
)
def test_a_malformed_optional_member_is_named(overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_token_response({**TOKENS, **overrides})
    assert str(caught.value) == f"token response: malformed {where}"


def answer(status: int, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


@pytest.mark.parametrize(
    "resp,error,message",
    [
        (answer(400, b"pending?"), ProtocolError, "token endpoint: response is not JSON (HTTP 400)"),
        (answer(401, b"<html>"), ProtocolError, "token endpoint: response is not JSON (HTTP 401)"),
        (answer(400, b"{}"), ProtocolError, "token endpoint: HTTP 400 without an error code"),
        (
            answer(302, b"", {"location": "https://x.test"}),
            ProtocolError,
            "token endpoint: unexpected redirect (HTTP 302)",
        ),
        (answer(500, b"{}"), TransportError, "token endpoint: HTTP 500"),
        (answer(200, b"<html>"), ProtocolError, "token endpoint: response is not JSON (HTTP 200)"),
        (answer(200, b"[]"), ProtocolError, "token endpoint: response is not a JSON object (HTTP 200)"),
        (answer(201, json.dumps(TOKENS).encode()), ProtocolError, "token endpoint: expected HTTP 200, got 201"),
    ],
    ids=["400_not_json", "401_not_json", "400_no_code", "redirect", "500", "200_not_json", "200_array", "201"],
)
def test_a_bad_answer_names_the_token_endpoint(resp: httpx.Response, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        process_token_response(resp, now=0)
    assert not isinstance(caught.value, OAuthError)
    assert str(caught.value) == message


def test_a_granted_answer_keeps_every_member() -> None:
    body = {**TOKENS, "refresh_token": "rt", "scope": "openid", "authorization_details": [{"type": "payment"}]}
    result = process_token_response(answer(200, json.dumps(body).encode()), now=0)
    assert isinstance(result, Granted)
    tokens = result.tokens
    assert (tokens.access_token.get_secret_value(), tokens.id_token.get_secret_value()) == ("at", "a.b.c")
    assert tokens.refresh_token is not None and tokens.refresh_token.get_secret_value() == "rt"
    assert (tokens.expires_in, tokens.scope, tokens.authorization_details) == (60, "openid", [{"type": "payment"}])


NOW = 1_800_000_000.0


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers={"content-type": "application/json", **(headers or {})})


# Token endpoint (CIBA §10.1, §11) ---------------------------------------------------------


def test_token_request_form() -> None:
    assert token_request_form("r1") == {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": "r1"}


@pytest.mark.parametrize(
    "resp,expected",
    [
        (response(400, {"error": "authorization_pending"}), Pending()),
        (response(400, {"error": "slow_down"}), SlowDown()),
        (response(503, {"error": "temporarily_unavailable"}, {"retry-after": "7"}), RetryLater(seconds=7)),
        (response(429, None, {"retry-after": "Thu, 15 Jan 2027 08:00:10 GMT"}), RetryLater(seconds=10)),
    ],
    ids=["pending", "slow_down", "503_retry_after_seconds", "429_retry_after_date"],
)
def test_token_answers_that_are_data(resp: httpx.Response, expected: object) -> None:
    assert process_token_response(resp, now=1800000000.0) == expected


@pytest.mark.parametrize(
    "code,error_type",
    [
        ("expired_token", ExpiredToken),
        ("access_denied", AccessDenied),
        ("invalid_grant", OAuthError),
        ("invalid_request", OAuthError),
        ("invalid_client", InvalidClient),
        ("unauthorized_client", OAuthError),
    ],
    ids=["expired_token", "access_denied", "invalid_grant", "invalid_request", "invalid_client", "unauthorized_client"],
)
def test_token_errors_are_final(code: str, error_type: type[OAuthError]) -> None:
    with pytest.raises(error_type) as caught:
        process_token_response(response(400, {"error": code}), now=0)
    assert caught.value.error == code and caught.value.final


@pytest.mark.parametrize(
    "resp",
    [
        response(503, {}),
        response(429, {}),
        response(500, {"error": "server_error"}),
        response(503, {"error": "temporarily_unavailable"}),
    ],
    ids=["503_without_retry_after", "429_without_retry_after", "500_server_error", "503_temporarily_unavailable"],
)
def test_op_trouble_is_transient_never_final(resp: httpx.Response) -> None:
    with pytest.raises(TransportError):
        process_token_response(resp, now=0)
    with pytest.raises(TransportError):
        process_authentication_response(resp, now=NOW)


def test_granted_tokens_parsed_and_checked() -> None:
    result = process_token_response(response(200, TOKENS), now=0)
    assert isinstance(result, Granted) and result.tokens.access_token.get_secret_value() == "at"
    for member in ("access_token", "id_token", "token_type"):
        with pytest.raises(ProtocolError, match=member):
            process_token_response(response(200, {**TOKENS, member: None}), now=0)
    with pytest.raises(ProtocolError, match="token_type"):
        process_token_response(response(200, {**TOKENS, "token_type": "DPoP"}), now=0)


def test_poll_schedule_slow_down_is_cumulative_and_retry_after_honoured() -> None:
    schedule = PollSchedule(interval=5)
    schedule, delay = schedule.after(Pending())
    assert (schedule.interval, delay) == (5, 5)
    schedule, delay = schedule.after(SlowDown())
    assert (schedule.interval, delay) == (10, 10)
    schedule, delay = schedule.after(Pending())
    assert delay == 10  # kept for all later requests
    schedule, delay = schedule.after(SlowDown())
    assert delay == 15
    assert schedule.after(RetryLater(seconds=40))[1] == 40
    assert schedule.after(RetryLater(seconds=1))[1] == 15

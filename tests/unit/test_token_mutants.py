"""The token response (RFC 6749 §5.1, CIBA Core 1.0 §10.1.1 and §11): each malformed answer is a
ProtocolError that names the endpoint and the member at fault. Written against the mutants that
survived the first mutation run (issue 16)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba._errors import OAuthError, ProtocolError, TransportError
from temporal_ciba.ciba._token import Granted, parse_token_response, process_token_response

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

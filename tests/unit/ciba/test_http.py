"""The HTTP rules every call to the OP shares (`temporal_ciba.ciba._http`), each named in its test.

Loopback hosts, endpoint URLs, OAuth error bodies (RFC 6749 §5.2), Retry-After (RFC 9110 §10.2.3),
and transport failures that keep their cause (certificate, name resolution, refused connection) in
the message, and never a secret."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, TransportError
from temporal_ciba.ciba._discovery import fetch_provider_metadata
from temporal_ciba.ciba._errors import InvalidGrant, OAuthError, ProtocolError
from temporal_ciba.ciba._http import (
    is_loopback_host,
    raise_for_error,
    require_endpoint_url,
    require_secure_url,
    retry_after_seconds,
)
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW


def response(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content)


@pytest.mark.parametrize(
    "host,loopback",
    [
        (None, False),
        ("", False),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.1", True),
        ("127.0.0.2", True),  # all of 127.0.0.0/8, by address
        ("op.example.test", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_rule_knows_names_and_every_loopback_address(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_plain_http_is_allowed_to_any_loopback_address_and_never_without_a_host() -> None:
    assert require_secure_url("http://127.0.0.5:3000/op", "issuer") == "http://127.0.0.5:3000/op"
    for url in ("http:///token", "http://:80/token"):
        with pytest.raises(ValueError, match="must be an https URL"):
            require_secure_url(url, "issuer")


def test_an_empty_fragment_is_a_fragment_too() -> None:
    """RFC 6749 §3.2: no fragment; urlsplit reports a bare trailing '#' as an empty one."""
    with pytest.raises(ValueError, match="must not have a fragment"):
        require_endpoint_url("https://op.example.test/token#", "token_endpoint", issuer="https://op.example.test")


def test_an_https_loopback_issuer_gets_no_plain_http_endpoint() -> None:
    """Only an http loopback issuer may name http endpoints: a loopback host alone is not enough."""
    with pytest.raises(ValueError, match="must be https because the issuer"):
        require_endpoint_url("http://localhost:3000/token", "token_endpoint", issuer="https://localhost:3000")
    assert (
        require_endpoint_url("http://localhost:3000/token", "token_endpoint", issuer="http://localhost:3000")
        == "http://localhost:3000/token"
    )


def test_error_body_gives_the_typed_error_its_description_and_status() -> None:
    with pytest.raises(InvalidGrant) as caught:
        raise_for_error(response(400, {"error": "invalid_grant", "error_description": "code used"}), "token endpoint")
    assert (caught.value.error, caught.value.description, caught.value.status) == ("invalid_grant", "code used", 400)
    assert str(caught.value) == "invalid_grant: code used"


@pytest.mark.parametrize("description", [42, ["a"], {"text": "x"}, None])
def test_an_error_description_that_is_not_a_string_is_dropped(description: object) -> None:
    with pytest.raises(InvalidGrant) as caught:
        raise_for_error(response(400, {"error": "invalid_grant", "error_description": description}), "token endpoint")
    assert caught.value.description is None and str(caught.value) == "invalid_grant"


@pytest.mark.parametrize("error", ["", 42, ["invalid_grant"], None], ids=["empty", "number", "list", "null"])
def test_an_error_body_without_a_string_code_is_a_protocol_error(error: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        raise_for_error(response(400, {"error": error}), "token endpoint")
    assert not isinstance(caught.value, OAuthError)
    assert str(caught.value) == "token endpoint: HTTP 400 without an error code"


def test_an_error_body_that_is_not_json_names_the_endpoint() -> None:
    with pytest.raises(ProtocolError) as caught:
        raise_for_error(response(401, b"<html>no</html>"), "backchannel authentication endpoint")
    assert str(caught.value) == "backchannel authentication endpoint: response is not JSON (HTTP 401)"


@pytest.mark.parametrize(
    "header,seconds",
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Fri, 15 Jan 2027 08:00:10 GMT", 10.0),
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),  # a date already past: no wait at all
        ("Fri, 15 Jan 2027 08:00:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_is_seconds_or_a_date_and_never_negative(header: str, seconds: float | None) -> None:
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": header}), NOW) == seconds


def test_no_retry_after_is_none() -> None:
    assert retry_after_seconds(httpx.Response(503), NOW) is None


CERT_FAILURE = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"


def failing(error: Exception, *, fail_path: str | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if fail_path is None or request.url.path == fail_path:
            raise error
        return httpx.Response(200, json=METADATA)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "error,plain_words",
    [
        (httpx.ConnectError(CERT_FAILURE), "TLS certificate verification failed"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "host name does not resolve"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused"),
    ],
    ids=["certificate", "name_resolution", "refused"],
)
async def test_discovery_keeps_the_cause(error: Exception, plain_words: str) -> None:
    with pytest.raises(TransportError) as raised:
        await fetch_provider_metadata(failing(error), ISSUER, timeout=httpx.Timeout(1.0))
    message = str(raised.value)
    assert str(error) in message and plain_words in message and "ConnectError" in message
    assert len(message.splitlines()) == 1


async def test_cause_of_a_chained_error_is_kept() -> None:
    try:
        try:
            raise OSError("certificate verify failed: unable to get local issuer certificate")
        except OSError as cause:
            raise httpx.ConnectError("") from cause
    except httpx.ConnectError as error:
        chained = error
    with pytest.raises(TransportError, match="unable to get local issuer certificate"):
        await fetch_provider_metadata(failing(chained), ISSUER, timeout=httpx.Timeout(1.0))


async def test_client_requests_keep_the_cause_and_no_secret() -> None:
    ciba = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "very-secret-value"),
        http=failing(httpx.ConnectError(CERT_FAILURE), fail_path="/token"),
        clock=lambda: NOW,
    )
    with pytest.raises(TransportError) as raised:
        await ciba.request_token("req-1")
    assert CERT_FAILURE in str(raised.value) and not raised.value.request_sent
    assert "very-secret-value" not in str(raised.value)

    broken = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "s"),
        http=failing(httpx.ReadError("connection reset by peer"), fail_path="/token"),
        clock=lambda: NOW,
    )
    with pytest.raises(TransportError, match="connection reset by peer") as dropped:
        await broken.request_token("req-1")
    assert dropped.value.request_sent

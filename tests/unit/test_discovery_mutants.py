"""Discovery (OIDC Discovery 1.0 §4, CIBA Core 1.0 §4): the request we send, how each answer is
classified, and what the errors tell a person. Written against the mutants that survived the
first mutation run (issue 16)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from temporal_ciba.ciba._discovery import (
    check_ciba_support,
    discovery_url,
    fetch_provider_metadata,
    parse_provider_metadata,
)
from temporal_ciba.ciba._errors import DiscoveryError, TransportError

ISSUER = "https://op.example.test"
DOCUMENT = {
    "issuer": ISSUER,
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "backchannel_authentication_endpoint": f"{ISSUER}/backchannel",
    "backchannel_token_delivery_modes_supported": ["poll", "ping"],
    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
}


@pytest.mark.parametrize(
    "issuer,url",
    [
        ("https://op.example.test", "https://op.example.test/.well-known/openid-configuration"),
        ("https://op.example.test/", "https://op.example.test/.well-known/openid-configuration"),
        ("https://op.example.test/realms/BOX", "https://op.example.test/realms/BOX/.well-known/openid-configuration"),
        ("https://op.example.test/realms/X/", "https://op.example.test/realms/X/.well-known/openid-configuration"),
    ],
)
def test_discovery_url_drops_only_a_trailing_slash(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url


class Recorder:
    """An OP answering one response to every request, keeping the requests."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer


async def fetch(answer: httpx.Response, *, timeout: httpx.Timeout | None = None) -> tuple[Any, Recorder]:
    op = Recorder(answer)
    # The client's own default timeout differs from the one passed, to see which is used.
    async with httpx.AsyncClient(transport=httpx.MockTransport(op), timeout=httpx.Timeout(17.0)) as http:
        metadata = await fetch_provider_metadata(http, ISSUER, timeout=timeout or httpx.Timeout(3.0, connect=2.0))
    return metadata, op


async def test_discovery_asks_for_json_with_the_timeout_it_is_given() -> None:
    metadata, op = await fetch(httpx.Response(200, json=DOCUMENT))
    assert metadata.issuer == ISSUER
    (request,) = op.requests
    assert str(request.url) == f"{ISSUER}/.well-known/openid-configuration"
    assert request.method == "GET"
    assert request.headers["accept"] == "application/json"
    assert request.extensions["timeout"] == {"connect": 2.0, "read": 3.0, "write": 3.0, "pool": 3.0}


@pytest.mark.parametrize(
    "status,error",
    [(500, TransportError), (503, TransportError), (599, TransportError), (499, DiscoveryError), (404, DiscoveryError)],
)
async def test_a_5xx_is_passing_trouble_and_any_other_failure_is_final(status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await fetch(httpx.Response(status, json=DOCUMENT))
    assert type(caught.value) is error
    assert str(caught.value) == f"discovery at {ISSUER}/.well-known/openid-configuration answered HTTP {status}"


@pytest.mark.parametrize(
    "content,message",
    [
        (b"<html>hello</html>", "discovery: response is not JSON (HTTP 200)"),
        (b'["issuer"]', "discovery: response is not a JSON object (HTTP 200)"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_a_discovery_error(content: bytes, message: str) -> None:
    with pytest.raises(DiscoveryError) as caught:
        await fetch(httpx.Response(200, content=content))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "document,where",
    [
        (
            {**DOCUMENT, "backchannel_token_delivery_modes_supported": ["poll", 5]},
            "backchannel_token_delivery_modes_supported.1",
        ),
        ({key: value for key, value in DOCUMENT.items() if key != "jwks_uri"}, "jwks_uri"),
        (["not", "an", "object"], "document"),
    ],
    ids=["item_of_a_list", "missing_member", "not_an_object"],
)
def test_a_malformed_document_names_where(document: Any, where: str) -> None:
    with pytest.raises(DiscoveryError) as caught:
        parse_provider_metadata(document, ISSUER)
    assert str(caught.value).startswith(f"discovery document: {where}: ")


@pytest.mark.parametrize(
    "modes,offered",
    [(["ping", "push"], "ping, push"), (["push"], "push"), ([], "none")],
)
def test_a_missing_delivery_mode_names_what_the_op_offers(modes: list[str], offered: str) -> None:
    metadata = parse_provider_metadata({**DOCUMENT, "backchannel_token_delivery_modes_supported": modes}, ISSUER)
    with pytest.raises(DiscoveryError) as caught:
        check_ciba_support(metadata, delivery_mode="poll", client_auth_method="client_secret_post")
    assert str(caught.value) == f"the OP does not offer CIBA delivery mode 'poll' (offers: {offered})"


def test_a_missing_client_authentication_names_what_the_op_offers() -> None:
    metadata = parse_provider_metadata(DOCUMENT, ISSUER)
    with pytest.raises(DiscoveryError) as caught:
        check_ciba_support(metadata, delivery_mode="poll", client_auth_method="client_secret_basic")
    assert str(caught.value) == (
        "the OP does not accept client authentication 'client_secret_basic' "
        "(offers: client_secret_post, private_key_jwt)"
    )

"""Discovery (OIDC Discovery 1.0 §4, CIBA Core 1.0 §4, RFC 8414).

The request we send, how each answer is classified, what the errors tell a person, what the metadata
must hold for CIBA, and that discovery never sends credentials or trusts keys over a channel weaker
than the issuer's.

OIDC Discovery §3 and §7.1, RFC 8414 §2, RFC 6749 §3.2: an https issuer's metadata names https
endpoints only, even on loopback, where another local process could read a client_secret_basic
header in clear. Plain http stays allowed for an http loopback issuer (tests and the demo)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import (
    CibaClient,
    ClientSecretBasic,
    TransportError,
)
from temporal_ciba.ciba._discovery import (
    ProviderMetadata,
    check_ciba_support,
    discovery_url,
    fetch_provider_metadata,
    parse_provider_metadata,
)
from temporal_ciba.ciba._errors import DiscoveryError

HTTPS_ISSUER = "https://op.example.test"
LOOPBACK_ISSUER = "http://127.0.0.1:3000"
ENDPOINTS = (
    "token_endpoint",
    "jwks_uri",
    "backchannel_authentication_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "authorization_endpoint",
)


def document(issuer: str, **overrides: Any) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "backchannel_token_delivery_modes_supported": ["poll"],
        **{name: f"{issuer}/{name}" for name in ENDPOINTS},
        **overrides,
    }


def test_every_url_member_of_the_model_is_checked() -> None:
    """A URL member added to ProviderMetadata later must be added to the validator too."""
    url_fields = {name for name in ProviderMetadata.model_fields if name.endswith(("_endpoint", "_uri"))}
    assert url_fields == set(ENDPOINTS)


@pytest.mark.parametrize("field", ENDPOINTS)
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9999/steal", "http://localhost/steal", "http://[::1]/steal", "http://op.example.test/x"],
)
def test_https_issuer_refuses_plain_http_endpoints_even_on_loopback(field: str, url: str) -> None:
    with pytest.raises(DiscoveryError) as caught:
        parse_provider_metadata(document(HTTPS_ISSUER, **{field: url}), HTTPS_ISSUER)
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(rf"discovery document: {field}: {field} must be (an )?https", message)


@pytest.mark.parametrize("url", ["ftp://op.example.test/token", "https:///token", "op.example.test/token"])
def test_other_schemes_and_hostless_urls_refused(url: str) -> None:
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        parse_provider_metadata(document(HTTPS_ISSUER, token_endpoint=url), HTTPS_ISSUER)
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        parse_provider_metadata(document(LOOPBACK_ISSUER, token_endpoint=url), LOOPBACK_ISSUER)


def test_endpoint_with_a_fragment_refused() -> None:
    """RFC 6749 §3.1, §3.2: an endpoint URI MUST NOT include a fragment."""
    with pytest.raises(DiscoveryError, match=r"token_endpoint: .*fragment"):
        parse_provider_metadata(document(HTTPS_ISSUER, token_endpoint=f"{HTTPS_ISSUER}/token#x"), HTTPS_ISSUER)


def test_https_endpoints_on_other_hosts_allowed() -> None:
    """The issuer, over TLS, is authoritative for where its endpoints live (other hosts, mTLS aliases)."""
    metadata = parse_provider_metadata(
        document(
            HTTPS_ISSUER,
            token_endpoint="https://mtls.op.example.test/token",
            jwks_uri="https://keys.example.net/jwks",
        ),
        HTTPS_ISSUER,
    )
    assert metadata.token_endpoint == "https://mtls.op.example.test/token"
    assert metadata.jwks_uri == "https://keys.example.net/jwks"


def test_loopback_http_issuer_may_use_http_loopback_endpoints_only() -> None:
    metadata = parse_provider_metadata(document(LOOPBACK_ISSUER), LOOPBACK_ISSUER)
    assert metadata.token_endpoint == f"{LOOPBACK_ISSUER}/token_endpoint"
    # https is never less safe: allowed anywhere.
    parse_provider_metadata(document(LOOPBACK_ISSUER, jwks_uri="https://keys.example.net/jwks"), LOOPBACK_ISSUER)
    # Plain http off loopback: refused whatever the issuer.
    with pytest.raises(DiscoveryError, match=r"token_endpoint: .*loopback"):
        parse_provider_metadata(document(LOOPBACK_ISSUER, token_endpoint="http://op.example.test/t"), LOOPBACK_ISSUER)


def test_issuer_in_the_document_must_be_https_or_loopback() -> None:
    with pytest.raises(DiscoveryError, match="discovery document: issuer: "):
        parse_provider_metadata(document("http://op.example.test"), "http://op.example.test")


async def test_hostile_discovery_document_never_gets_the_client_secret() -> None:
    """Through the client: the document names a loopback http token endpoint; no request reaches it."""
    requests: list[httpx.Request] = []

    def op(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=document(HTTPS_ISSUER, token_endpoint="http://127.0.0.1:9999/token"))
        return httpx.Response(400, json={"error": "authorization_pending"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(op)) as http:
        with pytest.raises(DiscoveryError, match="token_endpoint"):
            await fetch_provider_metadata(http, HTTPS_ISSUER, timeout=httpx.Timeout(5.0))
        ciba = CibaClient(issuer=HTTPS_ISSUER, client_auth=ClientSecretBasic("agent", "s3cret"), http=http)
        with pytest.raises(DiscoveryError, match="token_endpoint"):
            await ciba.request_token("req-1")
    assert [request.url.path for request in requests] == ["/.well-known/openid-configuration"] * 2
    assert not any("authorization" in request.headers for request in requests)


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


# The metadata as an OP that supports CIBA publishes it, with `overrides`.
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


# Discovery (OIDC Discovery §4, CIBA §4) ---------------------------------------------------


def test_discovery_issuer_must_match_exactly() -> None:
    with pytest.raises(DiscoveryError, match="not the configured issuer"):
        parse_provider_metadata({**metadata().model_dump(), "issuer": ISSUER + "/"}, ISSUER)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"backchannel_authentication_endpoint": None}, "does not support CIBA"),
        ({"backchannel_token_delivery_modes_supported": ["ping"]}, "delivery mode 'poll'"),
        ({"grant_types_supported": ["authorization_code"]}, "CIBA grant type"),
        ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "client_secret_basic"),
    ],
    ids=["no_backchannel_endpoint", "mode_not_offered", "grant_not_listed", "auth_method_not_offered"],
)
def test_discovery_refuses_op_without_ciba(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        check_ciba_support(metadata(**overrides), delivery_mode="poll", client_auth_method="client_secret_basic")


def test_discovery_requires_endpoints_and_tls() -> None:
    with pytest.raises(DiscoveryError, match="token_endpoint"):
        parse_provider_metadata({"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}, ISSUER)
    with pytest.raises(DiscoveryError, match="https"):
        metadata(token_endpoint="http://op.example.test/token")

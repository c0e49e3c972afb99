"""Discovery never sends credentials or trusts keys over a channel weaker than the issuer's.

OIDC Discovery §3 and §7.1, RFC 8414 §2, RFC 6749 §3.2: an https issuer's metadata names https
endpoints only, even on loopback, where another local process could read a client_secret_basic
header in clear. Plain http stays allowed for an http loopback issuer (tests and the demo).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic
from temporal_ciba.ciba._discovery import ProviderMetadata, fetch_provider_metadata, parse_provider_metadata
from temporal_ciba.ciba._errors import DiscoveryError

HTTPS_ISSUER = "https://op.example.test"
LOOPBACK_ISSUER = "http://127.0.0.1:3000"
ENDPOINTS = (
    "token_endpoint",
    "jwks_uri",
    "backchannel_authentication_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
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

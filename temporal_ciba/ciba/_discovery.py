"""OP metadata: OpenID Connect Discovery 1.0 §4 and the CIBA additions of CIBA Core 1.0 §4."""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ._errors import DiscoveryError, ProtocolError, TransportError, one_line
from ._http import json_object, raise_for_error, require_endpoint_url, require_secure_url

CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"

DeliveryMode = Literal["poll", "ping", "push"]
ClientAuthMethod = Literal[
    "client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"
]
# RFC 8705 §5: the endpoints a client may be sent to at another address when it uses mutual TLS;
# only those this client calls with its certificate are read.
MTLS_ALIASED_ENDPOINTS = (
    "token_endpoint",
    "backchannel_authentication_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
)


def transport_cause(exc: BaseException) -> str:
    """Why a request failed, in one line.

    The exception's type and the deepest message of its chain (the certificate that failed
    verification, the name that did not resolve, the refused connection). httpx and its
    transports put no headers in these messages, so no secret."""
    messages: list[str] = []
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = one_line(str(error), 300)
        if text and text not in messages:
            messages.append(text)
        error = error.__cause__
    detail = messages[0] if messages else ""
    lowered = " ".join(messages).lower()
    for marker, hint in _CAUSES:
        # A marker is found only in a message, so `detail` (the first message) is never empty here.
        if marker in lowered:
            detail = f"{hint} ({detail})"
            break
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# Markers of the usual causes, first match wins, each named in plain words.
_CAUSES = (
    ("certificate_verify_failed", "TLS certificate verification failed (is the OP's CA trusted?)"),
    ("certificate verify failed", "TLS certificate verification failed (is the OP's CA trusted?)"),
    ("name or service not known", "the OP's host name does not resolve"),
    ("nodename nor servname", "the OP's host name does not resolve"),
    ("temporary failure in name resolution", "the OP's host name does not resolve"),
    ("getaddrinfo failed", "the OP's host name does not resolve"),
    ("connection refused", "connection refused (is the OP running on that port?)"),
    ("all connection attempts failed", "connection refused or unreachable (is the OP running on that port?)"),
)


def discovery_url(issuer: str) -> str:
    """OIDC Discovery §4.1: the issuer, without a trailing slash, + /.well-known/openid-configuration."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


class ProviderMetadata(BaseModel):
    """The members of the discovery document this client uses; unknown members are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    token_endpoint: str
    jwks_uri: str
    backchannel_authentication_endpoint: str | None = None
    backchannel_token_delivery_modes_supported: tuple[str, ...] = ()
    backchannel_user_code_parameter_supported: bool = False
    grant_types_supported: tuple[str, ...] | None = None
    # OIDC Discovery §3: when omitted, the default is client_secret_basic.
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] | None = None
    # CIBA §4: "If omitted, signed authentication requests are not supported by the OP."
    backchannel_authentication_request_signing_alg_values_supported: tuple[str, ...] | None = None
    # RFC 9101 §10.5: the OP accepts authorization requests only as signed request objects.
    require_signed_request_object: bool = False
    id_token_signing_alg_values_supported: tuple[str, ...] | None = None
    introspection_endpoint: str | None = None
    revocation_endpoint: str | None = None
    authorization_details_types_supported: tuple[str, ...] | None = None
    # RFC 8705 §5: where a client using mutual TLS sends what it sends with its certificate.
    mtls_endpoint_aliases: dict[str, str] = {}
    # Where a browser signs in (authorization code flow): the codec server's sign-in uses it.
    authorization_endpoint: str | None = None

    @field_validator("issuer")
    @classmethod
    def _secure_issuer(cls, issuer: str) -> str:
        """OIDC Discovery §3, RFC 8414 §2: the issuer is an https URL (http only on loopback)."""
        return require_secure_url(issuer, "issuer")

    # Every URL member this client may call; a test checks that each *_endpoint and *_uri field
    # is listed. Members the model does not declare are dropped, so they are never called.
    @field_validator(
        "token_endpoint",
        "jwks_uri",
        "backchannel_authentication_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "authorization_endpoint",
    )
    @classmethod
    def _secure_endpoint(cls, url: str | None, info: ValidationInfo) -> str | None:
        """https whenever the issuer is https; see `require_endpoint_url` for the rule and its sources.

        `issuer` is declared first, so it is validated before the endpoints; when it is missing
        or invalid the endpoints are held to the https rule.
        """
        if url is None:
            return None
        issuer = info.data.get("issuer")
        return require_endpoint_url(
            url, info.field_name or "endpoint", issuer=issuer if isinstance(issuer, str) else "https:"
        )

    @field_validator("mtls_endpoint_aliases", mode="before")
    @classmethod
    def _mtls_aliases(cls, aliases: object, info: ValidationInfo) -> dict[str, str]:
        """RFC 8705 §5: a JSON object of endpoint URLs.

        Each is held to the rules of the endpoint it stands in for; members this client never
        calls are dropped."""
        if not isinstance(aliases, dict):
            raise ValueError("must be a JSON object")
        issuer = info.data.get("issuer")
        checked = {}
        for name in MTLS_ALIASED_ENDPOINTS:
            url = aliases.get(name)
            if url is None:
                continue
            if not isinstance(url, str):
                raise ValueError(f"{name} must be a URL")
            checked[name] = require_endpoint_url(
                url, f"mtls_endpoint_aliases.{name}", issuer=issuer if isinstance(issuer, str) else "https:"
            )
        return checked

    def for_mutual_tls(self) -> ProviderMetadata:
        """RFC 8705 §5: "a client ... using mutual TLS ... uses the alias URL" where one is given."""
        if not self.mtls_endpoint_aliases:
            return self
        return self.model_copy(update=self.mtls_endpoint_aliases)


def parse_provider_metadata(document: dict[str, object], issuer: str) -> ProviderMetadata:
    """Validate a discovery document fetched for `issuer`.

    OIDC Discovery §4.3: the `issuer` in the document MUST be identical to the issuer the
    document was requested for, or an attacker's OP could stand in for ours.
    """
    try:
        metadata = ProviderMetadata.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise DiscoveryError(f"discovery document: {where}: {message}") from None
    if metadata.issuer != issuer:
        raise DiscoveryError(
            f"discovery document issuer {metadata.issuer!r} is not the configured issuer {issuer!r}",
            document_issuer=metadata.issuer,
        )
    return metadata


def check_ciba_support(
    metadata: ProviderMetadata,
    *,
    delivery_mode: DeliveryMode,
    client_auth_method: ClientAuthMethod,
) -> None:
    """Refuse an OP that does not offer CIBA the way we are configured to use it (CIBA §4)."""
    if not metadata.backchannel_authentication_endpoint:
        raise DiscoveryError(
            f"the OP at {metadata.issuer} does not support CIBA: no backchannel_authentication_endpoint"
        )
    if delivery_mode not in metadata.backchannel_token_delivery_modes_supported:
        offered = ", ".join(metadata.backchannel_token_delivery_modes_supported) or "none"
        raise DiscoveryError(f"the OP does not offer CIBA delivery mode {delivery_mode!r} (offers: {offered})")
    if metadata.grant_types_supported is not None and CIBA_GRANT_TYPE not in metadata.grant_types_supported:
        raise DiscoveryError(f"the OP does not list the CIBA grant type {CIBA_GRANT_TYPE} in grant_types_supported")
    if client_auth_method not in metadata.token_endpoint_auth_methods_supported:
        offered = ", ".join(metadata.token_endpoint_auth_methods_supported)
        raise DiscoveryError(f"the OP does not accept client authentication {client_auth_method!r} (offers: {offered})")


async def fetch_provider_metadata(http: httpx.AsyncClient, issuer: str, *, timeout: httpx.Timeout) -> ProviderMetadata:
    """GET the discovery document and validate it (OIDC Discovery §4)."""
    url = discovery_url(issuer)
    try:
        response = await http.get(url, headers={"accept": "application/json"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TransportError(f"discovery at {url} failed: {transport_cause(exc)}") from None
    if response.status_code >= 500:
        raise TransportError(f"discovery at {url} answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise DiscoveryError(f"discovery at {url} answered HTTP {response.status_code}")
    try:
        document = json_object(response, "discovery")
    except ProtocolError as exc:
        raise DiscoveryError(str(exc)) from None
    return parse_provider_metadata(document, issuer)


async def fetch_jwks(http: httpx.AsyncClient, jwks_uri: str, *, timeout: httpx.Timeout) -> dict[str, Any]:
    """GET the OP's JWK Set document (OIDC Discovery §3 `jwks_uri`, RFC 7517 §5), unparsed."""
    try:
        response = await http.get(jwks_uri, headers={"accept": "application/json"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TransportError(f"jwks_uri: {transport_cause(exc)}") from None
    raise_for_error(response, "jwks_uri")
    return json_object(response, "jwks_uri")

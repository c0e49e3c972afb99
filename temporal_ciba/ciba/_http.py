"""Shared handling of OP responses: JSON bodies, OAuth error bodies, Retry-After, URL rules."""

from __future__ import annotations

import email.utils
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._errors import ProtocolError, TransportError, oauth_error

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, name: str) -> str:
    """An OP URL must be https; plain http only to a loopback host (tests and the demo).

    OIDC Discovery §3 and RFC 6749 §3.2 require TLS for every endpoint we send credentials to.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise ValueError(f"{name} must be an https URL (http only for a loopback host), got {url!r}")


def require_endpoint_url(url: str, name: str, *, issuer: str) -> str:
    """An endpoint named in the metadata of `issuer`: never less protected than the issuer itself.

    Every endpoint we call carries client credentials (token, backchannel authentication,
    revocation, introspection) or the keys that make a token authentic (jwks_uri), and TLS is
    required for each: OIDC Discovery §3 and §7.1, RFC 8414 §2, RFC 6749 §3.2, CIBA Core §7,
    RFC 7009 §2, RFC 7662 §4. So for an https issuer every endpoint must be https: a discovery
    document must not be able to point us at plain http, not even on loopback, where another
    local process could listen and read a `client_secret_basic` header in clear. Plain http is
    left only to an http loopback issuer (tests and the demo), whose discovery document already
    came in clear over loopback, and then only to a loopback host (`require_secure_url`).

    Another host than the issuer's is allowed, over https: the metadata arrived over TLS from the
    issuer itself, which is authoritative for where its endpoints live, and real OPs use other
    hosts (Google's token and JWKS hosts, Entra ID, RFC 8705 §5 mTLS endpoint aliases); TLS then
    authenticates that host as it does the issuer.

    RFC 6749 §3.1 and §3.2: an endpoint URI MUST NOT include a fragment component.
    """
    require_secure_url(url, name)
    parts = urlsplit(url)
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"{name} must not have a fragment (RFC 6749 §3.2), got {url!r}")
    issuer_parts = urlsplit(issuer)
    issuer_in_clear = issuer_parts.scheme == "http" and is_loopback_host(issuer_parts.hostname)
    if parts.scheme != "https" and not issuer_in_clear:
        raise ValueError(f"{name} must be https because the issuer {issuer!r} is, got {url!r}")
    return url


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The response body as a JSON object, or ProtocolError naming the endpoint."""
    try:
        body = json.loads(response.content)
    except ValueError:
        raise ProtocolError(f"{what}: response is not JSON (HTTP {response.status_code})") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: response is not a JSON object (HTTP {response.status_code})")
    return body


def raise_for_error(response: httpx.Response, what: str) -> None:
    """Turn a non-2xx answer into the typed error it carries (RFC 6749 §5.2).

    A 5xx or a 429 is the OP's passing trouble, whatever its body says (`server_error`,
    `temporarily_unavailable`): a transport failure, and retrying may succeed.
    """
    if response.is_success:
        return
    if response.is_redirect:
        raise ProtocolError(f"{what}: unexpected redirect (HTTP {response.status_code})")
    if response.status_code >= 500 or response.status_code == 429:
        raise TransportError(f"{what}: HTTP {response.status_code}")
    body = json_object(response, what)
    error = body.get("error")
    if not isinstance(error, str) or not error:
        raise ProtocolError(f"{what}: HTTP {response.status_code} without an error code")
    description = body.get("error_description")
    raise oauth_error(error, description if isinstance(description, str) else None, status=response.status_code)


def retry_after_seconds(response: httpx.Response, now: float) -> float | None:
    """RFC 9110 §10.2.3: Retry-After as delay-seconds or an HTTP-date; None when absent or bad."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²" and "١٢"
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)

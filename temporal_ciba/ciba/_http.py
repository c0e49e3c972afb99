"""Shared handling of OP responses: JSON bodies, OAuth error bodies, Retry-After, URL rules."""

from __future__ import annotations

import email.utils
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import ProtocolError, TransportError, oauth_error

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
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)

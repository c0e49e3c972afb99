"""The backchannel authentication request and its acknowledgement (CIBA Core 1.0 §7)."""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._binding_message import BINDING_MESSAGE_MAX_LENGTH, BindingMessageRule
from ._discovery import DeliveryMode, ProviderMetadata
from ._errors import InvalidAuthenticationRequest, ProtocolError
from ._http import json_object, raise_for_error
from ._types import AuthorizationDetails, Secret

# Patterns that validate are matched against the whole string (re.fullmatch): `$` also matches
# before a final newline.
# RFC 3986 §4.3 absolute-URI: a scheme, then visible ASCII (a URI is ASCII; RFC 8707 §2 asks for
# no fragment).
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+")
# RFC 6750 §2.1 b64token: the syntax of a bearer token.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# CIBA §7.1: client_notification_token is at most 1024 characters, at least 128 bits of entropy.
NOTIFICATION_TOKEN_MAX_LENGTH = 1024
NOTIFICATION_TOKEN_MIN_LENGTH = 22  # 128 bits in base64url
# CIBA §7.3: "If no value is provided, clients MUST use 5 as the default value".
DEFAULT_INTERVAL_SECONDS = 5
_DIGITS = re.compile(r"[0-9]{1,9}")
logger = logging.getLogger("temporal_ciba.ciba")


def new_client_notification_token() -> str:
    """256 random bits in base64url: bearer syntax (RFC 6750) and well above CIBA's 128-bit floor."""
    return secrets.token_urlsafe(32)


def check_client_notification_token(token: str) -> str:
    if not BEARER_TOKEN.fullmatch(token):
        raise ValueError("client_notification_token must have bearer token syntax (RFC 6750 §2.1)")
    if len(token) > NOTIFICATION_TOKEN_MAX_LENGTH:
        raise ValueError(f"client_notification_token is longer than {NOTIFICATION_TOKEN_MAX_LENGTH} characters")
    if len(token) < NOTIFICATION_TOKEN_MIN_LENGTH:
        raise ValueError("client_notification_token is too short to carry 128 bits of entropy")
    return token


def check_authorization_details(details: AuthorizationDetails | None) -> AuthorizationDetails | None:
    """RFC 9396 §2: a non-empty JSON array of objects, each with a non-empty string `type`."""
    if details is None:
        return None
    if not details:
        raise ValueError("authorization_details must not be an empty list")
    for index, detail in enumerate(details):
        if not isinstance(detail.get("type"), str) or not detail["type"]:
            raise ValueError(f"authorization_details[{index}] needs a non-empty string 'type'")
    return details


def check_resource_indicators(resources: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 8707 §2: each resource is an absolute URI without a fragment; duplicates dropped."""
    for resource in resources:
        if not _ABSOLUTE_URI.fullmatch(resource) or "#" in resource:
            raise ValueError(f"resource must be an absolute URI without a fragment (RFC 8707 §2): {resource[:80]!r}")
    return tuple(dict.fromkeys(resources))


class AuthenticationRequest(BaseModel):
    """The parameters of a backchannel authentication request (CIBA §7.1)."""

    model_config = ConfigDict(frozen=True)

    scope: str = "openid"
    login_hint: str | None = None
    id_token_hint: Secret | None = None
    login_hint_token: Secret | None = None
    binding_message: str | None = None
    user_code: Secret | None = None
    requested_expiry: int | None = Field(default=None, gt=0)
    acr_values: str | None = None
    authorization_details: AuthorizationDetails | None = None
    client_notification_token: Secret | None = None
    # RFC 8707 §2: the resource servers the access token is for (absolute URIs, no fragment).
    resource: tuple[str, ...] = ()
    # The API the access token is for, where the OP names it so (Auth0).
    audience: str | None = Field(default=None, min_length=1)
    # OIDC Core §5.5: the claims requested, a JSON object.
    claims: dict[str, Any] | None = None

    @field_validator("scope")
    @classmethod
    def _scope_has_openid(cls, scope: str) -> str:
        # CIBA §7.1: "The CIBA authentication request MUST contain the openid scope value."
        scopes = scope.split()
        if "openid" not in scopes:
            raise ValueError("scope must contain 'openid' (CIBA §7.1)")
        return " ".join(dict.fromkeys(scopes))

    @field_validator("binding_message")
    @classmethod
    def _short_plain_text(cls, message: str | None) -> str | None:
        if message is None:
            return None
        # CIBA §7.1: "relatively short and use a limited set of plain text characters".
        if not BindingMessageRule().allows(message):
            raise ValueError(
                f"binding_message must be 1 to {BINDING_MESSAGE_MAX_LENGTH} characters of plain text on one line"
            )
        return message

    @field_validator("acr_values")
    @classmethod
    def _acr_values(cls, acr_values: str | None) -> str | None:
        if acr_values is not None and not acr_values.split():
            raise ValueError("acr_values must name at least one value")
        return acr_values

    @field_validator("authorization_details")
    @classmethod
    def _authorization_details(cls, details: AuthorizationDetails | None) -> AuthorizationDetails | None:
        return check_authorization_details(details)

    @field_validator("resource")
    @classmethod
    def _resource_indicators(cls, resources: tuple[str, ...]) -> tuple[str, ...]:
        return check_resource_indicators(resources)

    @field_validator("client_notification_token")
    @classmethod
    def _notification_token(cls, token: Any) -> Any:
        if token is not None:
            check_client_notification_token(token.get_secret_value())
        return token

    @model_validator(mode="after")
    def _exactly_one_hint(self) -> AuthenticationRequest:
        # CIBA §7.1: "exactly one of login_hint_token, id_token_hint or login_hint MUST be provided".
        hints = [self.login_hint, self.id_token_hint, self.login_hint_token]
        if sum(hint is not None for hint in hints) != 1:
            raise ValueError("exactly one of login_hint, id_token_hint, login_hint_token is required (CIBA §7.1)")
        return self


def authentication_request_form(
    request: AuthenticationRequest, metadata: ProviderMetadata, delivery_mode: DeliveryMode
) -> dict[str, str | list[str]]:
    """The form body of the request, after the checks that need the OP's metadata."""
    if delivery_mode in ("ping", "push") and request.client_notification_token is None:
        raise InvalidAuthenticationRequest(f"{delivery_mode} mode requires a client_notification_token (CIBA §7.1)")
    if delivery_mode == "poll" and request.client_notification_token is not None:
        raise InvalidAuthenticationRequest("poll mode must not send a client_notification_token (CIBA §7.1)")
    if request.user_code is not None and not metadata.backchannel_user_code_parameter_supported:
        raise InvalidAuthenticationRequest(
            "user_code given but the OP does not advertise backchannel_user_code_parameter_supported (CIBA §4)"
        )
    if request.authorization_details and metadata.authorization_details_types_supported is not None:
        for detail in request.authorization_details:
            if detail["type"] not in metadata.authorization_details_types_supported:
                raise InvalidAuthenticationRequest(
                    f"the OP does not support authorization_details type {detail['type']!r} (RFC 9396 §10)"
                )
    form: dict[str, str | list[str]] = {"scope": request.scope}
    for name in ("login_hint", "binding_message", "acr_values", "audience"):
        value = getattr(request, name)
        if value is not None:
            form[name] = value
    for name in ("id_token_hint", "login_hint_token", "user_code", "client_notification_token"):
        secret = getattr(request, name)
        if secret is not None:
            form[name] = secret.get_secret_value()
    if request.requested_expiry is not None:
        form["requested_expiry"] = str(request.requested_expiry)
    if request.authorization_details is not None:
        form["authorization_details"] = json.dumps(request.authorization_details, separators=(",", ":"))
    if request.claims is not None:
        form["claims"] = json.dumps(request.claims, separators=(",", ":"))
    if request.resource:
        # RFC 8707 §2: one `resource` parameter per resource server.
        form["resource"] = list(request.resource)
    return form


class Acknowledgement(BaseModel):
    """The successful response (CIBA §7.3), and when we received it (epoch seconds)."""

    model_config = ConfigDict(frozen=True)

    auth_req_id: str
    expires_in: int
    interval: int = DEFAULT_INTERVAL_SECONDS
    received_at: float

    @property
    def expires_at(self) -> float:
        return self.received_at + self.expires_in


def _whole_number(value: Any, name: str) -> int | None:
    """A JSON number that is a whole number, or (leniently) a string of decimal digits.

    The string is accepted with a warning: some OPs send `"expires_in": "120"`. None for
    anything else: booleans, fractions, other strings, objects. The sign is checked by the
    caller."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        logger.warning("backchannel authentication response: %s is a string (%s), read as a number", name, value[:12])
        return int(value)
    return None


def parse_acknowledgement(body: dict[str, Any], *, received_at: float) -> Acknowledgement:
    """CIBA §7.3: auth_req_id and expires_in are REQUIRED, interval OPTIONAL; other members are ignored.

    Lenient where it harms nobody (the user may already be prompted when this runs): a number
    sent as a string of digits is read with a warning, and an interval of 0 or null is the
    default 5 s, as if absent ("If no value is provided, clients MUST use 5"). Strict where it
    matters: a missing, negative, zero, fractional, boolean or non-numeric expires_in, and a
    negative, fractional, boolean or non-numeric interval, are protocol errors.
    """
    auth_req_id = body.get("auth_req_id")
    if not isinstance(auth_req_id, str) or not auth_req_id:
        raise ProtocolError("backchannel authentication response has no auth_req_id (CIBA §7.3)")
    if "expires_in" not in body:
        raise ProtocolError("backchannel authentication response has no expires_in (CIBA §7.3)")
    expires_in = _whole_number(body["expires_in"], "expires_in")
    if expires_in is None or expires_in <= 0:
        raise ProtocolError("backchannel authentication response: expires_in is not a positive integer (CIBA §7.3)")
    interval = DEFAULT_INTERVAL_SECONDS
    if body.get("interval") is not None:
        parsed = _whole_number(body["interval"], "interval")
        if parsed is None or parsed < 0:
            raise ProtocolError("backchannel authentication response: interval is not a positive integer (CIBA §7.3)")
        interval = parsed or DEFAULT_INTERVAL_SECONDS
    return Acknowledgement(auth_req_id=auth_req_id, expires_in=expires_in, interval=interval, received_at=received_at)


def process_authentication_response(response: httpx.Response, *, now: float) -> Acknowledgement:
    """CIBA §7.3 on success, §13 on error (each error code raises its own OAuthError)."""
    raise_for_error(response, "backchannel authentication")
    if response.status_code != 200:
        raise ProtocolError(f"backchannel authentication: expected HTTP 200, got {response.status_code}")
    return parse_acknowledgement(json_object(response, "backchannel authentication"), received_at=now)

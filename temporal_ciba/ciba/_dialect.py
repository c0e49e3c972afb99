"""How one OP wants a backchannel request said (its dialect), applied before the request is sent.

CIBA §7.1 leaves to each OP the format of `login_hint`, the rule for `binding_message`, and which
optional parameters it needs (Auth0 needs `audience` for an access token to its API). A
`RequestDialect` holds those rules (from an OP profile, `temporal_ciba.ciba._profiles`, or the
settings one by one) and `shape_request` applies them to what the application asked, or refuses
the request before anything reaches the OP.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._backchannel import AuthenticationRequest
from ._binding_message import BindingMessageRule, fit_binding_message
from ._errors import InvalidAuthenticationRequest

LoginHintFormat = Literal["plain", "iss_sub"]
# The parameters an OP may require beyond CIBA's own.
RequiredParameter = Literal["audience", "resource", "binding_message", "acr_values", "requested_expiry"]


class RequestDialect(BaseModel):
    """The request-side rules of one OP, and the defaults this deployment adds to every request."""

    model_config = ConfigDict(frozen=True)

    binding_message: BindingMessageRule = BindingMessageRule()
    # "iss_sub": the login_hint is the user's `sub` at this OP, sent as
    # {"format": "iss_sub", "iss": <issuer>, "sub": <login_hint>} (Auth0).
    login_hint_format: LoginHintFormat = "plain"
    required_parameters: frozenset[RequiredParameter] = frozenset()
    # Sent when the request names none.
    default_audience: str | None = Field(default=None, min_length=1)
    default_resource: tuple[str, ...] = ()


def shape_request(
    request: AuthenticationRequest, dialect: RequestDialect, *, issuer: str, code: str | None
) -> AuthenticationRequest:
    """The request as this OP wants it.

    The binding message fitted to its rule (with `code`, the characters the approver compares,
    kept), the login_hint in its format, the default audience and resource added;
    InvalidAuthenticationRequest if a parameter it requires is missing or no binding message
    fits (BindingMessageUnfit)."""
    updates: dict[str, Any] = {}
    if request.binding_message is not None:
        updates["binding_message"] = fit_binding_message(request.binding_message, dialect.binding_message, code=code)
    if request.login_hint is not None and dialect.login_hint_format == "iss_sub":
        updates["login_hint"] = json.dumps(
            {"format": "iss_sub", "iss": issuer, "sub": request.login_hint}, separators=(",", ":")
        )
    if request.audience is None and dialect.default_audience is not None:
        updates["audience"] = dialect.default_audience
    if not request.resource and dialect.default_resource:
        updates["resource"] = dialect.default_resource
    shaped = AuthenticationRequest.model_validate({**dict(request), **updates})
    missing = sorted(name for name in dialect.required_parameters if getattr(shaped, name) in (None, ()))
    if missing:
        raise InvalidAuthenticationRequest(
            f"the OP requires {', '.join(missing)} in every backchannel request (its dialect)"
        )
    return shaped

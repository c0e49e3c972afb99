"""The token request for the CIBA grant and the polling rules (CIBA Core 1.0 §7.3, §10.1, §11).

`authorization_pending`, `slow_down` and 503 + Retry-After are answers, returned as data;
every other error code is final and raised as its OAuthError subclass.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._discovery import CIBA_GRANT_TYPE
from ._errors import ProtocolError
from ._http import json_object, raise_for_error, retry_after_seconds
from ._types import AuthorizationDetails, Secret

# CIBA §11: on slow_down "the interval MUST be increased by at least 5 seconds for this and
# all subsequent requests".
SLOW_DOWN_INCREMENT_SECONDS = 5


class TokenResponse(BaseModel):
    """A successful token response (RFC 6749 §5.1, CIBA §10.1.1). Tokens never show in repr."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    access_token: Secret
    token_type: str
    id_token: Secret
    refresh_token: Secret | None = None
    expires_in: int | None = None
    scope: str | None = None
    authorization_details: AuthorizationDetails | None = None


class Granted(BaseModel):
    kind: Literal["granted"] = "granted"
    tokens: TokenResponse


class Pending(BaseModel):
    """authorization_pending: the user has not decided yet; ask again after the interval."""

    kind: Literal["pending"] = "pending"


class SlowDown(BaseModel):
    """slow_down: ask again, and from now on wait 5 s longer between requests."""

    kind: Literal["slow_down"] = "slow_down"


class RetryLater(BaseModel):
    """The OP is overloaded (HTTP 503 or 429 with Retry-After): wait as long as it asks."""

    kind: Literal["retry_later"] = "retry_later"
    seconds: float


TokenPollResult = Annotated[Granted | Pending | SlowDown | RetryLater, Field(discriminator="kind")]


class PollSchedule(BaseModel):
    """How long to wait before the next token request; pure, so a workflow can keep it.

    CIBA §7.3: `interval` is the minimum wait between polling requests. We count it from the
    end of the previous request, which keeps requests at least `interval` apart.
    """

    model_config = ConfigDict(frozen=True)

    interval: float

    def after(self, result: Pending | SlowDown | RetryLater) -> tuple[PollSchedule, float]:
        """The schedule to keep and the delay before the next request."""
        if isinstance(result, SlowDown):
            slower = PollSchedule(interval=self.interval + SLOW_DOWN_INCREMENT_SECONDS)
            return slower, slower.interval
        if isinstance(result, RetryLater):
            return self, max(self.interval, result.seconds)
        return self, self.interval


def token_request_form(auth_req_id: str) -> dict[str, str]:
    """CIBA §10.1: grant_type=urn:openid:params:grant-type:ciba and the auth_req_id."""
    return {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id}


def parse_token_response(body: dict[str, Any], *, token_type: str = "Bearer") -> TokenResponse:
    """RFC 6749 §5.1: parse a successful token response.

    `token_type` is the one we can use: Bearer (RFC 6750), or DPoP when we sent a proof (RFC 9449
    §5: a bound token is "DPoP"; a Bearer one then would be a downgrade)."""
    for member in ("access_token", "token_type", "id_token"):
        if not isinstance(body.get(member), str) or not body[member]:
            raise ProtocolError(f"token response has no {member} (RFC 6749 §5.1, CIBA §10.1.1)")
    if body["token_type"].lower() != token_type.lower():
        raise ProtocolError(f"token response: token_type {body['token_type'][:20]!r}, expected {token_type}")
    try:
        return TokenResponse.model_validate(body)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise ProtocolError(f"token response: malformed {where}") from None


def process_token_response(
    response: httpx.Response, *, now: float, token_type: str = "Bearer"
) -> Granted | Pending | SlowDown | RetryLater:
    """CIBA §10.1.1 on success; §11 for errors; RFC 9110 Retry-After on 503/429."""
    if response.status_code in (429, 503):
        delay = retry_after_seconds(response, now)
        if delay is not None:
            return RetryLater(seconds=delay)
    if response.status_code == 400:
        error = json_object(response, "token endpoint").get("error")
        if error == "authorization_pending":
            return Pending()
        if error == "slow_down":
            return SlowDown()
    raise_for_error(response, "token endpoint")
    if response.status_code != 200:
        raise ProtocolError(f"token endpoint: expected HTTP 200, got {response.status_code}")
    return Granted(tokens=parse_token_response(json_object(response, "token endpoint"), token_type=token_type))

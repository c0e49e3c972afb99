"""CibaClient's backchannel authentication request (CIBA §7.1-7.3) over an in-process HTTP transport.

What it sends, to where, as whom, and what a failure says (end to end against the real OP:
tests/e2e/test_protocol_op.py)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest

from temporal_ciba.ciba import (
    AuthenticationRequest,
    CibaClient,
    ClientSecretBasic,
    InvalidAuthenticationRequest,
    TransportError,
    new_client_notification_token,
)
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW

BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:secret".encode()).decode()


class OP:
    def __init__(self, answer: httpx.Response | Exception) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def client(op: OP) -> CibaClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    return CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW)


REQUEST = AuthenticationRequest(scope="openid payments", login_hint="alice", binding_message="Pay EUR 1")


async def test_authentication_request_rule_posts_the_form_as_the_client_and_reads_the_ack() -> None:
    op = OP(httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120, "interval": 2}))
    async with client(op) as ciba:
        ack = await ciba.authenticate(REQUEST)
    assert (ack.auth_req_id, ack.expires_in, ack.interval, ack.received_at) == ("req-1", 120, 2, NOW)
    (sent,) = op.requests
    assert str(sent.url) == METADATA["backchannel_authentication_endpoint"]
    assert sent.headers["authorization"] == BASIC and sent.headers["accept"] == "application/json"
    form = {name: values[0] for name, values in parse_qs(sent.content.decode()).items()}
    assert form == {"scope": "openid payments", "login_hint": "alice", "binding_message": "Pay EUR 1"}


async def test_authentication_request_rule_a_timeout_may_have_reached_the_op() -> None:
    async with client(OP(httpx.ReadTimeout("slow"))) as ciba:
        with pytest.raises(TransportError) as caught:
            await ciba.authenticate(REQUEST)
    assert caught.value.request_sent is True
    assert str(caught.value) == "backchannel authentication: the OP did not answer in time"
    async with client(OP(httpx.ConnectError("refused"))) as ciba:
        with pytest.raises(TransportError) as caught:
            await ciba.authenticate(REQUEST)
    assert caught.value.request_sent is False


async def test_authentication_request_rule_a_poll_client_sends_no_notification_token() -> None:
    """CIBA §7.1: the client's own delivery mode decides; the request is refused before it is sent."""
    op = OP(httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120}))
    with_token = AuthenticationRequest(login_hint="alice", client_notification_token=new_client_notification_token())  # type: ignore[arg-type]
    async with client(op) as ciba:
        with pytest.raises(InvalidAuthenticationRequest, match="poll mode must not"):
            await ciba.authenticate(with_token)
    assert op.requests == []

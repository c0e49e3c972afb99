"""CibaClient's own rules over an in-process HTTP transport: JWKS refetch once on an unknown kid,
never two token requests in flight, transport failures retried with backoff."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import Acknowledgement, CibaClient, ClientSecretBasic, TokenRejected, TokenRequestInFlight
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW, Keys, binding, claims, token_response


class FakeOP:
    """Answers discovery and JWKS; the token endpoint answers from a script."""

    def __init__(self, keys: Keys) -> None:
        self.jwks = keys.jwks_document()
        self.jwks_fetches = 0
        self.token_answers: list[Any] = []
        self.token_calls = 0
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        if path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.jwks)
        if path == "/token":
            self.token_calls += 1
            answer = self.token_answers.pop(0)
            if answer == "block":
                await self.release.wait()
                return httpx.Response(400, json={"error": "authorization_pending"})
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(404)


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_client(op: FakeOP, monotonic: Monotonic | None = None) -> CibaClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    return CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "secret"),
        http=http,
        clock=lambda: NOW,
        monotonic=monotonic or Monotonic(),
    )


async def test_unknown_kid_refetches_jwks_once() -> None:
    keys = Keys()
    op = FakeOP(keys)
    monotonic = Monotonic()
    ciba = make_client(op, monotonic)
    rotated = keys.jwks_document()
    rotated["keys"][0]["kid"] = "rsa-2"
    op.jwks = {"keys": [rotated["keys"][1]]}  # the first fetch does not know the new key yet
    tokens = token_response(keys.sign(claims(), kid="rsa-2"))
    await ciba.validate(token_response(keys.sign(claims(), alg="ES256", kid="ec-1")), binding())
    assert op.jwks_fetches == 1
    monotonic.now += 60  # past the refetch cool-down
    op.jwks = rotated
    approval = await ciba.validate(tokens, binding())
    assert approval.sub == "alice" and op.jwks_fetches == 2
    # A forged kid right after: no second refetch within the minimum interval.
    with pytest.raises(TokenRejected, match="key_not_found"):
        await ciba.validate(token_response(keys.sign(claims(), kid="forged")), binding())
    assert op.jwks_fetches == 2


async def test_never_two_token_requests_in_flight() -> None:
    op = FakeOP(Keys())
    op.token_answers = ["block"]
    ciba = make_client(op)
    first = asyncio.create_task(ciba.request_token("req-1"))
    while op.token_calls == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(TokenRequestInFlight):
        await ciba.request_token("req-1")
    op.release.set()
    await first
    assert op.token_calls == 1


async def test_poll_retries_transport_errors_with_backoff() -> None:
    op = FakeOP(Keys())
    granted = httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "id_token": "a.b.c"})
    op.token_answers = [httpx.ConnectError("refused"), httpx.Response(502), httpx.ReadTimeout("slow"), granted]
    ciba = make_client(op)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    ack = Acknowledgement(auth_req_id="req-1", expires_in=600, interval=1, received_at=NOW)
    tokens = await ciba.poll(ack, sleep=sleep)
    assert tokens.access_token.get_secret_value() == "at"
    assert delays == [1, 1, 2, 4]


def test_token_response_json_keeps_tokens_for_the_encrypted_payload() -> None:
    tokens = token_response("a.b.c")
    assert json.loads(tokens.model_dump_json())["id_token"] == "a.b.c"

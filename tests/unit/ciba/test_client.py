"""CibaClient's own rules over an in-process HTTP transport.

JWKS refetch once on an unknown kid, never two token requests in flight, transport failures retried
with backoff, the polling deadline, the metadata's lifetime, the HTTP client it makes for itself,
and what each failure is named."""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey

from temporal_ciba.ciba import (
    Acknowledgement,
    CibaClient,
    CibaError,
    ClientSecretBasic,
    DiscoveryError,
    ExpiredToken,
    RetryLater,
    TlsClientAuth,
    TokenRejected,
    TokenRequestInFlight,
)
from temporal_ciba.ciba._id_token_encryption import IdTokenDecryptionKey
from tests.support.mtls import self_signed_client_certificate
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW, Keys, binding, claims, token_response


class FakeOP:
    """Answers discovery and JWKS; the token endpoint answers from a script."""

    def __init__(self, keys: Keys) -> None:
        self.jwks = keys.jwks_document()
        self.jwks_fetches = 0
        self.token_answers: list[Any] = []
        self.token_calls = 0
        self.release = asyncio.Event()
        self.requests: list[httpx.Request] = []
        self.metadata_fetches = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            self.metadata_fetches += 1
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


def before_a_key_rotation(keys: Keys) -> tuple[CibaClient, FakeOP, Monotonic, dict[str, Any]]:
    """A client of an OP whose JWKS does not know the key `rsa-2` yet, and the JWKS that does."""
    op = FakeOP(keys)
    monotonic = Monotonic()
    rotated = keys.jwks_document()
    rotated["keys"][0]["kid"] = "rsa-2"
    op.jwks = {"keys": [rotated["keys"][1]]}
    return make_client(op, monotonic), op, monotonic, rotated


async def test_unknown_kid_refetches_jwks_once() -> None:
    keys = Keys()
    ciba, op, monotonic, rotated = before_a_key_rotation(keys)
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
    with pytest.raises(TokenRequestInFlight, match=r"^a token request for this auth_req_id is already in flight$"):
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


class Sleeps(list[float]):
    """poll's sleep: records each wait and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def pending() -> httpx.Response:
    return httpx.Response(400, json={"error": "authorization_pending"})


def granted() -> httpx.Response:
    return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "id_token": "a.b.c"})


def token_requests(op: FakeOP) -> list[dict[str, str]]:
    return [
        {name: values[0] for name, values in parse_qs(request.content.decode()).items()}
        for request in op.requests
        if request.url.path == "/token"
    ]


async def test_poll_stops_when_the_next_request_would_come_at_or_after_the_deadline() -> None:
    op = FakeOP(Keys())
    ciba = make_client(op)
    sleeps = Sleeps()
    at_the_deadline = Acknowledgement(auth_req_id="req-1", expires_in=5, interval=5, received_at=NOW)
    with pytest.raises(ExpiredToken) as caught:
        await ciba.poll(at_the_deadline, sleep=sleeps)
    assert str(caught.value) == "expired_token: the request expired before the user decided (expires_in passed)"
    assert sleeps == [] and op.token_calls == 0
    op.token_answers = [granted()]
    a_second_before = Acknowledgement(auth_req_id="req-1", expires_in=6, interval=5, received_at=NOW)
    assert (await ciba.poll(a_second_before, sleep=sleeps)).access_token.get_secret_value() == "at"
    assert sleeps == [5] and op.token_calls == 1


async def test_poll_backoff_starts_again_after_an_answer_from_the_op() -> None:
    op = FakeOP(Keys())
    refused = [httpx.ConnectError("refused") for _ in range(3)]
    op.token_answers = [refused[0], refused[1], pending(), refused[2], granted()]
    sleeps = Sleeps()
    ack = Acknowledgement(auth_req_id="req-1", expires_in=600, interval=1, received_at=NOW)
    await make_client(op).poll(ack, sleep=sleeps)
    assert sleeps == [1, 1, 2, 1, 1]


async def test_poll_asks_for_its_auth_req_id_and_waits_longer_after_slow_down() -> None:
    op = FakeOP(Keys())
    op.token_answers = [httpx.Response(400, json={"error": "slow_down"}), pending(), granted()]
    sleeps = Sleeps()
    ack = Acknowledgement(auth_req_id="req-1", expires_in=600, interval=1, received_at=NOW)
    await make_client(op).poll(ack, sleep=sleeps)
    assert sleeps == [1, 6, 6]  # CIBA §11: 5 s more for this and every later request
    assert [form["auth_req_id"] for form in token_requests(op)] == ["req-1"] * 3


async def test_retry_after_as_a_date_counts_from_the_clients_clock() -> None:
    op = FakeOP(Keys())
    op.token_answers = [httpx.Response(503, headers={"retry-after": email.utils.formatdate(NOW + 10, usegmt=True)})]
    assert await make_client(op).request_token("req-1") == RetryLater(seconds=10)


async def test_metadata_is_kept_for_an_hour_and_then_fetched_again() -> None:
    op = FakeOP(Keys())
    monotonic = Monotonic()
    monotonic.now = 100.0
    ciba = make_client(op, monotonic)
    first = await ciba.metadata()
    monotonic.now = 100.0 + 3600  # exactly an hour later: still fresh
    assert await ciba.metadata() is first and op.metadata_fetches == 1
    monotonic.now += 0.5
    assert await ciba.metadata() is not first and op.metadata_fetches == 2


async def test_every_call_to_the_op_asks_for_json_within_the_clients_timeout() -> None:
    keys = Keys()
    op = FakeOP(keys)
    op.token_answers = [pending()]
    timeout = httpx.Timeout(7.0, connect=3.0)  # not httpx's default (5 s for everything)
    ciba = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "secret"),
        http=httpx.AsyncClient(transport=httpx.MockTransport(op)),
        timeout=timeout,
        clock=lambda: NOW,
        monotonic=Monotonic(),
    )
    await ciba.request_token("req-1")
    await ciba.validate(token_response(keys.sign(claims())), binding())
    assert [request.url.path for request in op.requests] == ["/.well-known/openid-configuration", "/token", "/jwks"]
    assert all(request.extensions["timeout"] == timeout.as_dict() for request in op.requests)
    assert all(request.headers["accept"] == "application/json" for request in op.requests)


ENDPOINTS = {"introspection_endpoint": f"{ISSUER}/introspect", "revocation_endpoint": f"{ISSUER}/revoke"}
CALLS: dict[str, Callable[[CibaClient], Awaitable[object]]] = {
    "introspect": lambda ciba: ciba.introspect("at-1"),
    "revoke": lambda ciba: ciba.revoke("at-1"),
    "request_token": lambda ciba: ciba.request_token("req-1"),
    "validate": lambda ciba: ciba.validate(token_response("a.b.c"), binding()),
}


@pytest.mark.parametrize(
    ("call", "answer", "message"),
    [
        ("introspect", httpx.ConnectError("boom"), "introspection: ConnectError: boom"),
        ("introspect", 503, "introspection: HTTP 503"),
        ("introspect", b"<html>", "introspection: response is not JSON (HTTP 200)"),
        ("revoke", httpx.ConnectError("boom"), "revocation: ConnectError: boom"),
        ("revoke", 503, "revocation: HTTP 503"),
        ("request_token", httpx.ConnectError("boom"), "token endpoint: ConnectError: boom"),
        ("validate", 503, "jwks_uri: HTTP 503"),
        ("validate", b"<html>", "jwks_uri: response is not JSON (HTTP 200)"),
    ],
)
async def test_each_failure_names_the_call_that_failed(
    call: str, answer: Exception | int | bytes, message: str
) -> None:
    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**METADATA, **ENDPOINTS})
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer) if isinstance(answer, int) else httpx.Response(200, content=answer)

    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW)
    with pytest.raises(CibaError) as caught:
        await CALLS[call](ciba)
    assert str(caught.value) == message


@pytest.mark.parametrize("other", [{"issuer": "https://other.example.test"}, {"client_id": "other-client"}])
async def test_tokens_are_validated_only_for_a_request_of_this_issuer_and_client(other: dict[str, str]) -> None:
    keys = Keys()
    op = FakeOP(keys)
    with pytest.raises(CibaError, match=r"^the request binding is for another issuer or client$"):
        await make_client(op).validate(token_response(keys.sign(claims())), binding(**other))
    assert op.jwks_fetches == 0


async def test_an_encrypted_id_token_is_decrypted_with_the_clients_key_then_validated() -> None:
    keys = Keys()
    op = FakeOP(keys)
    decryption_key = RSAKey.generate_key(2048, private=True)
    ciba = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "secret"),
        http=httpx.AsyncClient(transport=httpx.MockTransport(op)),
        clock=lambda: NOW,
        id_token_decryption_key=IdTokenDecryptionKey(decryption_key),
    )
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}
    registry = jwe.JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])
    encrypted = jwe.encrypt_compact(header, keys.sign(claims()), decryption_key, registry=registry)
    approval = await ciba.validate(token_response(encrypted), binding())
    assert approval.sub == "alice"


async def test_id_token_hint_subject_is_the_sub_of_an_id_token_the_op_issued_to_this_client() -> None:
    keys = Keys()
    ciba = make_client(FakeOP(keys))
    assert await ciba.id_token_hint_subject(keys.sign(claims(sub="bob"))) == "bob"
    with pytest.raises(TokenRejected, match="iss"):
        await ciba.id_token_hint_subject(keys.sign(claims(iss="https://other.example.test")))
    with pytest.raises(TokenRejected, match="aud"):
        await ciba.id_token_hint_subject(keys.sign(claims(aud="other-client")))


async def test_id_token_hint_with_an_unknown_kid_refetches_the_jwks_once() -> None:
    keys = Keys()
    ciba, op, monotonic, rotated = before_a_key_rotation(keys)
    assert await ciba.id_token_hint_subject(keys.sign(claims(), alg="ES256", kid="ec-1")) == "alice"
    monotonic.now += 60  # past the refetch cool-down
    op.jwks = rotated
    assert await ciba.id_token_hint_subject(keys.sign(claims(sub="bob"), kid="rsa-2")) == "bob"
    assert op.jwks_fetches == 2
    with pytest.raises(TokenRejected, match="key_not_found"):
        await ciba.id_token_hint_subject(keys.sign(claims(), kid="forged"))
    assert op.jwks_fetches == 2


def test_the_client_says_whether_its_token_requests_carry_dpop_proofs() -> None:
    for dpop in (False, True):
        http = httpx.AsyncClient(transport=httpx.MockTransport(FakeOP(Keys())))
        ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, dpop=dpop)
        assert ciba.dpop is dpop


# The HTTP client CibaClient makes for itself when none is passed in ---------------------------

REAL_ASYNC_CLIENT = httpx.AsyncClient


class OwnHttp:
    """Stands in for httpx.AsyncClient while CibaClient makes its own.

    Keeps the arguments, and the client it makes answers from `handler` in process."""

    def __init__(self, handler: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]) -> None:
        self.handler = handler
        self.arguments: dict[str, Any] = {}
        self.made: list[httpx.AsyncClient] = []

    def __call__(self, **arguments: Any) -> httpx.AsyncClient:
        self.arguments = arguments
        self.made.append(REAL_ASYNC_CLIENT(transport=httpx.MockTransport(self.handler), **arguments))
        return self.made[-1]


async def test_its_own_http_client_follows_no_redirect_verifies_the_op_and_is_closed_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    async def op(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.host == "evil.example.test":
            return httpx.Response(200, json=METADATA)
        return httpx.Response(302, headers={"location": "https://evil.example.test/.well-known/openid-configuration"})

    own = OwnHttp(op)
    monkeypatch.setattr(httpx, "AsyncClient", own)
    async with CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret")) as ciba:
        with pytest.raises(DiscoveryError, match="HTTP 302"):
            await ciba.metadata()
    assert asked == [f"{ISSUER}/.well-known/openid-configuration"]
    assert own.arguments["verify"] is True  # httpx's checked default trust, never verification off
    assert [made.is_closed for made in own.made] == [True]


async def test_its_own_http_client_presents_the_client_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificate = self_signed_client_certificate(tmp_path, "agent").certificate
    context = certificate.ssl_context()
    monkeypatch.setattr(type(certificate), "ssl_context", lambda self: context)
    own = OwnHttp(FakeOP(Keys()))
    monkeypatch.setattr(httpx, "AsyncClient", own)
    async with CibaClient(issuer=ISSUER, client_auth=TlsClientAuth(CLIENT_ID), client_certificate=certificate):
        pass
    assert own.arguments["verify"] is context and context.verify_mode == ssl.CERT_REQUIRED


async def test_an_http_client_passed_in_stays_open_for_its_owner() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(FakeOP(Keys()))) as http:
        async with CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http):
            pass
        assert not http.is_closed

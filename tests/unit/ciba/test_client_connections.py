"""CibaClient's connections to the OP: a bounded number of requests in flight, none waiting in the pool.

httpx's connection pool can lose a slot for good when a request waiting in it times out or is
cancelled (encode/httpcore#1093); once every slot is lost, each request fails with PoolTimeout
against a healthy OP, and a worker with a thousand poll-mode approvals waiting reaches that
contention. The client lets at most `max_connections` requests in, so none waits inside the pool, and replaces a pool
that answers PoolTimeout all the same."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, Pending, TransportError
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW


class HeldOP:
    """Token requests answered `authorization_pending` once released; how many were in at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.release = asyncio.Event()
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        self.requests += 1
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return httpx.Response(400, json={"error": "authorization_pending"})


def held_client(op: HeldOP, *, max_connections: int, pool_seconds: float = 30.0) -> CibaClient:
    return CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "secret"),
        http=httpx.AsyncClient(transport=httpx.MockTransport(op)),
        timeout=httpx.Timeout(30.0, pool=pool_seconds),
        clock=lambda: NOW,
        max_connections=max_connections,
    )


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_no_more_requests_in_flight_than_connections_the_rest_wait_their_turn() -> None:
    op = HeldOP()
    ciba = held_client(op, max_connections=3)
    requests = [asyncio.ensure_future(ciba.request_token(f"req-{n}")) for n in range(8)]
    await asyncio.wait_for(_until(lambda: op.inside == 3), timeout=5)
    await asyncio.sleep(0.05)
    assert op.inside == 3  # five wait their turn outside the pool
    op.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*requests), timeout=5)
    assert all(isinstance(answer, Pending) for answer in answers)
    assert (op.most_inside, op.requests) == (3, 8)


async def test_a_request_that_finds_no_free_connection_within_the_pool_timeout_is_a_transport_error() -> None:
    op = HeldOP()
    ciba = held_client(op, max_connections=1, pool_seconds=0.2)
    first = asyncio.ensure_future(ciba.request_token("req-1"))
    await asyncio.wait_for(_until(lambda: op.inside == 1), timeout=5)
    with pytest.raises(TransportError, match="every connection to the OP stayed busy"):
        await ciba.request_token("req-2")
    op.release.set()
    assert isinstance(await first, Pending)
    assert op.requests == 1


async def test_a_pool_that_answers_pool_timeout_is_replaced() -> None:
    """A PoolTimeout with a slot free means the pool lost its slots: the next request goes
    through a new one (an owned pool only; a pool passed in is the caller's)."""
    op = HeldOP()
    op.release.set()

    async def wedged(_: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("no connection")

    ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), clock=lambda: NOW)
    await ciba._http.aclose()
    ciba._http = httpx.AsyncClient(transport=httpx.MockTransport(wedged))
    ciba._new_http = lambda: httpx.AsyncClient(transport=httpx.MockTransport(op))  # type: ignore[method-assign]
    with pytest.raises(TransportError):
        await ciba.metadata()
    assert isinstance(await ciba.request_token("req-1"), Pending)
    assert op.requests == 1
    await ciba.aclose()

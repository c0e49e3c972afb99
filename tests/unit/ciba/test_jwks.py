"""JwksCache under concurrency: one fetch for many callers, and the refetch cool-down holds.

OIDC Core 1.0 §10.1.1: an unknown kid may mean the OP rotated its keys, so we refetch, but at
most once per cool-down so that forged kids cannot make us hammer the OP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, TokenRejected, TransportError
from temporal_ciba.ciba._jwks import JwksCache, select_keys
from tests.support.tokens import CLIENT_ID, ISSUER, NOW, Keys, binding, claims, token_response

CALLERS = 50


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingFetcher:
    """Returns `document`, counting calls; each fetch yields to the loop as real I/O does."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls = 0
        self.fail = False

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if self.fail:
            raise TransportError("jwks_uri: HTTP 503")
        return self.document


async def unknown_kid(cache: JwksCache, kid: str) -> bool:
    """What a validation does with an unknown kid: look, refresh, look again."""
    if select_keys(await cache.keys(), alg="RS256", kid=kid):
        return True
    await cache.refresh()
    return bool(select_keys(await cache.keys(), alg="RS256", kid=kid))


async def test_concurrent_first_loads_fetch_once() -> None:
    fetch = CountingFetcher(Keys().jwks_document())
    cache = JwksCache(fetch, clock=Clock())
    results = await asyncio.gather(*(cache.keys() for _ in range(CALLERS)))
    assert fetch.calls == 1
    assert all(keys is results[0] for keys in results)


async def test_concurrent_unknown_kids_refetch_once() -> None:
    keys = Keys()
    fetch = CountingFetcher(keys.jwks_document())
    clock = Clock()
    cache = JwksCache(fetch, clock=clock, min_refetch_seconds=30.0)
    await cache.keys()
    assert fetch.calls == 1
    clock.now += 60  # past the cool-down: one refetch is due, not fifty
    found = await asyncio.gather(*(unknown_kid(cache, "forged") for _ in range(CALLERS)))
    assert fetch.calls == 2 and not any(found)
    # And the cool-down still holds afterwards.
    await asyncio.gather(*(unknown_kid(cache, "forged") for _ in range(CALLERS)))
    assert fetch.calls == 2
    clock.now += 30
    await asyncio.gather(*(unknown_kid(cache, "forged") for _ in range(CALLERS)))
    assert fetch.calls == 3


async def test_callers_that_waited_reuse_the_rotated_keys_even_without_cool_down() -> None:
    """With no cool-down at all, callers that queued behind a refetch still reuse its keys."""
    keys = Keys()
    rotated = keys.jwks_document()
    fetch = CountingFetcher({"keys": [rotated["keys"][1]]})  # the EC key only: rsa-1 unknown
    cache = JwksCache(fetch, clock=Clock(), min_refetch_seconds=0.0)
    await cache.keys()
    fetch.document = rotated
    found = await asyncio.gather(*(unknown_kid(cache, "rsa-1") for _ in range(CALLERS)))
    assert all(found) and fetch.calls == 2


async def test_failed_refetch_counts_for_the_cool_down() -> None:
    fetch = CountingFetcher(Keys().jwks_document())
    clock = Clock()
    cache = JwksCache(fetch, clock=clock, min_refetch_seconds=30.0)
    await cache.keys()
    clock.now += 60
    fetch.fail = True
    outcomes = await asyncio.gather(*(cache.refresh() for _ in range(CALLERS)), return_exceptions=True)
    assert fetch.calls == 2
    assert sum(isinstance(outcome, TransportError) for outcome in outcomes) == 1
    await asyncio.gather(*(cache.refresh() for _ in range(CALLERS)))  # within the cool-down: nothing
    assert fetch.calls == 2


async def test_ttl_expiry_refetches_once_for_concurrent_callers() -> None:
    fetch = CountingFetcher(Keys().jwks_document())
    clock = Clock()
    cache = JwksCache(fetch, clock=clock, ttl_seconds=600.0)
    await cache.keys()
    clock.now += 601
    await asyncio.gather(*(cache.keys() for _ in range(CALLERS)))
    assert fetch.calls == 2


async def test_fifty_concurrent_validations_with_an_unknown_kid_fetch_the_jwks_once() -> None:
    """Through CibaClient.validate: an in-process OP counts its JWKS fetches."""
    keys = Keys()
    fetches = 0
    metadata = {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "backchannel_authentication_endpoint": f"{ISSUER}/bc",
        "backchannel_token_delivery_modes_supported": ["poll"],
    }

    async def op(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=metadata)
        fetches += 1
        await asyncio.sleep(0.01)  # a slow JWKS answer: every caller arrives while it is in flight
        return httpx.Response(200, json=keys.jwks_document())

    monotonic = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(op)) as http:
        ciba = CibaClient(
            issuer=ISSUER,
            client_auth=ClientSecretBasic(CLIENT_ID, "secret"),
            http=http,
            clock=lambda: NOW,
            monotonic=monotonic,
        )
        await ciba.validate(token_response(keys.sign(claims(), kid="rsa-1")), binding())
        assert fetches == 1
        monotonic.now += 60  # past the cool-down
        forged = token_response(keys.sign(claims(), kid="forged"))
        outcomes = await asyncio.gather(
            *(ciba.validate(forged, binding()) for _ in range(CALLERS)), return_exceptions=True
        )
        assert fetches == 2
        assert all(isinstance(outcome, TokenRejected) for outcome in outcomes)
        with pytest.raises(TokenRejected, match="key_not_found"):
            await ciba.validate(forged, binding())
        assert fetches == 2


async def test_a_new_cache_fetches_on_first_use_even_when_kept_forever() -> None:
    fetch = CountingFetcher(Keys().jwks_document())
    cache = JwksCache(fetch, clock=Clock(), ttl_seconds=float("inf"))
    assert [key.kid for key in await cache.keys()] == ["rsa-1", "ec-1"]
    await cache.keys()
    assert fetch.calls == 1


async def test_a_new_cache_refreshes_at_once() -> None:
    """No fetch has been attempted yet, so no cool-down holds the first refresh back."""
    fetch = CountingFetcher(Keys().jwks_document())
    cache = JwksCache(fetch, clock=Clock(), min_refetch_seconds=30.0)
    await cache.refresh()
    assert fetch.calls == 1
    assert [key.kid for key in await cache.keys()] == ["rsa-1", "ec-1"] and fetch.calls == 1


async def test_keys_stay_fresh_for_exactly_the_ttl() -> None:
    fetch = CountingFetcher(Keys().jwks_document())
    clock = Clock()
    cache = JwksCache(fetch, clock=clock, ttl_seconds=600.0)
    await cache.keys()
    clock.now = 600.0
    await cache.keys()
    assert fetch.calls == 1
    clock.now = 600.5
    await cache.keys()
    assert fetch.calls == 2

"""The JWKS refetch rule against the real test OP.

After the OP rotates its signing keys, an ID token signed with a kid the client has not seen makes
it fetch the JWKS once more, and validates; within the cool-down it does not fetch again, whatever
kid a token names. (The concurrency of the rule is pinned in tests/unit/ciba/test_jwks.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from temporal_ciba.ciba import CibaClient, ClientSecretBasic, Granted, KeyNotFound
from tests.support.op import TestOP, run_test_op
from tests.support.protocol import approved
from tests.support.stack import SECRET, ClientKey, op_config


@pytest.fixture(scope="module")
def rotating_op(client_keys: dict[str, ClientKey]) -> Iterator[TestOP]:
    """An OP of this module's own: rotating the keys of the shared one would race other tests."""
    with run_test_op(op_config(client_keys)) as running:
        yield running


async def test_jwks_refetch_rule_fetches_once_for_a_rotated_kid_then_validates(rotating_op: TestOP) -> None:
    jwks_fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/jwks"):
            jwks_fetches.append(str(request.url))

    # The cool-down between refetches (30 s) runs on this clock, which the test moves on.
    now = [time.monotonic()]
    async with httpx.AsyncClient(timeout=30, event_hooks={"request": [count]}) as http:
        ciba = CibaClient(
            issuer=rotating_op.issuer,
            client_auth=ClientSecretBasic("poll-basic", SECRET),
            http=http,
            monotonic=lambda: now[0],
        )
        ack, binding = await approved(rotating_op, ciba, "poll")
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        assert (await ciba.validate(result.tokens, binding)).sub == "alice"
        assert len(jwks_fetches) == 1

        new_kids = rotating_op.rotate_keys()
        now[0] += 31  # past the cool-down since that fetch
        ack, binding = await approved(rotating_op, ciba, "poll")
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        assert jwt.get_unverified_header(result.tokens.id_token.get_secret_value())["kid"] in new_kids
        assert (await ciba.validate(result.tokens, binding)).sub == "alice"
        assert len(jwks_fetches) == 2  # exactly one refetch for the new kid

        # Rotated again within the cool-down: no fetch, the unknown kid is refused as such.
        rotating_op.rotate_keys()
        ack, binding = await approved(rotating_op, ciba, "poll")
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        with pytest.raises(KeyNotFound):
            await ciba.validate(result.tokens, binding)
        assert len(jwks_fetches) == 2

"""What binds a token response to its request, proven against a STOCK oidc-provider.

The test OP (server.mjs) runs with TEST_OP_STOCK=1: acknowledgements and ID tokens exactly as
oidc-provider issues them, so no `urn:openid:params:jwt:claim:auth_req_id` claim in poll or ping
mode. The OP's `replay_tokens` fault plays whoever can substitute the token endpoint's answer:
it returns the token response of an earlier request instead of ours. Each test states, in its
name, one line of docs/security/token-binding.md (what binds tokens to their request, per mode).
Push mode, which oidc-provider does not implement, is covered by tests/e2e/test_ping_push.py
(the claim is required there: CIBA §10.3.1).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest

from temporal_ciba.ciba import (
    AUTH_REQ_ID_CLAIM,
    Acknowledgement,
    CibaClient,
    ClientSecretBasic,
    Granted,
    TokenRejected,
    TokenResponse,
    ValidationPolicy,
)
from tests.support.op import TestOP, run_test_op
from tests.support.protocol import DETAILS, MODES, approved
from tests.support.stack import SECRET, ClientKey, TlsFiles, op_config
from tests.support.temporal import wait_for


@pytest.fixture(scope="module")
def stock_op(client_keys: dict[str, ClientKey], callback: str, tls: TlsFiles) -> Iterator[TestOP]:
    """oidc-provider as shipped (TEST_OP_STOCK=1), with a poll and a ping client.

    The ping goes to the callback service, which refuses it (these requests belong to no workflow):
    the decision stands and the token endpoint answers as in poll mode, which is what ping mode
    relies on."""
    config = op_config(client_keys, ping_endpoint=callback, idTokenBindingClaims=True)
    env = {"NODE_EXTRA_CA_CERTS": str(tls.ca), "TEST_OP_STOCK": "1"}
    with run_test_op(config, env=env) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults_left_on_the_stock_op(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stock_op" in request.fixturenames:
        request.getfixturevalue("stock_op").set_faults()


@asynccontextmanager
async def ciba_client(op: TestOP, mode: str, policy: ValidationPolicy | None = None) -> AsyncIterator[CibaClient]:
    auth = ClientSecretBasic(MODES[mode], SECRET)
    async with CibaClient(issuer=op.issuer, client_auth=auth, delivery_mode=mode, policy=policy) as ciba:  # type: ignore[arg-type]
        yield ciba


async def redeem(ciba: CibaClient, ack: Acknowledgement) -> TokenResponse:
    result = await ciba.request_token(ack.auth_req_id)
    assert isinstance(result, Granted)
    return result.tokens


async def replayed(op: TestOP, ciba: CibaClient, earlier: Acknowledgement, ack: Acknowledgement) -> TokenResponse:
    """Our token request answered with the earlier request's token response."""
    op.set_faults({"type": "replay_tokens", "auth_req_id": ack.auth_req_id, "from": earlier.auth_req_id})
    tokens = await redeem(ciba, ack)
    assert tokens.id_token.get_secret_value() == op.issued()[earlier.auth_req_id]["id_token"]
    return tokens


def id_token_claims(tokens: TokenResponse) -> dict[str, Any]:
    return jwt.decode(tokens.id_token.get_secret_value(), options={"verify_signature": False})


@pytest.mark.parametrize("mode", list(MODES))
async def test_stock_op_binds_tokens_only_through_the_token_endpoint_exchange(stock_op: TestOP, mode: str) -> None:
    async with ciba_client(stock_op, mode) as ciba:
        ack, binding = await approved(stock_op, ciba, mode)
        tokens = await redeem(ciba, ack)
        # No claim names the request: the response is ours because the OP answered our auth_req_id.
        assert AUTH_REQ_ID_CLAIM not in id_token_claims(tokens)
        assert (await ciba.validate(tokens, binding)).sub == "alice"


@pytest.mark.parametrize("mode", list(MODES))
async def test_stock_op_replay_of_an_identical_fresh_request_is_not_detectable(stock_op: TestOP, mode: str) -> None:
    # The limit docs/security/token-binding.md states: without the claim, a response to another identical request,
    # issued within the clock leeway, validates. Only the TLS exchange with the OP's token
    # endpoint (our auth_req_id in, its answer out) excludes it.
    async with ciba_client(stock_op, mode) as ciba:
        earlier, _ = await approved(stock_op, ciba, mode)
        await redeem(ciba, earlier)
        ack, binding = await approved(stock_op, ciba, mode)
        tokens = await replayed(stock_op, ciba, earlier, ack)
        assert (await ciba.validate(tokens, binding)).sub == "alice"


@pytest.mark.parametrize("mode", list(MODES))
async def test_stock_op_replay_of_a_request_issued_before_ours_is_rejected(stock_op: TestOP, mode: str) -> None:
    # With no leeway, "issued before our request was sent" is exact to the second.
    async with ciba_client(stock_op, mode, ValidationPolicy(leeway_seconds=0)) as ciba:
        earlier, _ = await approved(stock_op, ciba, mode)
        issued_at = id_token_claims(await redeem(ciba, earlier))["iat"]
        await wait_for(lambda: time.time() >= issued_at + 1, what="the clock to pass the earlier token's iat")
        ack, binding = await approved(stock_op, ciba, mode)
        tokens = await replayed(stock_op, ciba, earlier, ack)
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(tokens, binding)
        assert caught.value.code == "iat_before_request"


@pytest.mark.parametrize("mode", list(MODES))
async def test_stock_op_replay_of_another_action_is_rejected(stock_op: TestOP, mode: str) -> None:
    other_action = [{**DETAILS[0], "creditorName": "Mallory Ltd"}]
    async with ciba_client(stock_op, mode) as ciba:
        earlier, _ = await approved(stock_op, ciba, mode, authorization_details=other_action)
        await redeem(ciba, earlier)
        ack, binding = await approved(stock_op, ciba, mode)
        tokens = await replayed(stock_op, ciba, earlier, ack)
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(tokens, binding)
        assert caught.value.code == "authorization_details_mismatch"


@pytest.mark.parametrize("mode", list(MODES))
async def test_required_auth_req_id_claim_refuses_every_stock_op_token(stock_op: TestOP, mode: str) -> None:
    # CIBA_REQUIRE_AUTH_REQ_ID_CLAIM is for an OP that offers the claim; against a stock one it
    # refuses every approval (and says why), so it cannot be switched on by mistake unnoticed.
    async with ciba_client(stock_op, mode, ValidationPolicy(require_auth_req_id_claim=True)) as ciba:
        ack, binding = await approved(stock_op, ciba, mode)
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(await redeem(ciba, ack), binding)
        assert caught.value.code == "auth_req_id_missing"


@pytest.mark.parametrize("mode", list(MODES))
async def test_op_with_the_claim_and_it_required_rejects_the_identical_fresh_replay(op: TestOP, mode: str) -> None:
    # The same replay as above, against the OP configured to add the claim (every mode).
    async with ciba_client(op, mode, ValidationPolicy(require_auth_req_id_claim=True)) as ciba:
        earlier, _ = await approved(op, ciba, mode)
        await redeem(ciba, earlier)
        ack, binding = await approved(op, ciba, mode)
        op.set_faults({"type": "replay_tokens", "auth_req_id": ack.auth_req_id, "from": earlier.auth_req_id})
        tokens = await redeem(ciba, ack)
        assert id_token_claims(tokens)[AUTH_REQ_ID_CLAIM] == earlier.auth_req_id
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(tokens, binding)
        assert caught.value.code == "auth_req_id_mismatch"
        # Our own response, not replayed, passes the required claim.
        own, own_binding = await approved(op, ciba, mode)
        assert (await ciba.validate(await redeem(ciba, own), own_binding)).sub == "alice"

"""DPoP (RFC 9449) end to end.

oidc-provider with a client registered for DPoP-bound access tokens, with and without server nonces,
the real worker and workflow, and the payment API checking the proof against the token's `cnf.jkt`."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from temporal_ciba._settings import OPSettings
from temporal_ciba.ciba._dpop import DPoPKey
from temporal_ciba.crypto import DPoPKeys
from temporal_ciba_examples.payment_agent.models import PaymentAgentResult, action_digest
from tests.support.flows import INVOICE, ROTATE_KEYS, approval_handle, pending_auth_req_id, start_agent, start_approval
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.policy_examples import pay_by_policy
from tests.support.pydantic_ai_agent_flows import pay_with_the_example
from tests.support.stack import (
    ACCOUNTS,
    SECRET,
    TOKEN_KEY,
    introspect,
    payment_api_client,
    payments,
    run_payment_api,
    running_worker,
)
from tests.support.temporal import DevServer

DPOP_CLIENT = "dpop-agent"


@pytest.fixture(scope="module", params=["nonces", "no-nonces"])
def dpop_op(request: pytest.FixtureRequest) -> Iterator[TestOP]:
    agent = ciba_client(DPOP_CLIENT, client_secret=SECRET, dpop_bound_access_tokens=True)
    resource_server = payment_api_client()
    config = {
        "clients": [agent, resource_server],
        "accounts": ACCOUNTS,
        "ackInterval": 1,
        "dpopNonces": request.param == "nonces",
        **TEST_ROUTES,
    }
    with run_test_op(config) as running:
        yield running


@pytest.fixture(scope="module")
def dpop_payment_api(dpop_op: TestOP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_payment_api(
        dpop_op, tmp_path_factory.mktemp("dpop-payment-api"), PAYMENT_API_AGENT_CLIENT_IDS=DPOP_CLIENT
    ) as url:
        yield url


def dpop_settings(op: TestOP, **overrides: object) -> OPSettings:
    fields: dict[str, object] = {"issuer": op.issuer, "client_id": DPOP_CLIENT, "client_secret": SECRET, "dpop": True}
    return OPSettings(**{**fields, **overrides})  # type: ignore[arg-type]


async def test_dpop_bound_tokens_pay_with_a_proof_of_the_key(
    temporal_client: Client, temporal_server: DevServer, dpop_op: TestOP, dpop_payment_api: str
) -> None:
    async with running_worker(temporal_server, dpop_settings(dpop_op), dpop_payment_api) as worker:
        agent = await start_agent(temporal_client, worker, expected_subject="alice")
        auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
        dpop_op.approve(auth_req_id)
        result = await agent.result()
    assert isinstance(result, PaymentAgentResult)
    assert result.outcome.status == "approved" and result.outcome.action_digest == action_digest(INVOICE)
    assert result.receipt is not None
    (paid,) = payments(dpop_payment_api, agent.id)
    assert paid["payment_id"] == result.receipt.payment_id
    assert dpop_op.issued()[auth_req_id]["token_type"] == "DPoP"


async def test_the_same_token_without_its_proof_does_not_pay(
    temporal_client: Client, temporal_server: DevServer, dpop_op: TestOP, dpop_payment_api: str
) -> None:
    """What a thief of the access token gets: nothing, as a bearer token or with a proof of another key."""
    async with running_worker(temporal_server, dpop_settings(dpop_op), dpop_payment_api) as worker:
        handle = await start_approval(temporal_client, worker.task_queue, ROTATE_KEYS)
        auth_req_id = await pending_auth_req_id(handle)
        dpop_op.approve(auth_req_id)
        assert (await handle.result()).status == "approved"
    token = dpop_op.issued()[auth_req_id]["access_token"]
    # The OP bound the token to the approval's key, the one every worker derives from the token key.
    key = DPoPKeys(base64.b64decode(TOKEN_KEY)).for_approval(auth_req_id)
    assert introspect(dpop_op, token)["cnf"] == {"jkt": key.thumbprint}
    body = {**INVOICE.model_dump(), "action_digest": action_digest(INVOICE)}
    url = dpop_payment_api + "/payments"
    as_bearer = httpx.post(
        url, json=body, headers={"authorization": f"Bearer {token}", "idempotency-key": "thief-1-key"}
    )
    assert as_bearer.status_code == 401 and as_bearer.json()["error"] == "invalid_token"
    other_key = DPoPKeys(b"\x01" * 32).for_approval(auth_req_id)
    with_other_key = _post_with_proof(url, body, token, other_key, "thief-2-key")
    assert with_other_key.status_code == 401 and with_other_key.json()["error"] == "invalid_token"


def _post_with_proof(
    url: str, body: dict[str, object], token: str, key: DPoPKey, idempotency_key: str
) -> httpx.Response:
    proof = key.proof(htm="POST", htu=url, now=time.time(), access_token=token)
    headers = {"authorization": f"DPoP {token}", "dpop": proof, "idempotency-key": idempotency_key}
    return httpx.post(url, json=body, headers=headers)


async def test_the_policy_example_pays_with_a_proof_of_the_key(
    temporal_server: DevServer, dpop_op: TestOP, dpop_payment_api: str
) -> None:
    # pay_by_policy builds its own payment client: it presents the DPoP-bound token as the
    # worker's PaymentAgentPlugin does (without the proof the API answers 401 and nothing is paid).
    settings = {"CIBA_CLIENT_ID": DPOP_CLIENT, "CIBA_DPOP": "true"}
    paid = await pay_by_policy(
        "500.00", 1, server=temporal_server, op=dpop_op, payment_api=dpop_payment_api, **settings
    )
    [payment] = payments(dpop_payment_api, paid.workflow_id)
    assert payment["client_id"] == DPOP_CLIENT


async def test_the_pydantic_ai_example_pays_with_a_proof_of_the_key(
    temporal_client: Client, temporal_server: DevServer, dpop_op: TestOP, dpop_payment_api: str, tmp_path: Path
) -> None:
    settings = {"CIBA_CLIENT_ID": DPOP_CLIENT, "CIBA_DPOP": "true"}
    log = tmp_path / "example.log"
    payment = await pay_with_the_example(temporal_client, temporal_server, dpop_op, dpop_payment_api, log, **settings)
    assert payment["client_id"] == DPOP_CLIENT

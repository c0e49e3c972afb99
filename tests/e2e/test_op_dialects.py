"""OP dialects end to end.

A real Temporal dev server, the real worker, and the oidc-provider test OP configured as the OPs
people run are: oidc-provider's own binding message rule, a grant that adds identity scopes
(approved) or narrows or widens the scope otherwise (rejected, tokens revoked), login_hint_token and
id_token_hint through the workflow, and the OP error codes invalid_binding_message,
expired_login_hint_token, invalid_scope and unauthorized_client, each pinned to its outcome."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, ApprovalWorkflowInput
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from tests.support.op import TEST_ROUTES, TestOP, ciba_client, run_test_op
from tests.support.stack import ACCOUNTS, SECRET, agent_settings, introspect, payment_api_client, running_worker
from tests.support.temporal import DevServer, wait_for

OIDC_PROVIDER_DEFAULT_RULE = r"^[a-zA-Z0-9-._+/!?#]{1,20}$"
DIGEST = "ab" * 32  # its code, the first 4 base32 characters: "VOV2"
PAYMENT_MESSAGE = "Pay EUR 120.00 to ACME GmbH, code VOV2"
SCOPE = "openid payments"
UNUSED_PAYMENT_API = "http://127.0.0.1:9"  # these approvals pay nothing


@pytest.fixture(scope="module")
def dialect_op() -> Iterator[TestOP]:
    """oidc-provider with its default binding message rule, a client limited to some scopes and
    a client the OP refuses CIBA to."""
    clients = [
        ciba_client("dialect-poll", client_secret=SECRET),
        ciba_client("dialect-scoped", client_secret=SECRET, scope="openid payments"),
        ciba_client("dialect-unauthorized", client_secret=SECRET),
        payment_api_client(),
    ]
    config = {
        "clients": clients,
        "accounts": ACCOUNTS,
        "ackInterval": 1,
        "features": {"ciba": {"validateBindingMessage": None}},
        "unauthorizedClients": ["dialect-unauthorized"],
        **TEST_ROUTES,
    }
    with run_test_op(config) as running:
        yield running


async def _worker(server: DevServer, op: TestOP, **settings: Any) -> AsyncIterator[WorkerSettings]:
    async with running_worker(server, agent_settings(op, **settings), UNUSED_PAYMENT_API) as worker:
        yield worker


@pytest.fixture(scope="module")
async def fitting_worker(temporal_server: DevServer, dialect_op: TestOP) -> AsyncIterator[WorkerSettings]:
    """Knows the OP's rule (as a profile would tell it): fits binding messages to it."""
    async for worker in _worker(
        temporal_server,
        dialect_op,
        client_id="dialect-poll",
        binding_message_max_length=20,
        binding_message_pattern=OIDC_PROVIDER_DEFAULT_RULE,
    ):
        yield worker


@pytest.fixture(scope="module")
async def generic_worker(temporal_server: DevServer, dialect_op: TestOP) -> AsyncIterator[WorkerSettings]:
    """The generic profile: sends messages as asked (up to 128 characters)."""
    async for worker in _worker(temporal_server, dialect_op, client_id="dialect-poll"):
        yield worker


async def start(client: Client, worker: WorkerSettings, **request: Any) -> WorkflowHandle:
    fields = {"binding_message": "Approve-it", "scope": SCOPE, **request}
    if not {"login_hint", "login_hint_token", "id_token_hint"} & set(request):
        fields["login_hint"] = "alice"
    return await client.start_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=ApprovalRequest(**fields)),
        id=f"dialect-{uuid.uuid4().hex[:10]}",
        task_queue=worker.task_queue,
    )


async def pending(op: TestOP, approval: WorkflowHandle) -> dict[str, Any]:
    async def seen() -> dict[str, Any] | None:
        state = await approval.query(CibaApprovalWorkflow.status)
        if state.status != "pending":
            return None
        return next((r for r in op.requests() if r["auth_req_id"] == state.auth_req_id), None)

    return await wait_for(seen, what="the approval to be pending at the OP")


def introspected_active(op: TestOP, auth_req_id: str) -> bool:
    return bool(introspect(op, op.issued()[auth_req_id]["access_token"])["active"])


async def test_the_op_default_binding_message_rule_gets_a_fitted_message(
    temporal_client: Client, fitting_worker: WorkerSettings, dialect_op: TestOP
) -> None:
    approval = await start(temporal_client, fitting_worker, binding_message=PAYMENT_MESSAGE, action_digest=DIGEST)
    seen = await pending(dialect_op, approval)
    assert seen["binding_message"] == "Pay-EUR-120.00-VOV2"
    state = await approval.query(CibaApprovalWorkflow.status)
    assert state.binding_message == PAYMENT_MESSAGE and state.binding_message_sent == "Pay-EUR-120.00-VOV2"
    dialect_op.approve(seen["auth_req_id"])
    outcome: ApprovalOutcome = await approval.result()
    assert outcome.status == "approved" and outcome.sub == "alice"


async def test_a_message_that_cannot_fit_is_an_error_before_anything_is_sent(
    temporal_client: Client, fitting_worker: WorkerSettings, dialect_op: TestOP
) -> None:
    before = len(dialect_op.requests())
    outcome = await (await start(temporal_client, fitting_worker, binding_message=PAYMENT_MESSAGE)).result()
    assert (outcome.status, outcome.error) == ("error", "binding_message_unfit")
    assert len(dialect_op.requests()) == before


async def test_invalid_binding_message_from_the_op_is_an_error(
    temporal_client: Client, generic_worker: WorkerSettings
) -> None:
    outcome = await (await start(temporal_client, generic_worker, binding_message=PAYMENT_MESSAGE)).result()
    assert (outcome.status, outcome.error, outcome.auth_req_id) == ("error", "invalid_binding_message", None)


async def test_an_op_that_adds_identity_scopes_is_approved(
    temporal_client: Client, generic_worker: WorkerSettings, dialect_op: TestOP
) -> None:
    approval = await start(temporal_client, generic_worker)
    seen = await pending(dialect_op, approval)
    dialect_op.approve(seen["auth_req_id"], granted_scope="payments profile email")
    outcome = await approval.result()
    assert (outcome.status, outcome.scope) == ("approved", "openid payments profile email")


@pytest.mark.parametrize(
    "granted_scope,detail",
    [
        ("openid", "not granted: payments"),
        ("payments admin", "not requested: admin"),
        ("payments offline_access", "not requested: offline_access"),
    ],
    ids=["narrowed", "non_identity_scope_added", "offline_access_added"],
)
async def test_an_op_that_narrows_or_adds_another_scope_is_rejected_and_its_tokens_revoked(
    temporal_client: Client, generic_worker: WorkerSettings, dialect_op: TestOP, granted_scope: str, detail: str
) -> None:
    approval = await start(temporal_client, generic_worker)
    seen = await pending(dialect_op, approval)
    dialect_op.approve(seen["auth_req_id"], granted_scope=granted_scope)
    outcome = await approval.result()
    assert (outcome.status, outcome.error) == ("rejected", "scope_mismatch")
    assert detail in outcome.reason and outcome.sealed_access_token is None
    assert not introspected_active(dialect_op, seen["auth_req_id"])


async def test_login_hint_token_names_the_approver(
    temporal_client: Client, generic_worker: WorkerSettings, dialect_op: TestOP
) -> None:
    approval = await start(temporal_client, generic_worker, login_hint_token=SecretStr("lht:alice"))
    seen = await pending(dialect_op, approval)
    assert seen["account"] == "alice"
    dialect_op.approve(seen["auth_req_id"])
    assert (await approval.result()).sub == "alice"


async def test_expired_login_hint_token_is_an_error(temporal_client: Client, generic_worker: WorkerSettings) -> None:
    outcome = await (await start(temporal_client, generic_worker, login_hint_token=SecretStr("expired"))).result()
    assert (outcome.status, outcome.error) == ("error", "expired_login_hint_token")


async def test_id_token_hint_pins_the_approver(
    temporal_client: Client, generic_worker: WorkerSettings, dialect_op: TestOP
) -> None:
    first = await start(temporal_client, generic_worker, login_hint="alice")
    seen = await pending(dialect_op, first)
    dialect_op.approve(seen["auth_req_id"])
    assert (await first.result()).status == "approved"
    id_token = dialect_op.issued()[seen["auth_req_id"]]["id_token"]

    second = await start(temporal_client, generic_worker, id_token_hint=SecretStr(id_token))
    seen = await pending(dialect_op, second)
    assert seen["account"] == "alice"
    dialect_op.approve(seen["auth_req_id"], as_account="bob")  # anyone else answering is refused
    outcome = await second.result()
    assert (outcome.status, outcome.error) == ("rejected", "sub_mismatch")

    third = await start(temporal_client, generic_worker, id_token_hint=SecretStr(id_token))
    seen = await pending(dialect_op, third)
    dialect_op.approve(seen["auth_req_id"])
    outcome = await third.result()
    assert (outcome.status, outcome.sub, outcome.subject_pinned) == ("approved", "alice", True)


async def test_invalid_scope_is_an_error(
    temporal_client: Client, temporal_server: DevServer, dialect_op: TestOP
) -> None:
    async for worker in _worker(temporal_server, dialect_op, client_id="dialect-scoped"):
        outcome = await (await start(temporal_client, worker, scope="openid email")).result()
        assert (outcome.status, outcome.error) == ("error", "invalid_scope")


async def test_unauthorized_client_is_an_error(
    temporal_client: Client, temporal_server: DevServer, dialect_op: TestOP
) -> None:
    async for worker in _worker(temporal_server, dialect_op, client_id="dialect-unauthorized"):
        outcome = await (await start(temporal_client, worker)).result()
        assert (outcome.status, outcome.error) == ("error", "unauthorized_client")


async def test_a_profile_with_one_rule_overridden(
    temporal_client: Client, temporal_server: DevServer, dialect_op: TestOP
) -> None:
    """The keycloak profile (its character set, no push) with this OP's shorter length.

    The message fits both, and the identity scopes Keycloak adds to a grant are approved."""
    async for worker in _worker(
        temporal_server, dialect_op, client_id="dialect-poll", op_profile="keycloak", binding_message_max_length=20
    ):
        approval = await start(temporal_client, worker, binding_message=PAYMENT_MESSAGE, action_digest=DIGEST)
        seen = await pending(dialect_op, approval)
        assert seen["binding_message"] == "Pay-EUR-120.00-VOV2"
        dialect_op.approve(seen["auth_req_id"], granted_scope="payments profile email")
        outcome = await approval.result()
        assert (outcome.status, outcome.scope) == ("approved", "openid payments profile email")

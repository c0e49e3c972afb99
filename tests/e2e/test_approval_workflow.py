"""The approval workflow end to end.

A real Temporal dev server, the real worker, the oidc-provider OP, and the payment API that
introspects tokens at the OP."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.worker import Replayer

from temporal_ciba._models import ApprovalRequest, ApprovalState, ApprovalWorkflowInput
from temporal_ciba._plugin import with_encryption
from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba_examples.payment_agent.models import PaymentAgentResult, action_digest
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.support.flows import (
    INVOICE,
    ROTATE_KEYS,
    approval_handle,
    pending_auth_req_id,
    start_agent,
    start_approval,
)
from tests.support.op import TestOP
from tests.support.stack import PAYLOAD_KEY, SECRET, payments
from tests.support.temporal import DevServer, raw_history_bytes, wait_for


async def test_approve_pays_exactly_once(
    temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    agent = await start_agent(temporal_client, worker, acr_values="urn:example:acr:mfa", expected_subject="alice")
    approval = approval_handle(temporal_client, agent)
    auth_req_id = await pending_auth_req_id(approval)

    # What operators see while it waits: the query, the search attributes, the current details.
    state = await approval.query(CibaApprovalWorkflow.status)
    assert state.binding_message.startswith("Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH, code ")
    attributes = (await approval.describe()).typed_search_attributes
    assert attributes.get(CIBA_STATUS) == "pending"
    assert attributes.get(CIBA_AUTH_REQ_ID) == auth_req_id
    assert attributes.get(CIBA_DEADLINE) == state.deadline
    metadata = await approval.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert (
        "pending" in details
        and "Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH" in details
        and auth_req_id in details
    )
    assert f"`IBAN {INVOICE.creditor_iban}`" in details  # the agent's own summary, not a generic listing

    op.approve(auth_req_id)
    result = await agent.result()
    assert isinstance(result, PaymentAgentResult)
    outcome = result.outcome
    assert outcome.status == "approved" and outcome.sub == "alice" and outcome.acr == "urn:example:acr:mfa"
    assert outcome.action_digest == action_digest(INVOICE)
    assert outcome.authorization_details and outcome.authorization_details[0]["creditorName"] == "ACME GmbH"
    assert result.receipt is not None and not result.receipt.duplicate
    recorded = payments(payment_api, agent.id)
    assert len(recorded) == 1 and recorded[0]["payment_id"] == result.receipt.payment_id
    assert recorded[0]["sub"] == "alice"
    assert (await approval.describe()).typed_search_attributes.get(CIBA_STATUS) == "approved"

    # The recorded histories replay deterministically with the current workflow code.
    replayer = Replayer(
        workflows=[PaymentAgentWorkflow, CibaApprovalWorkflow],
        data_converter=with_encryption(None, base64.b64decode(PAYLOAD_KEY)),
    )
    for handle in (agent, approval):
        await replayer.replay_workflow(await handle.fetch_history())


async def test_no_secret_in_raw_history(
    temporal_client: Client, temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    agent = await start_agent(temporal_client, worker)
    approval = approval_handle(temporal_client, agent)
    auth_req_id = await pending_auth_req_id(approval)
    op.approve(auth_req_id)
    assert (await agent.result()).outcome.approved
    issued = op.issued()[auth_req_id]
    # A client with no codec reads history as it is stored.
    plain = await Client.connect(temporal_server.address)
    raw = b""
    for handle in (plain.get_workflow_handle(agent.id), plain.get_workflow_handle(approval.id)):
        raw += await raw_history_bytes(handle)
    secrets = [issued["access_token"], issued["id_token"], SECRET, PAYLOAD_KEY]
    secrets += [issued["refresh_token"]] if "refresh_token" in issued else []
    assert all(secret.encode() not in raw for secret in secrets)
    assert b"ACME" not in raw and b"alice" not in raw  # payloads are ciphertext, not just tokens
    assert raw.count(b'"encrypted": true') >= 10  # the inputs, results and signals, each sealed
    assert auth_req_id.encode() in raw  # a search attribute: readable by design, so the read decodes


async def test_deny_pays_nothing(temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str) -> None:
    agent = await start_agent(temporal_client, worker)
    op.deny(await pending_auth_req_id(approval_handle(temporal_client, agent)))
    result = await agent.result()
    assert result.outcome.status == "denied" and result.outcome.error == "access_denied"
    assert result.receipt is None and payments(payment_api, agent.id) == []


async def test_expiry_pays_nothing(temporal_client: Client, worker: WorkerSettings, payment_api: str) -> None:
    agent = await start_agent(temporal_client, worker, requested_expiry=2)
    result = await agent.result()
    assert result.outcome.status == "expired"
    assert result.receipt is None and payments(payment_api, agent.id) == []


async def test_unknown_user_is_an_error(temporal_client: Client, worker: WorkerSettings) -> None:
    outcome = await temporal_client.execute_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=ApprovalRequest(login_hint="nobody", binding_message="Reset account")),
        id=f"approval-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    assert outcome.status == "error" and outcome.error == "unknown_user_id"
    assert outcome.auth_req_id is None


async def test_cancel_while_pending(temporal_client: Client, worker: WorkerSettings, op: TestOP) -> None:
    handle = await start_approval(temporal_client, worker.task_queue, ROTATE_KEYS)
    auth_req_id = await pending_auth_req_id(handle)
    await handle.cancel()
    # Poll mode's token requests are one activity's, which hears the cancellation with a
    # heartbeat's answer (every 16 s at most) and ends before the approval does.
    outcome = await asyncio.wait_for(handle.result(), timeout=40)
    assert outcome.status == "cancelled" and outcome.auth_req_id == auth_req_id
    assert (await handle.describe()).typed_search_attributes.get(CIBA_STATUS) == "cancelled"
    # Approving now changes nothing: nobody asks for the tokens any more. The workflow is
    # closed, and its history shows no token request scheduled after the cancellation.
    polls = len(op.token_requests(auth_req_id))
    op.approve(auth_req_id)
    assert (await handle.describe()).close_time is not None
    events = [event.event_type for event in (await handle.fetch_history()).events]
    cancelled_at = events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in events[cancelled_at:]
    assert len(op.token_requests(auth_req_id)) == polls


@pytest.mark.parametrize("forgery", ["sub_of_another_user", "tokens_of_another_request"])
async def test_tokens_that_fail_validation_are_rejected(
    temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str, forgery: str
) -> None:
    agent = await start_agent(temporal_client, worker, expected_subject="alice")
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    if forgery == "sub_of_another_user":
        op.approve(auth_req_id, as_account="bob")
        expected_error, received_from = "sub_mismatch", auth_req_id
    else:
        other = await start_agent(temporal_client, worker)
        other_auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, other))
        op.set_faults({"type": "replay_tokens", "auth_req_id": auth_req_id, "from": other_auth_req_id})
        op.approve(other_auth_req_id)
        await other.result()
        op.approve(auth_req_id)
        expected_error, received_from = "auth_req_id_mismatch", other_auth_req_id
    result = await agent.result()
    assert result.outcome.status == "rejected" and result.outcome.error == expected_error
    assert result.outcome.sealed_access_token is None and result.outcome.sub is None
    assert result.receipt is None and payments(payment_api, agent.id) == []
    # The tokens we received and refused were revoked at the OP.
    issued = op.issued()[received_from]
    async with httpx_client() as http:
        introspection = await http.post(
            op.issuer + "/token/introspection", data={"token": issued["access_token"]}, auth=("payment-api", SECRET)
        )
    assert introspection.json()["active"] is False


def httpx_client():  # type: ignore[no-untyped-def]
    import httpx

    return httpx.AsyncClient(timeout=10)


async def test_status_query_and_list(temporal_client: Client, worker: WorkerSettings, op: TestOP) -> None:
    handle = await start_approval(
        temporal_client, worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Open the vault")
    )
    auth_req_id = await pending_auth_req_id(handle)
    state: ApprovalState = await handle.query(CibaApprovalWorkflow.status)
    assert state.status == "pending" and state.login_hint == "alice"
    # Every poll the workflow counts reached the OP.
    assert state.polls <= len(op.token_requests(auth_req_id))

    async def listed() -> bool:
        query = f"CibaStatus = 'pending' AND CibaAuthReqId = '{auth_req_id}'"
        return [execution.id async for execution in temporal_client.list_workflows(query)] == [handle.id]

    await wait_for(listed, what="visibility to list the pending approval")
    op.deny(auth_req_id)
    assert (await handle.result()).status == "denied"
    final: ApprovalState = await handle.query(CibaApprovalWorkflow.status)
    assert final.outcome is not None and final.outcome.status == "denied"
    # The query's answer is plain JSON that reads back as the same state.
    assert ApprovalState.model_validate_json(json.dumps(final.model_dump(mode="json"))) == final

"""History is confidential and authentic.

The real worker refuses payloads that are not encrypted under its key, and ciphertext copied from
one workflow into another, and no workflow task fails for them: a workflow started with such
input fails with the codec's reason before anything runs (no CIBA request reaches the OP), and
such a signal is dropped while the approval goes on to its outcome."""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from temporal_ciba._plugin import PAYLOAD_REFUSED
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import DELIVER_SIGNAL, NOTIFY_SIGNAL, CibaApprovalWorkflow
from temporal_ciba_examples.payment_agent.models import PaymentAgentInput
from tests.support.flows import (
    INVOICE,
    ROTATE_KEYS,
    approval_handle,
    pending_auth_req_id,
    start_agent,
    start_approval,
)
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for


async def failed_tasks(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        event.workflow_task_failed_event_attributes.failure.message
        for event in history.events
        if event.HasField("workflow_task_failed_event_attributes")
    ]


async def refused(handle: WorkflowHandle, words: str) -> str:
    """The workflow failed (not its task) with the codec's reason, which has `words` in it."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == PAYLOAD_REFUSED, cause
    assert words in cause.message, cause.message
    assert await failed_tasks(handle) == []
    return cause.message


async def dropped(approval: WorkflowHandle, count: int) -> bool:
    state = await approval.query(CibaApprovalWorkflow.status)
    return state.dropped_notifications >= count


def requests_for(op: TestOP, text: str) -> list[dict[str, object]]:
    return [r for r in op.requests() if text in json.dumps(r)]


async def plain_client(server: DevServer) -> Client:
    return await Client.connect(server.address)  # no codec, no key: what `temporal` CLI users have


async def test_an_agent_started_with_plaintext_input_does_nothing(
    temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    reference = f"PLAIN-{uuid.uuid4().hex[:8]}"
    agent_input = PaymentAgentInput(action=INVOICE.model_copy(update={"reference": reference}), approver="alice")
    handle = await (await plain_client(temporal_server)).start_workflow(
        "PaymentAgentWorkflow",
        agent_input.model_dump(mode="json"),
        id=f"plain-agent-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    await refused(handle, "not encrypted")
    assert requests_for(op, reference) == []  # no prompt on anyone's phone


async def test_a_plaintext_signal_is_dropped_and_the_approval_is_approved(
    temporal_client: Client, temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    """`temporal workflow signal --name ciba.notify --input '{"auth_req_id":"x"}'`, then the approver says yes."""
    approval = await start_approval(temporal_client, worker.task_queue, ROTATE_KEYS)
    auth_req_id = await pending_auth_req_id(approval)
    plain = (await plain_client(temporal_server)).get_workflow_handle(approval.id)
    await plain.signal(NOTIFY_SIGNAL, {"auth_req_id": "x"})
    await plain.signal(DELIVER_SIGNAL, {"auth_req_id": auth_req_id, "error": "access_denied"})
    await wait_for(
        lambda: dropped(approval, 2), timeout=30, what="the worker to drop both signals"
    )  # both reached the worker before the decision
    op.approve(auth_req_id)
    outcome = await approval.result()
    assert outcome.status == "approved", outcome.reason
    assert await failed_tasks(approval) == []


async def test_ciphertext_moved_into_another_workflow_is_refused(
    temporal_client: Client, temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    agent = await start_agent(temporal_client, worker)
    await pending_auth_req_id(approval_handle(temporal_client, agent))
    started = (await agent.fetch_history()).events[0].workflow_execution_started_event_attributes
    [ciphertext] = started.input.payloads
    before = len(op.requests())
    copy = await (await plain_client(temporal_server)).start_workflow(
        "PaymentAgentWorkflow",
        RawValue(Payload(metadata=dict(ciphertext.metadata), data=ciphertext.data)),
        id=f"copied-agent-{uuid.uuid4().hex[:8]}",
        task_queue=worker.task_queue,
    )
    try:
        await refused(copy, "another workflow")
        assert len(op.requests()) == before  # the copy sent no request of its own
    finally:
        await agent.terminate()

"""History is confidential and authentic.

The real worker refuses payloads that are not encrypted under its key, and ciphertext copied from
one workflow into another. In each attack the workflow task fails with the codec's error and nothing
runs: no CIBA request reaches the OP."""

from __future__ import annotations

import json
import uuid

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue

from temporal_ciba._settings import WorkerSettings
from temporal_ciba_examples.payment_agent.models import PaymentAgentInput
from tests.support.flows import INVOICE, approval_handle, pending_auth_req_id, start_agent
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for


async def failed_task_message(handle: WorkflowHandle) -> str | None:
    history = await handle.fetch_history()
    for event in history.events:
        if event.HasField("workflow_task_failed_event_attributes"):
            return event.workflow_task_failed_event_attributes.failure.message
    return None


async def refused(handle: WorkflowHandle, words: str) -> str:
    found = await wait_for(lambda: failed_task_message(handle), timeout=30, what="a failed workflow task")
    assert words in found, found
    return found


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
    try:
        await refused(handle, "not encrypted")
        assert requests_for(op, reference) == []  # no prompt on anyone's phone
    finally:
        await handle.terminate()


async def test_a_plaintext_signal_does_not_reach_the_approval(
    temporal_client: Client, temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    agent = await start_agent(temporal_client, worker)
    approval = approval_handle(temporal_client, agent)
    auth_req_id = await pending_auth_req_id(approval)
    plain = (await plain_client(temporal_server)).get_workflow_handle(approval.id)
    await plain.signal("notify", {"auth_req_id": auth_req_id})
    try:
        await refused(plain, "not encrypted")
    finally:
        await agent.terminate()


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
        await copy.terminate()
        await agent.terminate()

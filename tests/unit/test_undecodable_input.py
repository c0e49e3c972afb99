"""Input the payload key did not seal never fails a workflow task.

A signal whose payload the codec refuses (plaintext, sealed under another key, truncated, with
garbage metadata) is dropped, logged with its name and counted in the approval's state; the
approval goes on. An update with such input is rejected; a workflow started with it fails (not its
task), unless the payload names another key id, which is also what a worker with the wrong key
sees, and there the task fails and retries as before."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.converter import DataConverter, WorkflowSerializationContext
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalState,
    ApprovalWorkflowInput,
    PingNotice,
    PushDelivery,
)
from temporal_ciba._plugin import PAYLOAD_REFUSED, PluginMarker, with_encryption
from temporal_ciba._workflow import DELIVER_SIGNAL, NOTIFY_SIGNAL, STATUS_QUERY, CibaApprovalWorkflow, require_approval
from temporal_ciba.crypto import AesGcmCodec, PayloadDecryptionError
from temporal_ciba.crypto._codec import refusal_marker
from tests.support.scripted_op import GRANTED, ScriptedOP, dropped_lines, start, wait_for_event, wait_pending, worker
from tests.support.workflow_environment import HEARTBEATS_AT_ONCE, KEY

OTHER_KEY = os.urandom(32)


def client_with(env: WorkflowEnvironment, converter: DataConverter) -> Client:
    """The test server's client with another data converter (what `temporal workflow signal` has: none)."""
    return Client(**{**env.client.config(), "data_converter": converter})


async def sealed_for(workflow_id: str, value: Any, key: bytes = KEY) -> Payload:
    """`value` as the codec under `key` seals it for `workflow_id`."""
    [plain] = DataConverter.default.payload_converter.to_payloads([value])
    codec = AesGcmCodec(key).with_context(WorkflowSerializationContext(namespace="default", workflow_id=workflow_id))
    [sealed] = await codec.encode([plain])
    return sealed


async def failed_tasks(handle: WorkflowHandle) -> list[str]:
    """Each failed workflow task's error, with its cause."""
    failures = [
        event.workflow_task_failed_event_attributes.failure
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    return [f"{failure.message}: {failure.cause.message}" for failure in failures]


async def undecodable_signals(env: WorkflowEnvironment, handle: WorkflowHandle) -> int:
    """Send every variant of an undecodable notification to `handle`; how many were sent."""
    plain = client_with(env, DataConverter.default).get_workflow_handle(handle.id)
    other_key = client_with(env, with_encryption(None, OTHER_KEY)).get_workflow_handle(handle.id)
    ping = {"auth_req_id": "req-1"}
    sealed = await sealed_for(handle.id, ping)
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1])
    garbage = Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"\xff\x00`*"}, data=b"x" * 40)
    no_key_id = Payload(metadata={"encoding": b"binary/encrypted"}, data=sealed.data)
    sent = [
        plain.signal(NOTIFY_SIGNAL, ping),  # plaintext, under each name the workflow answers to
        plain.signal("notify", ping),
        plain.signal(DELIVER_SIGNAL, {"auth_req_id": "req-1", "error": "access_denied"}),
        plain.signal("deliver", {"auth_req_id": "req-1", "error": "access_denied"}),
        other_key.signal(NOTIFY_SIGNAL, PingNotice(auth_req_id="req-1")),  # sealed under another key
        other_key.signal(DELIVER_SIGNAL, PushDelivery(auth_req_id="req-1", error="access_denied")),
        plain.signal(NOTIFY_SIGNAL, RawValue(truncated)),
        plain.signal(NOTIFY_SIGNAL, RawValue(garbage)),
        plain.signal(DELIVER_SIGNAL, RawValue(no_key_id)),
    ]
    for signal in sent:
        await signal
    return len(sent)


@pytest.mark.parametrize("mode", ["ping", "push"])
async def test_undecodable_notifications_are_dropped_counted_and_the_approval_goes_on(
    env: WorkflowEnvironment, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode=mode)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        with caplog.at_level(logging.WARNING):
            sent = await undecodable_signals(env, handle)
            # The real notification still counts, whatever came before it.
            if mode == "ping":
                await handle.signal(CibaApprovalWorkflow.ciba_notify, PingNotice(auth_req_id="req-1"))
            else:
                real = PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens")
                await handle.signal(CibaApprovalWorkflow.ciba_deliver, real)
            outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
        metadata = await handle.query("__temporal_workflow_metadata")
    assert outcome.status == "approved", outcome.reason
    assert await failed_tasks(handle) == []
    assert state.dropped_notifications == sent
    assert f"{sent} notification(s) dropped" in metadata.current_details
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped a ")]
    assert len(dropped) == sent
    assert any(
        line.startswith(f"dropped a {NOTIFY_SIGNAL} signal: refused a payload that is not encrypted")
        for line in dropped
    )
    assert any(line.startswith("dropped a deliver signal") for line in dropped)
    assert any("failed authentication" in line for line in dropped)  # the truncated ciphertext


@workflow.defn
class InlineAgent:
    """Asks inline, then waits for `finish`: notifications reach it while nothing waits on them."""

    def __init__(self) -> None:
        self.finished = False

    @workflow.run
    async def run(self) -> ApprovalOutcome:
        outcome = await require_approval(ApprovalRequest(login_hint="alice", binding_message="Approve it"), inline=True)
        await workflow.wait_condition(lambda: self.finished)
        return outcome

    @workflow.signal
    def finish(self) -> None:
        self.finished = True


async def test_an_inline_approval_drops_undecodable_notifications_once_and_so_does_its_caller_after_it(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """While the approval waits, it drops and counts them under the signal's name; after it, the
    caller's handlers log each undecodable one (and nothing else) as dropped."""
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, InlineAgent)
    plain = client_with(env, DataConverter.default)
    async with running:
        agent = await env.client.start_workflow(
            InlineAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await wait_pending(agent)
        chain = (await agent.describe()).raw_description.workflow_execution_info.first_run_id
        with caplog.at_level(logging.WARNING):
            await plain.get_workflow_handle(agent.id).signal(NOTIFY_SIGNAL, {"auth_req_id": "req-1"})
            await plain.get_workflow_handle(agent.id).signal(DELIVER_SIGNAL, {"auth_req_id": "req-1"})
            state = await agent.query(STATUS_QUERY, result_type=ApprovalState)
            while_waiting = dropped_lines(caplog)
            await agent.signal(NOTIFY_SIGNAL, PingNotice(auth_req_id="req-1", first_run_id=chain))
            await wait_for_event(agent, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, count=2)
            caplog.clear()
            await plain.get_workflow_handle(agent.id).signal(NOTIFY_SIGNAL, {"auth_req_id": "req-1"})
            await plain.get_workflow_handle(agent.id).signal(DELIVER_SIGNAL, {"auth_req_id": "req-1"})
            await agent.signal(NOTIFY_SIGNAL, PingNotice(auth_req_id="req-1", first_run_id=chain))
            await agent.signal(DELIVER_SIGNAL, PushDelivery(auth_req_id="req-1", error="access_denied"))
            await agent.signal(InlineAgent.finish)
            outcome = await agent.result()
        after = dropped_lines(caplog)
    assert outcome.status == "approved"
    assert state.dropped_notifications == 2
    refused = "refused a payload that is not encrypted with the payload key"
    assert sorted(while_waiting) == sorted(
        [f"dropped a {NOTIFY_SIGNAL} signal: {refused}", f"dropped a {DELIVER_SIGNAL} signal: {refused}"]
    )
    assert sorted(after) == sorted(while_waiting)


@workflow.defn
class WithUpdate:
    """A workflow with an update and a signal of its own, as an agent has."""

    def __init__(self) -> None:
        self.values: list[str] = []

    @workflow.run
    async def run(self, first: str) -> list[str]:
        self.values.append(first)
        await workflow.wait_condition(lambda: "done" in self.values)
        return self.values

    @workflow.update
    def add(self, value: str) -> str:
        self.values.append(value)
        return value

    @workflow.signal
    def note(self, value: str) -> None:
        self.values.append(value)


def plain_worker(env: WorkflowEnvironment, *workflows: type) -> tuple[Worker, str]:
    """A worker with the SDK's defaults for failures (no failure exception types), as CibaPlugin leaves them."""
    task_queue = f"undecodable-{uuid.uuid4().hex[:8]}"
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=list(workflows),
        interceptors=[PluginMarker()],
        workflow_runner=UnsandboxedWorkflowRunner(),  # this module's imports are not the sandbox's concern
    ), task_queue


async def test_an_undecodable_update_is_rejected_and_a_signal_dropped_the_workflow_goes_on(
    env: WorkflowEnvironment,
) -> None:
    running, task_queue = plain_worker(env, WithUpdate)
    async with running:
        handle = await env.client.start_workflow(
            WithUpdate.run, "first", id=f"upd-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        plain = client_with(env, DataConverter.default).get_workflow_handle(handle.id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await plain.execute_update("add", "forged")
        assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == PAYLOAD_REFUSED
        await plain.signal("note", "forged")
        assert await handle.execute_update(WithUpdate.add, "sealed") == "sealed"
        await handle.signal(WithUpdate.note, "done")
        assert await handle.result() == ["first", "sealed", "done"]
    assert await failed_tasks(handle) == []


async def test_an_approval_started_with_plaintext_input_fails_without_asking_anyone(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = plain_worker(env, CibaApprovalWorkflow)
    plain = client_with(env, DataConverter.default)
    request = ApprovalWorkflowInput(request=ApprovalRequest(login_hint="alice", binding_message="Approve it"))
    async with (
        Worker(
            env.client,
            task_queue=task_queue,
            activities=op.activities,
            max_heartbeat_throttle_interval=HEARTBEATS_AT_ONCE,
        ),
        running,
    ):
        handle = await plain.start_workflow(
            "CibaApprovalWorkflow",
            request.model_dump(mode="json"),
            id=f"plain-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.get_workflow_handle(handle.id).result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == PAYLOAD_REFUSED and "not encrypted" in cause.message
    assert await failed_tasks(handle) == [] and op.asked == []


async def test_a_start_input_under_another_key_fails_the_task_not_the_run(env: WorkflowEnvironment) -> None:
    """What a worker with the wrong CIBA_PAYLOAD_KEY sees: no run may end for it, the task retries."""
    running, task_queue = plain_worker(env, WithUpdate)
    other_key = client_with(env, with_encryption(None, OTHER_KEY))
    async with running:
        handle = await other_key.start_workflow(
            "WithUpdate", "first", id=f"other-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        described = await handle.describe()
        await handle.terminate()
    assert "this codec holds" in (await failed_tasks(handle))[0]
    assert described.status is not None and described.status.name == "RUNNING"


def test_the_converter_refuses_a_marker_for_any_value_but_a_notification() -> None:
    converter = with_encryption(None, KEY).payload_converter
    plaintext = refusal_marker(PayloadDecryptionError("refused a payload that is not encrypted with the payload key"))
    [notice] = converter.from_payloads([plaintext], [PingNotice])
    assert isinstance(notice, PingNotice) and notice.undecodable_reason is not None and notice.auth_req_id == ""
    with pytest.raises(ApplicationError) as refused:
        converter.from_payloads([plaintext], [str])
    assert refused.value.type == PAYLOAD_REFUSED and refused.value.non_retryable
    assert isinstance(refused.value.__cause__, PayloadDecryptionError)
    with pytest.raises(ApplicationError):
        converter.from_payloads([plaintext], None)  # no type hint: still refused
    other_key = refusal_marker(PayloadDecryptionError("payload encrypted with key 'x'", kind="other_key"))
    with pytest.raises(PayloadDecryptionError):
        converter.from_payloads([other_key], [str])
    # Nothing a sender writes makes a decoded notice count as undecodable.
    [decoded] = converter.from_payloads(
        converter.to_payloads([{"auth_req_id": "req-1", "_undecodable": "x", "undecodable_reason": "x"}]), [PingNotice]
    )
    assert decoded.undecodable_reason is None and decoded.auth_req_id == "req-1"

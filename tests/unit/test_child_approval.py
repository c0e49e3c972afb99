"""An approval in its own child workflow: `require_approval(request)` for a request that may wait
longer than INLINE_WAIT_LIMIT (here requested_expiry two hours), where that is the default.

On the time-skipping test server with the scripted activities of tests.support.scripted_op: the
child's id is derived from the caller's (and the action digest), it runs on the caller's task
queue unless told otherwise, it is listed as requesting from its first event, and it is
cancelled with its caller."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, ParentClosePolicy
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.converter import DataConverter, decode_typed_search_attributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from temporal_ciba._approval import static_details, static_summary
from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba._plugin import PASSTHROUGH_MODULES
from temporal_ciba._search_attributes import CIBA_STATUS
from temporal_ciba._workflow import require_approval
from temporal_ciba.crypto._codec import AesGcmCodec
from tests.support.scripted_op import GRANTED, ScriptedOP, worker
from tests.support.workflow_environment import KEY

DIGEST = "ab" * 32


@dataclass
class Ask:
    action_digest: str | None = None
    id: str | None = None
    task_queue: str | None = None


def asked(action_digest: str | None) -> ApprovalRequest:
    return ApprovalRequest(
        login_hint="alice", binding_message="Approve it", action_digest=action_digest, requested_expiry=7200
    )


@workflow.defn(sandboxed=False)
class ChildAgent:
    @workflow.run
    async def run(self, ask: Ask) -> ApprovalOutcome:
        return await require_approval(asked(ask.action_digest), id=ask.id, task_queue=ask.task_queue)


async def ask(env: WorkflowEnvironment, task_queue: str, ask: Ask) -> tuple[ApprovalOutcome, WorkflowHandle]:
    """Run a ChildAgent to its outcome; the outcome and the agent's handle."""
    agent = await env.client.start_workflow(
        ChildAgent.run, ask, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
    )
    return await agent.result(), agent


async def child_start(agent: WorkflowHandle) -> tuple[str, str, int]:
    """The agent's request to start its approval child: (child id, task queue, parent close policy)."""
    async for event in agent.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            started = event.start_child_workflow_execution_initiated_event_attributes
            return started.workflow_id, started.task_queue.name, started.parent_close_policy
    raise AssertionError("the agent started no child")


async def static_metadata(handle: WorkflowHandle) -> list[str]:
    """The static summary and details, decoded as the codec server does (no workflow context:
    the SDK encodes a child's metadata in its parent's context)."""
    metadata = (await handle.describe()).raw_description.execution_config.user_metadata
    decoded = await AesGcmCodec(KEY, require_encryption=False).decode([metadata.summary, metadata.details])
    return DataConverter.default.payload_converter.from_payloads(decoded)


async def test_by_default_the_approval_is_a_child_named_after_the_caller_and_the_action(
    env: WorkflowEnvironment,
) -> None:
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op, ChildAgent)
    async with running:
        outcome, agent = await ask(env, task_queue, Ask(action_digest=DIGEST))
        child_id, child_queue, close_policy = await child_start(agent)
        child = env.client.get_workflow_handle(child_id)
        first = (await child.fetch_history()).events[0].workflow_execution_started_event_attributes
        shown = await static_metadata(child)
    assert outcome.status == "approved" and outcome.workflow_id == child_id
    # A replay or a retry of the caller finds the same approval for the same action.
    assert child_id == f"{agent.id}.approval-{DIGEST[:16]}"
    assert child_queue == task_queue
    # The caller's end cancels its approval: nobody is left waiting on a phone for nothing.
    assert close_policy == ParentClosePolicy.PARENT_CLOSE_POLICY_REQUEST_CANCEL
    # Listed as requesting from its first event, before any workflow task ran.
    assert decode_typed_search_attributes(first.search_attributes).get(CIBA_STATUS) == "requesting"
    # What the UI's list shows, set at the start: readable with no worker running.
    assert shown == [static_summary(asked(DIGEST)), static_details(asked(DIGEST))]


async def test_without_an_action_digest_the_child_id_ends_in_a_random_suffix(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED, GRANTED])
    running, task_queue = worker(env, op, ChildAgent)
    async with running:
        ids = []
        for _ in range(2):
            _, agent = await ask(env, task_queue, Ask())
            child_id, _, _ = await child_start(agent)
            assert re.fullmatch(rf"{re.escape(agent.id)}\.approval-[0-9a-f]{{8}}", child_id), child_id
            ids.append(child_id.rsplit("-", 1)[1])
    assert ids[0] != ids[1]


async def test_an_id_and_a_task_queue_given_are_the_childs(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    agents, agent_queue = worker(env, op, ChildAgent)
    approvals, approval_queue = worker(env, op)
    async with agents, approvals:
        child_id = f"approval-{uuid.uuid4().hex[:8]}"
        outcome, agent = await ask(env, agent_queue, Ask(action_digest=DIGEST, id=child_id, task_queue=approval_queue))
        started = await child_start(agent)
        description = await env.client.get_workflow_handle(child_id).describe()
    assert outcome.status == "approved" and outcome.workflow_id == child_id
    assert started[:2] == (child_id, approval_queue)
    assert description.task_queue == approval_queue


async def test_on_a_worker_without_ciba_plugin_the_caller_fails_at_once_naming_it(env: WorkflowEnvironment) -> None:
    """A worker that registers only the agent (no CibaPlugin, so no CibaApprovalWorkflow, no codec).

    The agent fails, not retried, with a message naming CibaPlugin, instead of a child that no
    worker can run waiting for ever."""
    task_queue = f"no-plugin-{uuid.uuid4().hex[:8]}"
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )
    async with Worker(env.client, task_queue=task_queue, workflows=[ChildAgent], workflow_runner=runner):
        agent = await env.client.start_workflow(
            ChildAgent.run, Ask(DIGEST), id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(agent.result(), 30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "CibaPluginMissing" and cause.non_retryable
    assert "CibaPlugin" in cause.message
    started = [
        e
        async for e in agent.fetch_history_events()
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert started == []  # no child left waiting

"""An approval inline in the caller's workflow (`require_approval(..., inline=True)`).

On the time-skipping test server with the scripted activities of tests.support.scripted_op: the
same outcome, no child workflow, notices taken by the caller (its run chain checked, an early
one kept), the search attributes and the status query on the caller, and a short history."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalState,
    PingNotice,
    PollingPolicy,
    PushDelivery,
)
from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_STATUS
from temporal_ciba._workflow import DELIVER_SIGNAL, NOTIFY_SIGNAL, STATUS_QUERY, require_approval
from tests.support.scripted_op import GRANTED, ScriptedOP, wait_for_event, wait_pending, worker

FALLBACK = 60.0


@workflow.defn(sandboxed=False)
class InlineAgent:
    @workflow.run
    async def run(self) -> ApprovalOutcome:
        polling = PollingPolicy(notification_fallback_interval_seconds=FALLBACK)
        request = ApprovalRequest(login_hint="alice", binding_message="Approve it", polling=polling)
        return await require_approval(request, inline=True)


async def start_agent(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle:
    return await env.client.start_workflow(InlineAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue)


async def ping(handle: WorkflowHandle, *, first_run_id: str | None = None) -> None:
    description = await handle.describe()
    chain = first_run_id or description.raw_description.workflow_execution_info.first_run_id
    await handle.signal(NOTIFY_SIGNAL, PingNotice(auth_req_id="req-1", first_run_id=chain))


async def test_the_approval_runs_in_the_caller_and_the_caller_holds_the_token(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, InlineAgent)
    async with running:
        agent = await start_agent(env, task_queue)
        # Not the status query: the test server answers queries with workflow tasks of their own.
        await wait_for_event(agent, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)
        await ping(agent)
        outcome = await agent.result()
        description = await agent.describe()
        events = [event async for event in agent.fetch_history_events()]
    assert outcome.status == "approved" and outcome.workflow_id == agent.id
    holder = op.validated[0]
    assert (holder.holder_workflow_id, holder.holder_run_id) == (agent.id, agent.result_run_id)
    types = [event.event_type for event in events]
    assert EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in types
    assert types.count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 2  # pending, outcome
    assert description.typed_search_attributes.get(CIBA_STATUS) == "approved"
    assert description.typed_search_attributes.get(CIBA_AUTH_REQ_ID) == "req-1"
    # The whole history of a workflow that only asks, within its budget of 16 events (every event
    # counted): its start, the request's task (a marker, the pending upsert, the fallback timer), the ping,
    # the redeem's task (the timer cancelled, a marker, the outcome's upsert, the decision
    # record's marker), its end.
    assert len(events) <= 16, "\n".join(EventType.Name(t) for t in types)
    assert types.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 2
    assert len(op.poll_times) == 1


async def test_a_ping_that_overtakes_the_request_is_kept(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    op.answer_send = asyncio.Event()  # the backchannel request's answer waits for it
    running, task_queue = worker(env, op, InlineAgent)
    async with running:
        started = (await env.get_current_time()).timestamp()
        agent = await start_agent(env, task_queue)
        await op.send_started.wait()
        await ping(agent)  # before the workflow knows its auth_req_id
        op.answer_send.set()
        outcome = await agent.result()
    assert outcome.status == "approved"
    assert op.poll_times[0] - started < FALLBACK  # at once, not at the fallback poll


async def test_a_ping_for_another_run_chain_is_ignored(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, InlineAgent)
    async with running:
        agent = await start_agent(env, task_queue)
        await wait_pending(agent)
        pinged = (await env.get_current_time()).timestamp()
        await ping(agent, first_run_id="an-earlier-run-chain")
        outcome = await agent.result()
    assert outcome.status == "approved"
    assert op.poll_times[0] - pinged >= FALLBACK - 1  # only the (jittered) fallback poll


@workflow.defn(sandboxed=False)
class TwoApprovalsAgent:
    """Asks two people at once, both inline: one set of handlers serves both approvals."""

    @workflow.run
    async def run(self) -> list[ApprovalOutcome]:
        polling = PollingPolicy(notification_fallback_interval_seconds=FALLBACK)
        requests = [
            ApprovalRequest(login_hint=who, binding_message="Approve it", polling=polling) for who in ("a", "b")
        ]
        return list(await asyncio.gather(*(require_approval(request, inline=True) for request in requests)))


async def test_two_inline_approvals_in_one_workflow_both_hear_the_ping(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED, GRANTED], interval=5, mode="ping")  # both requests are req-1
    running, task_queue = worker(env, op, TwoApprovalsAgent)
    async with running:
        started = (await env.get_current_time()).timestamp()
        agent = await env.client.start_workflow(
            TwoApprovalsAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await wait_for_event(agent, EventType.EVENT_TYPE_MARKER_RECORDED, count=2)  # both requests sent
        await ping(agent)
        outcomes = await agent.result()
    assert [outcome.status for outcome in outcomes] == ["approved", "approved"]
    # Both asked at once: the second approval's handlers did not replace the first's.
    assert len(op.poll_times) == 2 and max(op.poll_times) - started < FALLBACK


@workflow.defn(sandboxed=False)
class PushedAgent:
    @workflow.run
    async def run(self) -> ApprovalOutcome:
        return await require_approval(ApprovalRequest(login_hint="alice", binding_message="Approve it"), inline=True)


async def test_a_push_reaches_an_inline_approval(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push")
    running, task_queue = worker(env, op, PushedAgent)
    async with running:
        agent = await env.client.start_workflow(
            PushedAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await wait_pending(agent)
        chain = (await agent.describe()).raw_description.workflow_execution_info.first_run_id
        await agent.signal(
            DELIVER_SIGNAL, PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens", first_run_id=chain)
        )
        outcome = await agent.result()
    assert outcome.status == "approved" and op.poll_times == []


@workflow.defn(sandboxed=False)
class AgentWithItsOwnStatus:
    @workflow.run
    async def run(self) -> ApprovalOutcome:
        return await require_approval(ApprovalRequest(login_hint="alice", binding_message="Approve it"), inline=True)

    @workflow.query
    def status(self) -> str:
        return "the agent's own status"


async def test_the_status_query_is_the_approvals_unless_the_workflow_has_its_own(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED, GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, InlineAgent, AgentWithItsOwnStatus)
    async with running:
        plain = await start_agent(env, task_queue)
        own = await env.client.start_workflow(
            AgentWithItsOwnStatus.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        for agent in (plain, own):
            await wait_pending(agent)
        assert (await plain.query("status", result_type=ApprovalState)).status == "pending"
        assert await own.query("status", result_type=str) == "the agent's own status"
        assert (await own.query(STATUS_QUERY, result_type=ApprovalState)).status == "pending"
        for agent in (plain, own):  # both, before awaiting either (time skips while one awaits)
            await ping(agent)
        for agent in (plain, own):
            assert (await agent.result()).status == "approved"


@workflow.defn(sandboxed=False)
class DefaultPlaceAgent:
    @workflow.run
    async def run(self, requested_expiry: int | None, deadline_in: int | None) -> ApprovalOutcome:
        polling = PollingPolicy(notification_fallback_interval_seconds=FALLBACK)
        deadline = workflow.now() + timedelta(seconds=deadline_in) if deadline_in is not None else None
        request = ApprovalRequest(
            login_hint="alice",
            binding_message="Approve it",
            polling=polling,
            requested_expiry=requested_expiry,
            policy_deadline=deadline,
        )
        return await require_approval(request)


@pytest.mark.parametrize(
    ("requested_expiry", "deadline_in", "inline"),
    [
        (None, None, True),
        (3600, None, True),
        (3601, None, False),
        (None, 7200, False),
        (None, 600, True),
        (600, 7200, True),  # the sooner of the two decides
        (7200, 600, True),
    ],
)
async def test_by_default_an_approval_waits_inline_unless_it_may_wait_longer_than_an_hour(
    env: WorkflowEnvironment, requested_expiry: int | None, deadline_in: int | None, inline: bool
) -> None:
    """The default place (INLINE_WAIT_LIMIT): inline, the fastest in every mode; a child, whose
    history continues as new, for a request that may wait longer: its requested_expiry or its
    policy's deadline, whichever is sooner. The inline default is marked
    (compat.INLINE_DEFAULT_PATCH): a run recorded before it replays its child."""
    op = ScriptedOP(env, [GRANTED], interval=5)
    running, task_queue = worker(env, op, DefaultPlaceAgent)
    async with running:
        agent = await env.client.start_workflow(
            DefaultPlaceAgent.run,
            args=[requested_expiry, deadline_in],
            id=f"agent-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        outcome = await agent.result()
        events = [event async for event in agent.fetch_history_events()]
    assert outcome.status == "approved"
    assert (outcome.workflow_id == agent.id) is inline
    types = [event.event_type for event in events]
    assert (EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in types) is inline
    patches = [
        event.SerializeToString()
        for event in events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert any(b"inline-by-default" in patch for patch in patches) is inline

"""An approval on `DecisionPath(redeem=False)` keeps that path for the rest of its run.

A run whose history has no REDEEM_PATCH marker decides that path when it replays on a worker
that knows the patch. The replay tests prove the recorded part replays; these run the rest: the
send, the token request and the validation as activities of their own, a search-attribute
upsert for every phase, the unjittered fallback poll, and no early ping or push kept. On the
time-skipping test server with the scripted activities of tests.support.scripted_op."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._approval import Approval, DecisionPath, Holder
from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalWorkflowInput,
    PingNotice,
    PollingPolicy,
    PushDelivery,
    TokenRequestResult,
)
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.ciba import TransportError
from tests.support.scripted_op import (
    EARLY_SLACK,
    GRANTED,
    LATE_SLACK,
    ScriptedOP,
    gaps,
    start,
    upserted_statuses,
    wait_for_event,
    wait_pending,
    worker,
)
from tests.support.temporal import ActivityStarts


@workflow.defn
class NoRedeemPathApproval(CibaApprovalWorkflow):
    """CibaApprovalWorkflow with its approval on DecisionPath(redeem=False).

    Its signals and queries are CibaApprovalWorkflow's; its approval goes on as a run without the
    REDEEM_PATCH marker does."""

    @workflow.init
    def __init__(self, input: ApprovalWorkflowInput) -> None:
        super().__init__(input)
        info = workflow.info()
        holder = Holder(info.workflow_id, info.run_id)
        self._approval = Approval(input.request, holder=holder, path=DecisionPath(redeem=False))

    @workflow.run
    async def run(self, input: ApprovalWorkflowInput) -> ApprovalOutcome:
        return await self._approval.run()


async def test_it_requests_and_validates_in_activities_of_their_own(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="pending"), GRANTED], interval=5)
    starts = ActivityStarts()
    running, task_queue = worker(env, op, NoRedeemPathApproval, interceptors=[starts])
    async with running:
        handle = await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)
        outcome = await handle.result()
        upserts = await upserted_statuses(handle)
    assert outcome.status == "approved" and outcome.sub == "alice" and outcome.sealed_access_token == "sealed-at"
    assert [(start.activity, start.local) for start in starts.starts] == [
        ("ciba.send_authentication_request", False),
        ("ciba.request_token", False),
        ("ciba.request_token", False),
        ("ciba.validate_tokens", False),
        ("ciba.record_decision", True),
    ]
    (send,) = starts.of("ciba.send_authentication_request")
    assert send.retry_policy is not None and send.retry_policy.maximum_attempts == 5  # then an `error` outcome
    first_request = starts.of("ciba.request_token")[0]
    assert first_request.start_to_close == timedelta(seconds=45)
    assert first_request.schedule_to_close is not None
    assert timedelta(seconds=590) <= first_request.schedule_to_close <= timedelta(seconds=595)
    assert first_request.retry_policy is not None
    assert first_request.retry_policy.initial_interval == timedelta(seconds=5)
    assert first_request.retry_policy.maximum_interval == timedelta(seconds=30)
    [gap] = gaps(op.poll_times)
    assert 5 - EARLY_SLACK <= gap <= 5 + LATE_SLACK and op.token_requests == ["req-1", "req-1"]
    assert upserts == 4  # requesting, pending, validating, approved: every phase


async def test_a_token_request_near_expiry_still_gets_two_attempts(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=40, expires_in=100)
    starts = ActivityStarts()
    running, task_queue = worker(env, op, NoRedeemPathApproval, interceptors=[starts])
    async with running:
        outcome = await (await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)).result()
    assert outcome.status == "approved"
    (request,) = starts.of("ciba.request_token")
    assert request.schedule_to_close == timedelta(seconds=90)  # 60 s were left: two attempts' worth instead


async def test_an_op_unreachable_for_every_attempt_of_the_request_is_an_error(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], send_error="unreachable")
    running, task_queue = worker(env, op, NoRedeemPathApproval)
    async with running:
        outcome = await (await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)).result()
    assert (outcome.status, op.sends, op.poll_times) == ("error", 5, [])  # SEND_RETRY's attempts
    assert outcome.reason.startswith("the OP could not be reached: ") and outcome.reason.endswith("connection refused")


async def test_an_op_unreachable_until_the_deadline_is_an_error(env: WorkflowEnvironment) -> None:
    """A token request failing in transport until the deadline ends as an `error` outcome.

    It is retried, never sooner than the interval (a retry is a token request too, however short
    the OP's interval), until the request's time is up: then an `error` outcome, not a failed
    workflow. (On this path the retries are the server's, on timers the test server skips; a
    local activity's are bounded by the worker's wall clock.)"""
    op = ScriptedOP(env, [], interval=1, expires_in=60)
    op.token_request_error = TransportError("the OP could not be reached: connection refused")
    starts = ActivityStarts()
    running, task_queue = worker(env, op, NoRedeemPathApproval, interceptors=[starts])
    async with running:
        outcome = await (await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)).result()
    assert (outcome.status, outcome.error) == ("error", None)
    assert outcome.reason == "the OP could not be reached before the deadline"
    (request,) = starts.of("ciba.request_token")
    assert request.retry_policy is not None and request.retry_policy.initial_interval == timedelta(seconds=1)
    assert len(op.poll_times) > 2 and min(gaps(op.poll_times)) >= 1 - EARLY_SLACK


async def test_refused_tokens_are_revoked(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="granted", sealed_tokens="forged")])
    running, task_queue = worker(env, op, NoRedeemPathApproval)
    async with running:
        outcome = await (await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)).result()
    assert outcome.status == "rejected" and outcome.error == "iss_mismatch" and op.revoked == ["forged"]


async def test_tokens_that_arrive_after_a_cancellation_are_revoked(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    op.blocking = True
    running, task_queue = worker(env, op, NoRedeemPathApproval)
    async with running:
        handle = await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)
        await op.poll_started.wait()  # a token request is in flight
        await handle.cancel()
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
        op.block_next_poll.set()  # ...and brings back tokens after the cancellation
        outcome = await handle.result()
    assert outcome.status == "cancelled" and outcome.sealed_access_token is None
    assert op.revoked == ["sealed-tokens"] and op.validated == []


async def test_an_early_ping_is_dropped_and_the_fallback_poll_is_not_spread(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    op.answer_send = asyncio.Event()
    running, task_queue = worker(env, op, NoRedeemPathApproval)
    async with running:
        handle = await start(
            env,
            op,
            task_queue,
            workflow_type=NoRedeemPathApproval,
            polling=PollingPolicy(notification_fallback_interval_seconds=60),
        )
        await op.send_started.wait()
        # The OP's ping overtakes its answer to the request: this path has nowhere to keep it.
        await handle.signal(NoRedeemPathApproval.ciba_notify, PingNotice(auth_req_id="req-1"))
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        op.answer_send.set()
        outcome = await handle.result()
    assert outcome.status == "approved" and len(op.poll_times) == 1
    # Only the fallback poll asked, 60 s after the request: not at once, and not spread.
    assert outcome.requested_at is not None
    waited = op.poll_times[0] - outcome.requested_at.timestamp()
    assert 60 - EARLY_SLACK <= waited <= 60 + LATE_SLACK, waited


async def test_only_the_first_push_of_its_own_request_and_chain_counts(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push")
    op.answer_send = asyncio.Event()
    running, task_queue = worker(env, op, NoRedeemPathApproval)
    async with running:
        handle = await start(env, op, task_queue, workflow_type=NoRedeemPathApproval)
        await op.send_started.wait()
        early = PushDelivery(auth_req_id="req-1", sealed_tokens="early")  # this path drops it
        await handle.signal(NoRedeemPathApproval.ciba_deliver, early)
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        op.answer_send.set()
        await wait_pending(handle)
        foreign = PushDelivery(auth_req_id="req-1", sealed_tokens="foreign", first_run_id="another-chain")
        other = PushDelivery(auth_req_id="req-2", sealed_tokens="other")
        for ignored in (foreign, other):
            await handle.signal(NoRedeemPathApproval.ciba_deliver, ignored)
        own = PushDelivery(auth_req_id="req-1", sealed_tokens="own", first_run_id=handle.first_execution_run_id)
        await handle.signal(NoRedeemPathApproval.ciba_deliver, own)
        outcome = await handle.result()
    assert outcome.status == "approved"
    assert [validated.sealed_tokens for validated in op.validated] == ["own"]  # type: ignore[union-attr]
    assert op.verified == []  # this path takes a push as it came: no proof to check

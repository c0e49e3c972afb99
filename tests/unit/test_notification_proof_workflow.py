"""The approval acts on a notification only once an activity has proven the callback made it.

On the time-skipping server with the scripted activities (tests.support.scripted_op: every proof
holds but FORGED_PROOF; the real check is tests/unit/crypto/test_notification_proofs.py). An
unproven push (tokens or error) or ping is dropped, logged and counted; the approval goes on to
the real one."""

from __future__ import annotations

import asyncio
import logging

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._approval.inbox import MAX_EARLY_NOTICES, MAX_WAITING_PUSHES
from temporal_ciba._models import ApprovalState, PingNotice, PushDelivery
from temporal_ciba._workflow import STATUS_QUERY, CibaApprovalWorkflow
from tests.support.scripted_op import (
    FORGED_PROOF,
    GRANTED,
    ScriptedOP,
    dropped_lines,
    start,
    wait_for_event,
    wait_pending,
    worker,
)
from tests.support.temporal import wait_for

DIGEST = "ab" * 32
REAL_PUSH = PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens", proof="from-the-callback")


@pytest.mark.parametrize(
    "forged",
    [
        PushDelivery(auth_req_id="req-1", error="access_denied", proof=FORGED_PROOF),
        PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-by-someone", proof=FORGED_PROOF),
    ],
    ids=["forged_denial", "forged_tokens"],
)
async def test_an_unproven_push_is_dropped_and_the_real_one_decides(
    env: WorkflowEnvironment, forged: PushDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    op = ScriptedOP(env, [], mode="push")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        with caplog.at_level(logging.WARNING):
            await handle.signal(CibaApprovalWorkflow.ciba_deliver, forged)
            await handle.signal(CibaApprovalWorkflow.ciba_deliver, REAL_PUSH)
            outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    assert outcome.status == "approved", outcome.reason
    assert [check.delivery.proof for check in op.verified] == [FORGED_PROOF, REAL_PUSH.proof]
    assert [check.first_run_id for check in op.verified] == [handle.first_execution_run_id] * 2
    assert op.revoked == []  # the forged tokens were never validated, so never revoked
    assert state.dropped_notifications == 1
    assert dropped_lines(caplog) == ["dropped a ciba.deliver signal: the push carries no valid proof from the callback"]


async def once_dropped(handle: WorkflowHandle) -> ApprovalState | None:
    """The approval's state once it has dropped a notification; None before."""
    state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    return state if state.dropped_notifications else None


async def test_a_push_whose_proof_cannot_be_checked_is_dropped(env: WorkflowEnvironment) -> None:
    """A check that keeps failing (a bug, a worker without the activity) proves nothing."""
    op = ScriptedOP(env, [], mode="push")
    op.verification_error = RuntimeError("the proof check is broken")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, REAL_PUSH)
        dropped = await wait_for(lambda: once_dropped(handle), what="the push dropped unproven")
        op.verification_error = None
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, REAL_PUSH)
        outcome = await handle.result()
    assert dropped.status == "pending" and dropped.dropped_notifications == 1
    assert outcome.status == "approved", outcome.reason
    assert len(op.verified) == 4


async def test_a_cancellation_while_a_proof_is_checked_cancels_the_approval(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push")
    op.answer_verification = asyncio.Event()
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, REAL_PUSH)
        await op.verification_started.wait()
        await handle.cancel()
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
        op.answer_verification.set()
        outcome = await handle.result()
    assert outcome.status == "cancelled", outcome.reason
    assert op.validated == []


async def test_a_flood_of_forged_pushes_does_not_crowd_out_the_real_one(env: WorkflowEnvironment) -> None:
    """The line holds MAX_WAITING_PUSHES; a push that finds it full takes the last place, so the
    latest (here the real one) is checked, after the ones in line before it. The pushes arrive
    while no worker runs, so the approval takes them all in one workflow task, in order."""
    op = ScriptedOP(env, [], mode="push")
    forged = PushDelivery(auth_req_id="req-1", error="access_denied", proof=FORGED_PROOF)
    # No sticky cache: the restarted worker takes the next task from the task queue at once.
    running, task_queue = worker(env, op, max_cached_workflows=0)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
    for _ in range(MAX_WAITING_PUSHES + 5):
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, forged)
    await handle.signal(CibaApprovalWorkflow.ciba_deliver, REAL_PUSH)
    restarted, _ = worker(env, op, task_queue=task_queue, max_cached_workflows=0)
    async with restarted:
        outcome = await handle.result()
    assert outcome.status == "approved", outcome.reason
    proofs = [check.delivery.proof for check in op.verified]
    assert proofs == [FORGED_PROOF] * (MAX_WAITING_PUSHES - 1) + [REAL_PUSH.proof]


FORGED_PING = PingNotice(auth_req_id="req-1", proof=FORGED_PROOF)
REAL_PING = PingNotice(auth_req_id="req-1", proof="from-the-callback")


async def test_each_unproven_ping_a_redeem_finds_is_dropped_and_counted(env: WorkflowEnvironment) -> None:
    """Two forged pings (distinct notices) and the real one, checked by one redeem: two dropped."""
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, max_cached_workflows=0)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
    chain = handle.first_execution_run_id
    for ping in (FORGED_PING, FORGED_PING.model_copy(update={"first_run_id": chain}), REAL_PING):
        await handle.signal(CibaApprovalWorkflow.ciba_notify, ping)
    restarted, _ = worker(env, op, task_queue=task_queue, max_cached_workflows=0)
    async with restarted:
        outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    assert outcome.status == "approved"
    assert len(op.redeemed) == 1 and len(op.redeemed[0].notices) == 3
    assert state.dropped_notifications == 2


async def test_an_unproven_ping_asks_the_op_nothing_and_the_real_one_does(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """The forged ping's redeem makes no token request and the wait goes on, on the same request."""
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        with caplog.at_level(logging.WARNING):
            await handle.signal(CibaApprovalWorkflow.ciba_notify, FORGED_PING)
            await wait_for(lambda: once_dropped(handle), what="the forged ping dropped")
        await handle.signal(CibaApprovalWorkflow.ciba_notify, REAL_PING)
        outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    assert dropped_lines(caplog) == ["dropped a ciba.notify signal: the ping carries no valid proof from the callback"]
    assert outcome.status == "approved"
    assert len(op.poll_times) == 1  # one token request: the real ping's
    assert len(op.asked) == 1  # and one backchannel request: the wait went on
    assert state.dropped_notifications == 1 and state.polls == 1


async def test_the_redeem_checks_each_distinct_ping_once_and_a_few_of_them(env: WorkflowEnvironment) -> None:
    """A repeated ping is one notice; after MAX_EARLY_NOTICES distinct ones the rest wait for the
    next redeem, so a flood of forged pings cannot push out the real one that came first. The
    pings arrive while no worker runs, so one workflow task takes them all, in order."""
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op, max_cached_workflows=0)
    async with running:
        handle = await start(env, op, task_queue, action_digest=DIGEST)
        await wait_pending(handle)
    forged = [PingNotice(auth_req_id="req-1", proof=f"forged-{n}") for n in range(MAX_EARLY_NOTICES + 3)]
    for ping in (REAL_PING, REAL_PING, *forged):
        await handle.signal(CibaApprovalWorkflow.ciba_notify, ping)
    restarted, _ = worker(env, op, task_queue=task_queue, max_cached_workflows=0)
    async with restarted:
        outcome = await handle.result()
    assert outcome.status == "approved"
    (redeemed,) = op.redeemed
    assert redeemed.notices == [REAL_PING, *forged[: MAX_EARLY_NOTICES - 1]]
    # The proofs are checked against this run chain, and the tokens sealed to this holder and action.
    assert redeemed.first_run_id == handle.first_execution_run_id
    assert (redeemed.holder_workflow_id, redeemed.action_digest) == (handle.id, DIGEST)

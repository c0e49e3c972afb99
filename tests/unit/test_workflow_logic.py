"""The workflow's own decisions, on the time-skipping test server with scripted activities.

These do not prove the protocol (the e2e tests do, against the real OP); they pin down what
the workflow does with each answer: spacing of polls, slow_down, Retry-After, every final
error, cancellation with tokens in flight, and what survives continue-as-new.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._approval import code, describe_authorization_details
from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalState,
    PingNotice,
    PolicyDecision,
    PollingPolicy,
    PushDelivery,
    RedeemInput,
    RedeemResult,
    RevokeAccessTokenInput,
    TokenRequestResult,
    ValidateTokensInput,
)
from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS
from temporal_ciba._workflow import STATUS_QUERY, CibaApprovalWorkflow, require_approval
from temporal_ciba.records._activity import RECORD_CONFLICT
from tests.support.scripted_op import (
    APPROVAL,
    EARLY_SLACK,
    GRANTED,
    LATE_SLACK,
    ScriptedOP,
    gaps,
    start,
    upserted_fields,
    upserted_statuses,
    wait_for_event,
    wait_pending,
    worker,
    workflow_task_after,
)
from tests.support.temporal import ActivityStarts, time_skipping_environment, wait_for
from tests.support.workflow_environment import KEY


@pytest.fixture
async def own_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for one test, for tests that hold an activity while their workflow goes on.

    After them the shared server was seen to stop skipping time (a held validation left running when
    its workflow ended; early pushes while the send was held)."""
    async with time_skipping_environment(KEY) as environment:
        yield environment


def recorded_once(op: ScriptedOP, outcome: ApprovalOutcome) -> bool:
    """The approval wrote one decision record, of this outcome (its sealed access token kept with it)."""
    return [record.outcome for record in op.recorded] == [outcome]


async def cancel_delivered(handle: WorkflowHandle) -> None:
    await handle.cancel()
    await workflow_task_after(
        handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    )


def assert_spacing(times: list[float], expected: list[float]) -> None:
    actual = gaps(times)
    assert len(actual) == len(expected), f"{len(actual) + 1} polls, expected {len(expected) + 1}: gaps {actual}"
    for gap, wanted in zip(actual, expected, strict=True):
        assert wanted - EARLY_SLACK <= gap <= wanted + LATE_SLACK, f"gaps {actual}, expected about {expected}"


LOST = TokenRequestResult(
    kind="failed", error="grant_lost", reason="tokens were issued but lost before they were recorded"
)


async def test_polls_respect_interval_slow_down_and_retry_after(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(
        env,
        [
            TokenRequestResult(kind="pending"),
            TokenRequestResult(kind="slow_down"),
            TokenRequestResult(kind="pending"),
            TokenRequestResult(kind="retry_later", retry_after_seconds=40),
            TokenRequestResult(kind="pending"),
            GRANTED,
        ],
    )
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert outcome.status == "approved" and outcome.sealed_access_token == "sealed-at"
    # interval 5; +5 after slow_down for every later poll; Retry-After 40 honoured once.
    assert_spacing(op.poll_times, [5, 10, 10, 40, 10])


async def timers(handle: WorkflowHandle) -> list[float]:
    """The seconds of every timer the workflow started, from its history."""
    return [
        event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def test_polls_start_an_interval_apart_however_long_a_request_takes(env: WorkflowEnvironment) -> None:
    """The timer starts when the last request has returned.

    It is shorter by the time that request took, so requests start an interval apart (CIBA §7.3),
    not an interval plus a round trip; a 503 without Retry-After adds nothing to it."""
    answers = [TokenRequestResult(kind="pending"), TokenRequestResult(kind="retry_later"), GRANTED]
    op = ScriptedOP(env, answers, interval=5)
    op.pending_request_seconds = 4.6
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(poll_in="workflow"))
        assert (await handle.result()).status == "approved"
    # The first poll waits the whole interval; each later one 5 - 4.6 s after the last returned.
    assert await timers(handle) == pytest.approx([5, 0.4, 0.4])


@pytest.mark.parametrize(
    "error,status",
    [
        ("access_denied", "denied"),
        ("expired_token", "expired"),
        ("invalid_grant", "error"),
        ("invalid_request", "error"),
        ("invalid_client", "error"),
        (None, "error"),
    ],
)
@pytest.mark.parametrize("poll_in", ["activity", "workflow"])
async def test_final_token_errors(env: WorkflowEnvironment, error: str | None, status: str, poll_in: str) -> None:
    """The same on both of poll mode's paths: the loop in one activity, and the workflow's timers."""
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error=error, reason="the OP said so")])
    running, task_queue = worker(env, op)
    async with running:
        polling = PollingPolicy(poll_in=poll_in)  # type: ignore[arg-type]
        outcome = await (await start(env, op, task_queue, polling=polling)).result()
    assert outcome.status == status and outcome.error == error and len(op.poll_times) == 1
    assert recorded_once(op, outcome)
    # A denial reads as a human line; every other final error keeps the OP's words.
    assert outcome.reason == ("alice denied the request on their device" if status == "denied" else "the OP said so")


async def test_a_final_token_error_without_a_description_still_says_why(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error="invalid_grant")])
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert (outcome.status, outcome.error, outcome.reason) == ("error", "invalid_grant", "the OP ended the request")


async def test_an_approval_is_recorded_once_with_its_sealed_id_token(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
    assert outcome.approved and recorded_once(op, outcome)
    (record,) = op.recorded
    assert record.sealed_id_token == "sealed-id-token" and record.first_run_id == handle.result_run_id
    assert (record.issuer, record.client_id, record.run_id) == ("https://op", "c", handle.result_run_id)
    assert record.request == ApprovalRequest(login_hint="alice", binding_message="Approve it")


async def test_a_record_write_that_fails_is_retried_before_the_outcome_returns(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error="access_denied", reason="no")])
    op.record_failures = [RuntimeError("the store is down")]
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert outcome.status == "denied" and [record.outcome.status for record in op.recorded] == ["denied", "denied"]


async def test_a_conflicting_record_is_not_retried_and_the_outcome_stands(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error="access_denied", reason="no")])
    op.record_failures = [ApplicationError("another decision", type=RECORD_CONFLICT, non_retryable=True)]
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert outcome.status == "denied" and len(op.recorded) == 1


async def test_a_decision_already_on_record_is_the_outcome(env: WorkflowEnvironment) -> None:
    # A worker died after writing this approval's record, before its workflow task completed; the
    # approval decided again (the OP no longer redeems the auth_req_id). The record holds the
    # first decision, an approval with its sealed access token, and that is what returns.
    op = ScriptedOP(env, [LOST])

    def first_decision(given: ApprovalOutcome) -> ApprovalOutcome:
        return given.model_copy(
            update={
                "status": "approved",
                "error": None,
                "reason": "approved by alice",
                "sub": "alice",
                "sealed_access_token": "sealed-access-token",
            }
        )

    op.decision_on_record = first_decision
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    (record,) = op.recorded
    assert record.outcome.error == "grant_lost" and outcome == first_decision(record.outcome)
    assert outcome.sealed_access_token == "sealed-access-token" and state.status == "approved"


@pytest.mark.parametrize("write_fails", [False, True], ids=["written", "conflict"])
async def test_a_cancellation_during_the_record_write_waits_for_the_write_and_the_decision_stands(
    env: WorkflowEnvironment, write_fails: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The record is the decision's evidence: a cancellation delivered while it is written lets
    # the write end (neither abandoned nor tried again). The approval workflow then ends with the
    # decision, as its record says, not cancelled with none (a quorum cancels its remaining
    # approvers once it is decided).
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error="access_denied", reason="no")])
    op.answer_record = asyncio.Event()
    if write_fails:
        op.record_failures = [ApplicationError("another decision", type=RECORD_CONFLICT, non_retryable=True)]
    running, task_queue = worker(env, op)
    with caplog.at_level("ERROR", logger="temporalio.workflow"):
        async with running:
            handle = await start(env, op, task_queue)
            await op.record_started.wait()
            await cancel_delivered(handle)
            op.answer_record.set()
            outcome = await handle.result()
    assert outcome.status == "denied" and len(op.recorded) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    logged = [line for line in errors if line.startswith("decision not recorded: RecordConflict: another decision (")]
    assert len(logged) == (1 if write_fails else 0), errors


async def test_an_inline_approval_cancelled_during_the_record_write_cancels_its_host(
    env: WorkflowEnvironment,
) -> None:
    # Inline, the cancellation is the host's: once the write ends, it goes on.
    op = ScriptedOP(env, [TokenRequestResult(kind="failed", error="access_denied", reason="no")])
    op.answer_record = asyncio.Event()
    running, task_queue = worker(env, op, AskingAgent)
    async with running:
        handle = await env.client.start_workflow(
            AskingAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await op.record_started.wait()
        await cancel_delivered(handle)
        op.answer_record.set()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError) and len(op.recorded) == 1


@pytest.mark.parametrize(
    "description,reason",
    [("refused", "unknown_user_id: refused"), (None, "the OP refused the request")],
    ids=["described", "bare"],
)
async def test_refused_request_is_an_error_outcome(
    env: WorkflowEnvironment, description: str | None, reason: str
) -> None:
    op = ScriptedOP(env, [], send_error="unknown_user_id")
    op.send_error_description = description
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert (outcome.status, outcome.error, outcome.reason, op.poll_times) == ("error", "unknown_user_id", reason, [])
    assert recorded_once(op, outcome) and op.recorded[0].sealed_id_token is None


async def test_an_op_unreachable_for_every_attempt_is_an_error_outcome(env: WorkflowEnvironment) -> None:
    """An OP unreachable for every attempt of the request is an `error` outcome.

    Once the request's retries are spent (a local activity's last failure reaches the workflow as
    its own error, not wrapped in an ActivityError), the outcome is `error`, never a failed
    workflow."""
    op = ScriptedOP(env, [], send_error="unreachable")
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert (outcome.status, op.sends, op.poll_times) == ("error", 5, [])
    assert outcome.reason.startswith("the OP could not be reached"), outcome.reason


async def test_a_policy_deadline_already_past_asks_no_one(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    passed = await env.get_current_time() - timedelta(seconds=1)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, policy_deadline=passed)).result()
    assert (outcome.status, outcome.error, op.sends) == ("expired", None, 0)
    assert outcome.reason == "the policy deadline passed before the request was sent"
    assert recorded_once(op, outcome)


async def test_a_policy_deadline_sooner_than_the_op_expiry_is_the_deadline(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], expires_in=600)
    policy_deadline = await env.get_current_time() + timedelta(seconds=60)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, policy_deadline=policy_deadline)).result()
    assert (outcome.status, outcome.deadline) == ("expired", policy_deadline)


async def test_rejected_tokens_are_revoked(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="granted", sealed_tokens="forged")])
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert outcome.status == "rejected" and outcome.error == "iss_mismatch" and op.revoked == ["forged"]
    assert outcome.reason == "the ID token was issued by another issuer"  # the validator's, not a default
    assert recorded_once(op, outcome) and op.recorded[0].sealed_id_token is None


@pytest.mark.parametrize("poll_in", ["activity", "workflow"])
async def test_a_rejected_redeem_opens_nothing_whatever_it_carries(env: WorkflowEnvironment, poll_in: str) -> None:
    """The verdict decides, not the fields beside it.

    A `rejected` result that also carries claims and a sealed access token is a rejection, and hands
    out neither."""
    op = ScriptedOP(env, [TokenRequestResult(kind="granted", sealed_tokens="rejected-with-claims")])
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, polling=PollingPolicy(poll_in=poll_in))).result()  # type: ignore[arg-type]
    assert (outcome.status, outcome.sub, outcome.sealed_access_token) == ("rejected", None, None)
    assert outcome.reason == "the tokens failed validation"
    assert recorded_once(op, outcome)


async def test_a_cancellation_during_the_redeem_never_hands_out_its_access_token(env: WorkflowEnvironment) -> None:
    # The cancellation reaches the server while the redeem (a local activity) runs: the workflow
    # task that would record its result fails, and the run is replayed with the cancellation
    # first. The approval ends cancelled; the access token the OP issued reaches no history and
    # no one (docs/security/threat-model.md: the crash window).
    op = ScriptedOP(env, [GRANTED])
    op.blocking = True
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(poll_in="workflow"))  # the redeem's path
        await op.poll_started.wait()  # a token request is in flight
        await handle.cancel()
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
        op.block_next_poll.set()  # ...and brings back tokens after the cancellation
        outcome = await handle.result()
    assert outcome.status == "cancelled" and outcome.sealed_access_token is None
    assert recorded_once(op, outcome)


@pytest.mark.parametrize("revocation_fails", [False, True], ids=["revoked", "revocation-fails"])
async def test_an_access_token_arriving_after_a_delivered_cancellation_is_revoked(
    env: WorkflowEnvironment, revocation_fails: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A redeem that outlasts its workflow task's heartbeat: the cancellation reaches the workflow
    # while the token request is still in flight, and the access token it brings back is revoked
    # (best effort: a revocation that keeps failing is logged, and the approval ends cancelled).
    op = ScriptedOP(env, [GRANTED])
    op.blocking = True
    if revocation_fails:
        op.revocation_error = ApplicationError("the OP's revocation endpoint is down")
    starts = ActivityStarts()
    running, task_queue = worker(env, op, interceptors=[starts])
    with caplog.at_level("WARNING", logger="temporalio.workflow"):
        async with running:
            # The redeem's path (the poll activity's: tests/unit/test_poll_activity.py).
            polling = PollingPolicy(poll_in="workflow")
            handle = await start(env, op, task_queue, action_digest="ab" * 32, polling=polling)
            await op.poll_started.wait()
            await cancel_delivered(handle)
            op.block_next_poll.set()
            outcome = await handle.result()
    assert outcome.status == "cancelled" and outcome.sealed_access_token is None
    assert recorded_once(op, outcome)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    logged = [line for line in warnings if line.startswith("access token of auth_req_id req-1 could not be revoked (")]
    assert len(logged) == (1 if revocation_fails else 0), warnings
    assert op.revoked == ([] if revocation_fails else ["sealed-at"])
    assert len(op.access_token_revocations) == (5 if revocation_fails else 1)  # tried five times, no more
    assert op.access_token_revocations[-1:] == [
        RevokeAccessTokenInput(
            sealed_access_token="sealed-at",
            auth_req_id="req-1",
            action_digest="ab" * 32,
            holder_workflow_id=handle.id,
            holder_run_id=handle.first_execution_run_id,
        )
    ]
    (revocation,) = starts.of("ciba.revoke_access_token")  # best effort: 5 tries of 30 s at most
    assert not revocation.local and revocation.start_to_close == timedelta(seconds=30)
    assert revocation.retry_policy == RetryPolicy(maximum_attempts=5)


def on_record(status: str, sealed_access_token: str | None = None) -> Callable[[ApprovalOutcome], ApprovalOutcome]:
    """The decision the record write finds: one this approval took first, in a workflow task
    that never completed (the cancellation arrived while it was completing)."""

    def decision(given: ApprovalOutcome) -> ApprovalOutcome:
        approved = status == "approved"
        return given.model_copy(
            update={
                "status": status,
                "reason": "approved by alice" if approved else "alice denied the request on their device",
                "sub": "alice" if approved else None,
                "sealed_access_token": sealed_access_token,
            }
        )

    return decision


@pytest.mark.parametrize(
    "poll_in,on_file,revoked",
    [
        ("workflow", on_record("approved", "sealed-at"), []),
        ("activity", on_record("approved", "sealed-at"), []),
        ("workflow", on_record("approved", "sealed-other"), ["sealed-at"]),
        ("workflow", on_record("denied"), ["sealed-at"]),
    ],
    ids=["redeem-approved-with-it", "poll-activity-approved-with-it", "approved-with-another", "denied"],
)
async def test_a_late_access_token_is_revoked_only_after_the_record_says_the_approval_was_cancelled(
    own_env: WorkflowEnvironment,
    poll_in: Literal["workflow", "activity"],
    on_file: Callable[[ApprovalOutcome], ApprovalOutcome],
    revoked: list[str],
) -> None:
    # The record holds the decision taken with this very token when the cancellation arrived
    # while that decision's workflow task was completing: the approval returns it, and the
    # token it carries must still open the action (a quorum's first approver is its token).
    # A server of its own: the poll activity is held while its workflow is cancelled.
    env = own_env
    op = ScriptedOP(env, [GRANTED])
    op.blocking = True
    op.decision_on_record = on_file
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, action_digest="ab" * 32, polling=PollingPolicy(poll_in=poll_in))
        await op.poll_started.wait()
        await cancel_delivered(handle)
        if poll_in == "activity":
            # The test server fails a workflow task whose cancel of an activity crosses that
            # activity's completion (ACTIVITY_UNKNOWN), and the run hangs: tokens come after it.
            await wait_for_event(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED)
        op.block_next_poll.set()
        outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    (record,) = op.recorded
    assert record.outcome.status == "cancelled" and outcome == on_file(record.outcome)
    assert state.status == outcome.status and op.revoked == revoked


async def test_pushed_tokens_of_the_decision_on_record_are_not_revoked_by_a_cancellation(
    own_env: WorkflowEnvironment,
) -> None:
    env = own_env
    op = ScriptedOP(env, [], mode="push")
    op.answer_validation = asyncio.Event()
    op.decision_on_record = on_record("approved", "sealed-at")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, PushDelivery(auth_req_id="req-1", sealed_tokens="t"))
        await op.validation_started.wait()
        await handle.cancel()
        outcome = await handle.result()
        op.answer_validation.set()
    assert (outcome.status, outcome.sealed_access_token, op.revoked) == ("approved", "sealed-at", [])


async def test_a_redeem_that_finds_the_decision_on_record_returns_it_unwritten(env: WorkflowEnvironment) -> None:
    # The redeem's workflow task ran before, redeemed and recorded, and never completed (its
    # worker died): the redeem answers the decision on record, which is the outcome, written once.
    on_record = ApprovalOutcome(
        status="approved",
        workflow_id="wf",
        auth_req_id="req-1",
        reason="approved by alice",
        sub="alice",
        decided_at=datetime(2026, 3, 1, tzinfo=UTC),
        sealed_access_token="sealed-on-record",
    )
    op = ScriptedOP(env, [RedeemResult(kind="recorded", recorded=on_record)], interval=5, mode="ping")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_notify, PingNotice(auth_req_id="req-1"))
        outcome = await handle.result()
        state = await handle.query(STATUS_QUERY, result_type=ApprovalState)
    assert outcome == on_record and op.recorded == []
    assert state.outcome == on_record  # what operators see is the decision on record too


async def test_a_signal_during_the_redeem_does_not_ask_the_op_twice(env: WorkflowEnvironment) -> None:
    # A duplicate ping while the redeem (a local activity) runs fails the workflow task that
    # would complete the approval; the SDK keeps the redeem's result for the next task. A second
    # token request would get invalid_grant (a lost grant) for an approval the human gave.
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    op.blocking = True
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_notify, PingNotice(auth_req_id="req-1"))
        await op.poll_started.wait()
        await handle.signal(CibaApprovalWorkflow.ciba_notify, PingNotice(auth_req_id="req-1"))
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, count=2)
        op.block_next_poll.set()
        outcome = await handle.result()
    assert outcome.status == "approved" and outcome.sealed_access_token == "sealed-at"
    assert len(op.poll_times) == 1


async def test_long_waits_poll_slower_and_continue_as_new(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="pending")] * 45 + [GRANTED], interval=5, expires_in=86400)
    polling = PollingPolicy(
        long_wait_after_seconds=60, long_wait_interval_seconds=30, polls_per_run=10, poll_in="workflow"
    )
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=polling)
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "approved"
    # 5 s polls for the first minute, then 30 s; the two polls around the switch fall between.
    steps = op.poll_times
    assert_spacing(steps[:12], [5] * 11)
    assert_spacing(steps[13:], [30] * (len(steps) - 14))
    assert state.runs == 5 and state.polls == 46  # 46 polls, a new run after every 10 carrying the count


@pytest.mark.parametrize("first", ["pending", "slow_down"])
async def test_notification_fallback_poll_in_ping_mode(env: WorkflowEnvironment, first: str) -> None:
    """A fallback poll told to slow down was no ping's request: the next waits for the fallback too."""
    op = ScriptedOP(env, [TokenRequestResult(kind=first), GRANTED], interval=5, mode="ping")  # type: ignore[arg-type]
    running, task_queue = worker(env, op)
    polling = PollingPolicy(notification_fallback_interval_seconds=60)
    async with running:
        outcome = await (await start(env, op, task_queue, polling=polling)).result()
    assert outcome.status == "approved"
    # Without a ping, only the slow fallback poll runs, spread by up to a quarter more.
    [gap] = gaps(op.poll_times)
    assert 60 - EARLY_SLACK <= gap <= 60 * 1.25 + LATE_SLACK, gap


async def test_ping_polls_at_once_and_foreign_pings_are_ignored(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        started = (await env.get_current_time()).timestamp()
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="another-request"))
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        outcome = await handle.result()
    assert outcome.status == "approved"
    assert len(op.poll_times) == 1 and op.poll_times[0] - started < 5  # not at the 60 s fallback


async def ping_then_first_poll(op: ScriptedOP, ping: PingNotice, due: float) -> tuple[float, float]:
    """Start an approval, send `ping` once it is pending, and return (seconds from the start to
    the ping, seconds from the start to the first poll), in workflow time.

    Time skips only while a result is awaited, so the ping is recorded in (nearly) real time,
    long before the first poll is `due`. That is asserted, not assumed: a poll at once after a
    late ping would look like the timer's, and the test would pass whatever the rule.
    """
    env = op.env
    running, task_queue = worker(env, op)
    async with running:
        started = (await env.get_current_time()).timestamp()
        handle = await start(env, op, task_queue, polling=PollingPolicy(notification_fallback_interval_seconds=60))
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, ping)
        pinged = (await env.get_current_time()).timestamp() - started
        assert not op.poll_times, "a poll came before the ping"
        assert pinged < due - LATE_SLACK, f"the ping came {pinged:.1f} s in, too late to tell"
        assert (await handle.result()).status == "approved"
    assert len(op.poll_times) == 1
    return pinged, op.poll_times[0] - started


async def test_a_ping_in_poll_mode_is_ignored(env: WorkflowEnvironment) -> None:
    """Poll mode polls at the interval; a ping (the OP is not meant to send one) is not a reason to ask sooner."""
    op = ScriptedOP(env, [GRANTED], interval=30, mode="poll")
    _, first_poll = await ping_then_first_poll(op, PingNotice(auth_req_id="req-1"), due=30)
    assert 30 - EARLY_SLACK <= first_poll <= 30 + LATE_SLACK  # at the interval, not at once after the ping


async def test_a_foreign_ping_alone_does_not_poll(env: WorkflowEnvironment) -> None:
    """Only a ping for this auth_req_id asks for the token at once; another's waits for the 60 s fallback."""
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    _, first_poll = await ping_then_first_poll(op, PingNotice(auth_req_id="another-request"), due=60)
    assert 60 - EARLY_SLACK <= first_poll <= 60 * 1.25 + LATE_SLACK  # the fallback, jittered


async def test_a_slowed_interval_survives_continue_as_new(env: WorkflowEnvironment) -> None:
    """slow_down on the last poll of a run: the next run keeps the slower interval (CIBA §7.3)."""
    pending = TokenRequestResult(kind="pending")
    answers = [pending] * 9 + [TokenRequestResult(kind="slow_down")] + [pending] * 3 + [GRANTED]
    op = ScriptedOP(env, answers, interval=5, expires_in=3600)
    polling = PollingPolicy(polls_per_run=10, poll_in="workflow")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=polling)
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "approved"
    assert state.runs == 2 and state.polls == 14  # the slow_down was the tenth poll: the last of run one
    assert_spacing(op.poll_times, [5] * 9 + [10] * 4)
    assert state.interval_seconds == 10
    assert recorded_once(op, outcome)  # the send's "records" kept by the second run
    # The second run starts with the first's search attributes (pending, auth_req_id, deadline)
    # and upserts only the status it ends with.
    upserts = await upserted_fields(env.client.get_workflow_handle(handle.id))
    assert [fields for fields in upserts if fields] == [{CIBA_STATUS.name}]


async def test_an_approval_that_does_not_record_still_does_not_after_continue_as_new(env: WorkflowEnvironment) -> None:
    """A send that said the approval writes no decision record decides so for every run of it."""
    op = ScriptedOP(env, [TokenRequestResult(kind="pending")] * 10 + [GRANTED])
    op.records = False
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(polls_per_run=10, poll_in="workflow"))
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert (outcome.status, state.runs, op.recorded) == ("approved", 2, [])


async def test_a_ping_during_the_last_request_of_a_run_asks_again_in_the_next(env: WorkflowEnvironment) -> None:
    """A ping during a run's last token request is carried into the next run.

    The next run asks an interval after that request, not at the fallback poll."""
    pending = TokenRequestResult(kind="pending")
    op = ScriptedOP(env, [pending] * 10 + [GRANTED], interval=5, expires_in=86400, mode="ping")
    op.gated = True
    for _ in range(9):  # nine fallback polls go through; the tenth, the run's last, is held
        op.release.put_nowait(None)
    polling = PollingPolicy(polls_per_run=10, notification_fallback_interval_seconds=300)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=polling)
        result = asyncio.create_task(handle.result())  # time skips while it is awaited

        async def tenth_poll() -> bool:
            return len(op.poll_times) == 10

        await wait_for(tenth_poll, what="the run's last poll")
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        await workflow_task_after(
            handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        )
        released = (await env.get_current_time()).timestamp()
        op.release.put_nowait(None)
        op.release.put_nowait(None)
        outcome = await result
        state = await handle.query(CibaApprovalWorkflow.status)
    assert (outcome.status, state.runs, len(op.poll_times)) == ("approved", 2, 11)
    assert_spacing([released, op.poll_times[10]], [5])  # the interval after the held request ended


@pytest.mark.parametrize(
    "delivery,status,error,reason",
    [
        (PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens"), "approved", None, "approved by alice"),
        (
            PushDelivery(auth_req_id="req-1", sealed_tokens="forged"),
            "rejected",
            "iss_mismatch",
            "the ID token was issued by another issuer",
        ),
        (
            PushDelivery(auth_req_id="req-1", error="access_denied"),
            "denied",
            "access_denied",
            "alice denied the request on their device",
        ),
        (
            PushDelivery(auth_req_id="req-1", sealed_tokens="refused without a reason"),
            "rejected",
            "invalid_token",
            "the tokens failed validation",
        ),
        (PushDelivery(auth_req_id="req-1", error="expired_token"), "expired", "expired_token", "expired_token"),
        (
            PushDelivery(auth_req_id="req-1", error="transaction_failed", error_description="device lost"),
            "error",
            "transaction_failed",
            "transaction_failed: device lost",
        ),
        # Neither tokens nor an error: the OP failed the transaction (CIBA §12).
        (PushDelivery(auth_req_id="req-1"), "error", "transaction_failed", "transaction_failed"),
    ],
    ids=["tokens", "forged_tokens", "access_denied", "no_reason", "expired_token", "transaction_failed", "nothing"],
)
async def test_push_delivery_is_the_outcome_without_polling(
    env: WorkflowEnvironment, delivery: PushDelivery, status: str, error: str | None, reason: str
) -> None:
    op = ScriptedOP(env, [], mode="push")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.deliver, PushDelivery(auth_req_id="another", error="access_denied"))
        await handle.signal(CibaApprovalWorkflow.deliver, delivery)
        outcome = await handle.result()
        statuses = await upserted_statuses(handle)
    assert (outcome.status, outcome.error, op.poll_times) == (status, error, [])
    # The status search attribute changes twice, pending then the outcome (validating is only shown).
    assert statuses == 2
    # (An approval's reason goes on to say whether the approver was pinned.)
    assert outcome.reason.startswith(reason) if status == "approved" else outcome.reason == reason, outcome.reason
    # Forged tokens are revoked; approved ones reach the caller sealed, their ID token the record.
    assert op.revoked == ([delivery.sealed_tokens] if status == "rejected" else [])
    assert outcome.sealed_access_token == ("sealed-at" if status == "approved" else None)
    assert op.recorded[0].sealed_id_token == ("sealed-id-token" if status == "approved" else None)


async def push(op: ScriptedOP, *deliveries: PushDelivery, digest: str | None = None) -> ApprovalOutcome:
    """Start a push-mode approval, deliver once it is pending, and return its outcome."""
    running, task_queue = worker(op.env, op)
    async with running:
        handle = await start(op.env, op, task_queue, action_digest=digest)
        await wait_pending(handle)
        for delivery in deliveries:
            await handle.signal(CibaApprovalWorkflow.ciba_deliver, delivery)
        return await handle.result()


async def test_pushed_tokens_are_validated_for_the_action_and_the_run_that_asked(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push")
    outcome = await push(op, PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens"), digest="ab" * 32)
    (validated,) = op.validated
    assert outcome.approved and isinstance(validated, ValidateTokensInput)
    assert (validated.sealed_tokens, validated.action_digest) == ("sealed-tokens", "ab" * 32)
    assert validated.holder_workflow_id == outcome.workflow_id


async def test_a_push_for_another_run_chain_is_ignored(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push", expires_in=60)
    foreign = PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens", first_run_id="an-earlier-run-chain")
    outcome = await push(op, foreign)
    assert (outcome.status, outcome.reason, op.validated) == ("expired", "no decision before the deadline", [])


@pytest.mark.parametrize(
    "message,cause",
    # An empty message reaches the workflow as the SDK's "Application error".
    [("the JWKS could not be fetched\nsecond line", "the JWKS could not be fetched"), ("", "Application error")],
)
async def test_pushed_tokens_that_cannot_be_validated_are_an_error_and_revoked(
    env: WorkflowEnvironment, message: str, cause: str
) -> None:
    op = ScriptedOP(env, [], mode="push")
    op.validation_error = ApplicationError(message)
    outcome = await push(op, PushDelivery(auth_req_id="req-1", sealed_tokens="sealed-tokens"))
    assert (outcome.status, outcome.error) == ("error", None)
    # The first line of the innermost cause.
    assert outcome.reason == f"the tokens could not be validated: {cause}"
    assert op.revoked == ["sealed-tokens"]
    assert len(op.validated) == 10  # SHORT_RETRY's attempts, then the outcome


async def test_a_cancellation_while_pushed_tokens_are_validated_revokes_them(own_env: WorkflowEnvironment) -> None:
    env = own_env
    op = ScriptedOP(env, [], mode="push")
    op.answer_validation = asyncio.Event()
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, PushDelivery(auth_req_id="req-1", sealed_tokens="t"))
        await op.validation_started.wait()
        assert (await handle.query(CibaApprovalWorkflow.status)).status == "validating"
        await handle.cancel()
        outcome = await handle.result()
        op.answer_validation.set()  # too late: the approval ended cancelled
    assert outcome.status == "cancelled" and op.revoked == ["t"]


async def test_a_revocation_that_keeps_failing_is_logged_and_the_outcome_stands(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    op = ScriptedOP(env, [], mode="push")
    op.revocation_error = ApplicationError("the OP's revocation endpoint is down")
    with caplog.at_level("WARNING", logger="temporalio.workflow"):
        outcome = await push(op, PushDelivery(auth_req_id="req-1", sealed_tokens="forged"))
    assert outcome.status == "rejected" and op.revocation_attempts == 5
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any(line.startswith("tokens of auth_req_id req-1 could not be revoked (") for line in warnings), warnings


async def test_a_push_that_overtakes_the_request_is_kept(own_env: WorkflowEnvironment) -> None:
    env = own_env
    op = ScriptedOP(env, [], mode="push", expires_in=60)
    op.answer_send = asyncio.Event()
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await op.send_started.wait()
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, PushDelivery(auth_req_id="req-1", sealed_tokens="t"))
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        op.answer_send.set()
        outcome = await handle.result()
    assert outcome.status == "approved"


@pytest.mark.parametrize("foreign", [8, 9])
async def test_at_most_eight_early_pushes_are_kept_and_never_another_chains(
    own_env: WorkflowEnvironment, foreign: int
) -> None:
    """At most eight pushes that arrive before the request's answer are kept, none of another chain.

    They are kept because the bearer was verified. `foreign` pushes come first, one of them
    another chain's for our auth_req_id (a denial, never kept); then our tokens, the eighth kept
    or the ninth, dropped."""
    env = own_env
    op = ScriptedOP(env, [], mode="push")
    op.answer_send = asyncio.Event()
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await op.send_started.wait()
        others = [PushDelivery(auth_req_id=f"other-{i}", error="access_denied") for i in range(7)]
        others += [PushDelivery(auth_req_id="req-1", error="access_denied", first_run_id="another-chain")]
        others += [PushDelivery(auth_req_id="other-8", error="access_denied")] * (foreign - 8)
        for delivery in [*others, PushDelivery(auth_req_id="req-1", sealed_tokens="t")]:
            await handle.signal(CibaApprovalWorkflow.ciba_deliver, delivery)
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, count=foreign + 1)
        op.answer_send.set()

        async def answered() -> bool:
            return (await handle.query(CibaApprovalWorkflow.status)).status != "requesting"

        await wait_for(answered, what="the request's answer")
        if foreign > 8:  # ours was dropped: the approval waits on, and a pushed denial ends it
            denial = PushDelivery(auth_req_id="req-1", error="access_denied")
            await handle.signal(CibaApprovalWorkflow.ciba_deliver, denial)
        outcome = await handle.result()
    assert outcome.status == ("approved" if foreign == 8 else "denied")


async def test_push_mode_waits_without_polling_until_the_deadline(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push", expires_in=3600)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
        history = await handle.fetch_history()
    assert (outcome.status, outcome.reason, op.poll_times) == ("expired", "no decision before the deadline", [])
    assert len(history.events) < 40  # an hour of waiting costs one timer


async def test_poll_mode_ends_expired_at_the_deadline(env: WorkflowEnvironment) -> None:
    """The last second counts.

    A poll is due 1 s before the deadline, and the approval ends at the deadline, not sooner."""
    op = ScriptedOP(env, [], interval=5, expires_in=11)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert (outcome.status, outcome.reason, len(op.poll_times)) == ("expired", "no decision before the deadline", 2)
    assert outcome.deadline is not None and outcome.decided_at is not None
    # Not before the deadline; after it by no more than the timer's firing takes (not an interval).
    assert 0 <= (outcome.decided_at - outcome.deadline).total_seconds() < 1, outcome.decided_at


async def test_cancelled_while_the_request_is_being_sent(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [])
    op.block_send = True
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await op.send_started.wait()
        await handle.cancel()
        outcome = await handle.result()
    assert (outcome.status, outcome.reason) == ("cancelled", "the approval was cancelled before a decision")
    assert op.poll_times == [] and recorded_once(op, outcome)


@pytest.mark.parametrize("interval", [5, 1])
async def test_pings_never_outpace_the_interval(env: WorkflowEnvironment, interval: int) -> None:
    """A flood of pings (or one replayed).

    The first asks at once, later ones wait the interval, however short it is."""
    op = ScriptedOP(env, [TokenRequestResult(kind="pending")] * 3 + [GRANTED], interval=interval, mode="ping")
    op.gated = True
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        for _ in range(4):
            await op.poll_started.wait()
            op.poll_started.clear()
            # Ten more pings while the token request is in flight; they are recorded first.
            for _ in range(10):
                await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
            op.release.put_nowait(None)
        outcome = await handle.result()
    assert outcome.status == "approved" and len(op.poll_times) == 4
    assert_spacing(op.poll_times, [interval] * 3)  # not the 60 s fallback, and never sooner than the interval


@pytest.mark.parametrize(
    "interval,expires_in,second_ping_after",
    [(5, 4, 0.0), (20, 10, 9.4)],
    ids=["interval-outlasts-the-request", "in-the-last-second"],
)
async def test_a_ping_held_back_past_the_deadline_asks_no_more(
    env: WorkflowEnvironment, interval: int, expires_in: int, second_ping_after: float
) -> None:
    # The second ping may not ask before the interval has passed, and the deadline comes first:
    # the pacing timer stops at the deadline (not at the interval's end, nor a second later) and
    # the approval ends expired without a token request. In the last second, the ping lands 0.6 s
    # before the deadline, less the signal's real-time delivery; should that take longer, the
    # deadline's own timer ends the run at the same time.
    op = ScriptedOP(
        env, [TokenRequestResult(kind="pending")] * 2, interval=interval, expires_in=expires_in, mode="ping"
    )
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        await wait_for_event(handle, EventType.EVENT_TYPE_MARKER_RECORDED, count=2)  # the send's, the redeem's
        if second_ping_after:
            await env.sleep(second_ping_after)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        outcome = await handle.result()
    assert (outcome.status, outcome.reason, len(op.poll_times)) == ("expired", "no decision before the deadline", 1)
    assert outcome.deadline is not None and outcome.decided_at is not None
    assert 0 <= (outcome.decided_at - outcome.deadline).total_seconds() < 0.3, outcome.decided_at


@pytest.mark.parametrize("foreign", [0, 8], ids=["own-ping-kept", "ninth-ping-dropped"])
async def test_at_most_eight_early_pings_are_kept(env: WorkflowEnvironment, foreign: int) -> None:
    # The OP's ping may overtake its answer to the request: up to eight are kept until the
    # auth_req_id is known, then the one naming it asks at once; a ninth is dropped.
    op = ScriptedOP(env, [GRANTED], interval=5, mode="ping")
    op.answer_send = asyncio.Event()
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(notification_fallback_interval_seconds=60))
        await op.send_started.wait()
        for index in range(foreign):
            await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id=f"other-{index}"))
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        await wait_for_event(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, count=foreign + 1)
        op.answer_send.set()
        outcome = await handle.result()
    assert outcome.status == "approved" and outcome.requested_at is not None and len(op.poll_times) == 1
    waited = op.poll_times[0] - outcome.requested_at.timestamp()
    if foreign:
        assert waited >= 60 - EARLY_SLACK, waited  # only the fallback poll asked
    else:
        assert waited < 5, waited  # at once, not after the interval


async def test_a_ping_after_the_interval_asks_at_once(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [TokenRequestResult(kind="pending"), GRANTED], interval=5, mode="ping")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(notification_fallback_interval_seconds=60))
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        await wait_for_event(handle, EventType.EVENT_TYPE_MARKER_RECORDED, count=2)  # the send's, the redeem's
        await env.sleep(10)  # twice the interval, well short of the fallback
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        outcome = await handle.result()
    assert outcome.status == "approved"
    [gap] = gaps(op.poll_times)
    assert 10 - EARLY_SLACK <= gap < 60, gap


@pytest.mark.parametrize(
    "policy,answers,sends,status",
    [
        ("stop", [LOST, GRANTED], 1, "error"),
        ("ask_again", [LOST, GRANTED], 2, "approved"),
        ("ask_again", [LOST, LOST, GRANTED], 2, "error"),  # once only
        # once only, though the second request's wait went on in a new run
        ("ask_again", [LOST, *[TokenRequestResult(kind="pending")] * 10, LOST, GRANTED], 2, "error"),
    ],
    ids=["stop", "ask-again", "once-only", "once-only-across-runs"],
)
async def test_a_lost_grant_is_an_outcome_or_one_new_request(
    env: WorkflowEnvironment, policy: str, answers: list[TokenRequestResult], sends: int, status: str
) -> None:
    op = ScriptedOP(env, list(answers))
    polling = PollingPolicy(polls_per_run=10)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, on_lost_grant=policy, polling=polling)).result()
    assert (outcome.status, op.sends) == (status, sends)
    if status == "error":
        assert (
            outcome.error == "grant_lost" and outcome.reason == "tokens were issued but lost before they were recorded"
        )


@workflow.defn(sandboxed=False)
class AskingAgent:
    @workflow.run
    async def run(self) -> str:
        outcome = await require_approval(ApprovalRequest(login_hint="alice", binding_message="Approve it"))
        return outcome.status


async def test_the_access_token_is_sealed_for_the_run_that_asked(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op, AskingAgent)
    async with running:
        agent = await env.client.start_workflow(
            AskingAgent.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        assert await agent.result() == "approved"
    holder = op.validated[0]
    assert (holder.holder_workflow_id, holder.holder_run_id) == (agent.id, agent.result_run_id)


@pytest.mark.parametrize("expected_subject,pinned", [("alice", True), (None, False)])
async def test_the_outcome_says_whether_the_approver_was_pinned(
    env: WorkflowEnvironment, expected_subject: str | None, pinned: bool
) -> None:
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, expected_subject=expected_subject)).result()
    assert outcome.status == "approved" and outcome.subject_pinned is pinned
    unpinned = " (not pinned to the person asked: no expected_subject for this login_hint)"
    assert outcome.reason == "approved by alice" + ("" if pinned else unpinned)


@pytest.mark.parametrize("mode", ["poll", "push"])
async def test_an_approved_outcome_carries_every_validated_claim(env: WorkflowEnvironment, mode: str) -> None:
    # Redeemed (poll) or validated on its own (push): the outcome is what the validation vouched
    # for, claim by claim, and the access token sealed for the caller.
    op = ScriptedOP(env, [GRANTED], mode=mode)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        if mode == "push":
            await wait_pending(handle)
            await handle.signal(CibaApprovalWorkflow.deliver, PushDelivery(auth_req_id="req-1", sealed_tokens="sealed"))
        outcome = await handle.result()
    claims = {name: APPROVAL[name] for name in ("sub", "acr", "amr", "auth_time", "scope", "authorization_details")}
    assert outcome.model_dump(include=set(claims)) == claims
    assert (outcome.status, outcome.sealed_access_token) == ("approved", "sealed-at")


POLICY = PolicyDecision(rule="payments over 100 EUR", reason="the amount is over 100 EUR", approval="one")
PAYMENT = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "12.00"}}]


@pytest.mark.parametrize("summary", [["pay `12` EUR", "to ACME"], None], ids=["summary", "authorization-details"])
async def test_operators_see_what_was_asked_and_what_came_of_it(env: WorkflowEnvironment, summary: list[str]) -> None:
    """The status query and the current details (the Temporal UI) while the approval waits, then its outcome.

    Who was asked what, the agent's summary or else the authorization details, the OP's answer to
    the request, the action; and the redeem carries the action's digest."""
    digest = "0123456789abcdef" * 4
    op = ScriptedOP(env, [GRANTED], interval=5, expires_in=600)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(
            env, op, task_queue, action_digest=digest, summary=summary, authorization_details=PAYMENT, policy=POLICY
        )
        await wait_pending(handle)
        state = await handle.query(CibaApprovalWorkflow.status)
        pending = (await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
        attributes = (await handle.describe()).typed_search_attributes
        outcome = await handle.result()
        final = (await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
        final_attributes = (await handle.describe()).typed_search_attributes
    assert (state.summary, state.authorization_details, state.action_digest) == (summary, PAYMENT, digest)
    assert state.binding_message_sent == "Approve it, code ABCD"  # as the send answered
    assert (state.auth_req_id, state.interval_seconds) == ("req-1", 5)
    assert state.requested_at is not None and state.deadline is not None
    assert (state.requested_at, state.deadline) == (outcome.requested_at, outcome.deadline)
    assert state.deadline - state.requested_at == timedelta(seconds=600)
    asked = ["- `pay '12' EUR`", "- `to ACME`"] if summary else describe_authorization_details(PAYMENT)
    assert pending.split("\n") == [
        "**CIBA approval: pending**",
        "",
        "Asked `alice` to approve:",
        "> `Approve it`",
        "",
        *asked,
        f"- until {state.deadline:%Y-%m-%d %H:%M:%S} UTC",
        "- auth_req_id `req-1`",
        "- action digest `0123456789abcdef…`",
    ]
    assert final == pending.replace("pending", "approved", 1) + f"\n\nOutcome: **approved**: {code(outcome.reason)}"
    (redeemed,) = op.validated
    assert isinstance(redeemed, RedeemInput) and redeemed.action_digest == digest
    assert (outcome.workflow_id, outcome.auth_req_id, outcome.action_digest) == (handle.id, "req-1", digest)
    assert outcome.policy == POLICY and outcome.error is None
    assert attributes.get(CIBA_STATUS) == "pending" and attributes.get(CIBA_AUTH_REQ_ID) == "req-1"
    assert attributes.get(CIBA_DEADLINE) == state.deadline
    assert final_attributes.get(CIBA_STATUS) == "approved"


async def test_each_phase_is_logged_with_its_status_and_auth_req_id(
    env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    """One log line a phase, its status and auth_req_id as fields a log pipeline can index."""
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op)
    with caplog.at_level("INFO", logger="temporalio.workflow"):
        async with running:
            outcome = await (await start(env, op, task_queue)).result()
    phases = [record for record in caplog.records if hasattr(record, "ciba_status")]
    assert [(record.ciba_status, record.auth_req_id) for record in phases] == [  # type: ignore[attr-defined]
        ("requesting", None),
        ("pending", "req-1"),
        ("approved", "req-1"),
    ]
    assert phases[-1].getMessage().startswith(f"approval approved: {outcome.reason} (")


@pytest.mark.parametrize(
    ("answer", "gap"),
    [(TokenRequestResult(kind="retry_later", retry_after_seconds=8), 8), (TokenRequestResult(kind="slow_down"), 15)],
    ids=["503-retry-after", "slow_down"],
)
async def test_a_pinged_token_request_told_to_come_back_is_retried_not_left_to_the_fallback(
    env: WorkflowEnvironment, answer: TokenRequestResult, gap: float
) -> None:
    """The OP pings once: a 503 with Retry-After (or slow_down) answering the ping's token request
    is retried at the interval or the Retry-After, as a poll would be, and so is a retry told the
    same, not left to the fallback poll (60 s here), which an approval expiring sooner (40 s)
    never reaches."""
    op = ScriptedOP(env, [answer, answer, GRANTED], interval=5, mode="ping", expires_in=40)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(notification_fallback_interval_seconds=60))
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        outcome = await handle.result()
    assert outcome.status == "approved"
    # Told twice: Retry-After 8 s each time; after each slow_down the interval grows by 5 s (10, 15).
    assert_spacing(op.poll_times, [gap if gap == 8 else 10, gap])


async def test_a_pinged_request_s_retry_starts_an_interval_after_the_request_started(env: WorkflowEnvironment) -> None:
    """The retry's timer starts when the slowed request has returned: shorter by the time it took."""
    slow_down = TokenRequestResult(kind="slow_down")
    op = ScriptedOP(env, [slow_down, slow_down, GRANTED], interval=5, mode="ping", expires_in=100)
    op.pending_request_seconds = 4.0
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(notification_fallback_interval_seconds=60))
        await wait_pending(handle)
        await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="req-1"))
        assert (await handle.result()).status == "approved"
    # The fallback's timer, cancelled by the ping; then the intervals 10 and 15, each less 4 s.
    assert (await timers(handle))[-2:] == pytest.approx([6, 11])


async def test_no_token_request_at_the_deadline_on_the_workflow_s_timers(env: WorkflowEnvironment) -> None:
    """Polled every 5 s for 20 s: three requests, then `expired` when the timer reaches the deadline."""
    op = ScriptedOP(env, [], interval=5, expires_in=20)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue, polling=PollingPolicy(poll_in="workflow"))).result()
    assert (outcome.status, outcome.reason) == ("expired", "no decision before the deadline")
    assert len(op.poll_times) == 3

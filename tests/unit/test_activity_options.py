"""What each call an approval makes may take, and how often it is tried.

The activity options, read by a worker interceptor on the time-skipping test server with the
scripted activities of tests.support.scripted_op. They decide how an approval behaves when the OP is
slow or down (a token request attempt ends before the next starts; a retry after a transport failure
is a token request too, so never sooner than the interval), so they are held here value by value."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.workflow import ActivityCancellationType

from temporal_ciba._models import PollingPolicy, PushDelivery
from temporal_ciba._workflow import CibaApprovalWorkflow
from tests.support.scripted_op import GRANTED, ScriptedOP, start, wait_pending, worker
from tests.support.temporal import ActivityStart, ActivityStarts

SECONDS = timedelta(seconds=1)
# A retry's backoff is a server timer, never a wait inside the workflow task (calls.LOCAL_RETRY_THRESHOLD).
A_MILLISECOND = timedelta(milliseconds=1)
SEND = ActivityStart(
    "ciba.send_authentication_request",
    local=True,
    start_to_close=45 * SECONDS,
    schedule_to_close=None,
    retry_policy=RetryPolicy(initial_interval=SECONDS, maximum_interval=10 * SECONDS, maximum_attempts=5),
    local_retry_threshold=A_MILLISECOND,
)
RECORD = ActivityStart(
    "ciba.record_decision",
    local=True,
    start_to_close=30 * SECONDS,
    schedule_to_close=None,
    # However long the store is down: the record is written before the outcome returns.
    retry_policy=RetryPolicy(initial_interval=SECONDS, maximum_interval=60 * SECONDS),
    local_retry_threshold=A_MILLISECOND,
)


async def approve_by_polling(
    env: WorkflowEnvironment, *, interval: int, expires_in: int, poll_in: str = "workflow"
) -> ActivityStarts:
    op = ScriptedOP(env, [GRANTED], interval=interval, expires_in=expires_in)
    starts = ActivityStarts()
    running, task_queue = worker(env, op, interceptors=[starts])
    async with running:
        outcome = await (await start(env, op, task_queue, polling=PollingPolicy(poll_in=poll_in))).result()
    assert outcome.approved
    return starts


async def test_a_polled_approval_sends_redeems_and_records_with_its_options(env: WorkflowEnvironment) -> None:
    starts = await approve_by_polling(env, interval=5, expires_in=600)
    assert starts.of(SEND.activity) == [SEND] and starts.of(RECORD.activity) == [RECORD]
    (redeem,) = starts.of("ciba.redeem")
    assert redeem.local and redeem.start_to_close == 45 * SECONDS
    # The redeem and its retries may run until the request expires (595 s on after one interval).
    assert redeem.schedule_to_close is not None
    assert 590 * SECONDS <= redeem.schedule_to_close <= 595 * SECONDS
    assert redeem.retry_policy == RetryPolicy(initial_interval=5 * SECONDS, maximum_interval=30 * SECONDS)
    assert redeem.local_retry_threshold == A_MILLISECOND


async def test_poll_mode_polls_in_one_activity_that_heartbeats_and_is_waited_for_when_cancelled(
    env: WorkflowEnvironment,
) -> None:
    """Poll mode's token requests are one activity's: a crash is noticed within its heartbeat
    timeout, a cancellation waits for its request in flight, and a retry is a token request too."""
    starts = await approve_by_polling(env, interval=5, expires_in=600, poll_in="activity")
    assert starts.of("ciba.redeem") == []
    (poll,) = starts.of("ciba.poll")
    assert not poll.local and poll.heartbeat_timeout == 20 * SECONDS
    assert poll.cancellation_type == ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    # Until the request expires (600 s after it was sent), plus two token requests' worth.
    assert poll.start_to_close == poll.schedule_to_close == 690 * SECONDS
    assert poll.retry_policy == RetryPolicy(initial_interval=5 * SECONDS, maximum_interval=30 * SECONDS)


async def test_a_redeem_near_expiry_still_gets_two_attempts_and_retries_a_long_interval_apart(
    env: WorkflowEnvironment,
) -> None:
    starts = await approve_by_polling(env, interval=40, expires_in=100)
    (redeem,) = starts.of("ciba.redeem")
    assert redeem.schedule_to_close == 90 * SECONDS  # 60 s were left: two attempts' worth instead
    assert redeem.retry_policy == RetryPolicy(initial_interval=40 * SECONDS, maximum_interval=40 * SECONDS)


async def test_pushed_tokens_are_validated_and_revoked_with_their_options(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], mode="push")
    starts = ActivityStarts()
    running, task_queue = worker(env, op, interceptors=[starts])
    async with running:
        handle = await start(env, op, task_queue)
        await wait_pending(handle)
        forged = PushDelivery(auth_req_id="req-1", sealed_tokens="forged")
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, forged)
        outcome = await handle.result()
    assert outcome.status == "rejected" and op.revoked == ["forged"]
    assert starts.starts == [
        SEND,
        # The push's proof, checked before anything acts on it: no network, a few quick tries.
        ActivityStart(
            "ciba.verify_notification",
            local=True,
            start_to_close=10 * SECONDS,
            schedule_to_close=None,
            retry_policy=RetryPolicy(maximum_attempts=3),
        ),
        ActivityStart(
            "ciba.validate_tokens",
            local=False,
            start_to_close=45 * SECONDS,
            schedule_to_close=None,
            retry_policy=RetryPolicy(initial_interval=SECONDS, maximum_interval=10 * SECONDS, maximum_attempts=10),
        ),
        ActivityStart(
            "ciba.revoke_tokens",
            local=False,
            start_to_close=30 * SECONDS,
            schedule_to_close=None,
            retry_policy=RetryPolicy(maximum_attempts=5),
        ),
        RECORD,
    ]

"""The approval's activity calls from workflow code, each with its options.

Local or not, timeouts, retry policy, and what a failure or a late answer becomes. The state
machine (machine.py) decides what to call and when; here is how each call is made, so the
options that shape an approval's history are in one place. A call that must not fail the
approval (a revocation, the decision record) logs its failure and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._activities import CibaActivities
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalRequest,
        PollInput,
        RedeemInput,
        RedeemResult,
        RevokeAccessTokenInput,
        RevokeTokensInput,
        SendRequestInput,
        SendRequestResult,
        TokenRequestInput,
        TokenRequestResult,
        ValidateTokensInput,
        ValidateTokensResult,
        VerifyNotificationInput,
    )
    from temporal_ciba.ciba import RequestBinding
    from temporal_ciba.records import DecisionRecorder, RecordDecisionInput, RecordedDecision

T = TypeVar("T")
# The OP may hold a token request open for up to 30 s (long polling); an attempt must end
# before it is retried, so no two token requests for one auth_req_id are ever in flight.
TOKEN_REQUEST_TIMEOUT = timedelta(seconds=45)
# After a cancellation, how long a token request already in flight may still run for its
# tokens to be revoked; past that it is cancelled (the OP is probably down: no tokens came).
LATE_TOKEN_WAIT = 2 * TOKEN_REQUEST_TIMEOUT
# A regular activity's failure reaches the workflow as an ActivityError; a local activity's last
# failure as its own error, unwrapped (temporalio 1.35): an OP down for every attempt of the
# request must end as an `error` outcome, not fail the workflow.
ACTIVITY_FAILED = (ActivityError, ApplicationError)
# The poll activity heartbeats at least this often while it waits, so a crashed worker's
# approvals are picked up by another within it (and their next token request comes within it
# plus one interval). Each heartbeat is one call to the Temporal server (a pending approval in
# poll mode costs it one every 0.8 of this), none is history, and a cancellation arrives with
# one's answer. (At 30 s the dev server's share with 1,000 pending was no smaller: 27 % against
# 28 %, so the quicker cancellation wins.)
POLL_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
SHORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=10
)
# A decision record is written before the outcome is returned, however long the store is down
# (an operator's alert, not an outcome); only a conflicting record (raised non-retryable by the
# activity) stops the retries.
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60))
# A local activity's retry waits on a server timer, never inside the workflow task: a backoff
# longer than this ends the task (a marker and a timer in history) and the next attempt runs in
# a new one. With the SDK's default (a minute) an OP that is down would hold the task open
# through every backoff, and the SDK warns of each task over 5 s. Zero means "the default" to
# the SDK, hence a millisecond.
LOCAL_RETRY_THRESHOLD = timedelta(milliseconds=1)


async def send_request(send: SendRequestInput, *, local: bool) -> SendRequestResult:
    """The backchannel request (CIBA §7.1); one of ACTIVITY_FAILED if the OP stayed unreachable.

    `local` on the redeem path: no task queue round trip, three events fewer. A worker that dies
    while the request is on its way sends it again either way."""
    if local:
        return await workflow.execute_local_activity_method(
            CibaActivities.send_authentication_request,
            send,
            start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
            retry_policy=SEND_RETRY,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
        )
    return await workflow.execute_activity_method(
        CibaActivities.send_authentication_request,
        send,
        start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
        retry_policy=SEND_RETRY,
    )


async def redeem(
    redemption: RedeemInput, *, remaining: timedelta, interval: float, keep_late: Callable[[RedeemResult], None]
) -> RedeemResult | None:
    """One token request and its validation, as a local activity; None if the OP stayed unreachable.

    A local activity: no task queue round trip, no token response in history. Shielded from
    cancellation (_shielded)."""
    handle = workflow.start_local_activity_method(
        CibaActivities.redeem,
        redemption,
        start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
        schedule_to_close_timeout=max(remaining, 2 * TOKEN_REQUEST_TIMEOUT),
        retry_policy=_token_request_retry(interval),
        local_retry_threshold=LOCAL_RETRY_THRESHOLD,
    )
    return await _shielded(handle, keep_late)


async def verify_notification(check: VerifyNotificationInput) -> bool:
    """Whether the callback made this push (its proof), as a local activity; False if it cannot say.

    No network: a failure is a bug or a worker without the activity, retried briefly, then read
    as unproven (the push is dropped and logged, the wait goes on)."""
    try:
        return await workflow.execute_local_activity_method(
            CibaActivities.verify_notification,
            check,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
    except ACTIVITY_FAILED as exc:
        if is_cancelled_exception(exc):
            raise asyncio.CancelledError() from exc
        workflow.logger.error("the push's proof could not be checked: %s", root_cause(exc))
        return False


async def poll(
    polling: PollInput, *, remaining: timedelta, keep_late: Callable[[RedeemResult], None]
) -> RedeemResult | None:
    """Poll mode's token requests, all in one heartbeating activity (ciba.poll); None if the OP
    stayed unreachable until after the deadline.

    A regular activity, for its heartbeats: the wait costs the history its three events however
    long it lasts. A cancellation of the approval cancels it and waits for it to end (a token
    request in flight is let finish, never overlapped; an approval it brings is kept to be revoked)."""
    bound = max(remaining, timedelta(0)) + 2 * TOKEN_REQUEST_TIMEOUT
    handle = workflow.start_activity_method(
        CibaActivities.poll,
        polling,
        start_to_close_timeout=bound,
        schedule_to_close_timeout=bound,
        heartbeat_timeout=POLL_HEARTBEAT_TIMEOUT,
        retry_policy=_token_request_retry(polling.interval_seconds),
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )
    try:
        return await asyncio.shield(handle)
    except asyncio.CancelledError:
        # Ask the loop to stop (it hears it at its next heartbeat) and wait for it to end: with
        # an approval its request brought back meanwhile, to be revoked, or cancelled.
        handle.cancel()
        try:
            late = await asyncio.wait_for(asyncio.shield(handle), timeout=LATE_TOKEN_WAIT.total_seconds())
        except (TimeoutError, asyncio.CancelledError, *ACTIVITY_FAILED):
            raise asyncio.CancelledError() from None
        keep_late(late)
        raise
    except ACTIVITY_FAILED as exc:
        if is_cancelled_exception(exc):
            raise asyncio.CancelledError() from exc
        return None


async def request_token(
    request: TokenRequestInput,
    *,
    remaining: timedelta,
    interval: float,
    keep_late: Callable[[TokenRequestResult], None],
) -> TokenRequestResult | None:
    """One token request as an activity of its own; None if the OP stayed unreachable.

    The path of runs recorded without REDEEM_PATCH (DecisionPath.redeem False): its sealed
    tokens go to validate_tokens.
    Shielded from cancellation (_shielded)."""
    handle = workflow.start_activity_method(
        CibaActivities.request_token,
        request,
        start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
        schedule_to_close_timeout=max(remaining, 2 * TOKEN_REQUEST_TIMEOUT),
        retry_policy=_token_request_retry(interval),
    )
    return await _shielded(handle, keep_late)


async def validate_tokens(validation: ValidateTokensInput) -> ValidateTokensResult:
    """The validation of request_token's tokens; one of ACTIVITY_FAILED if it could not run."""
    return await workflow.execute_activity_method(
        CibaActivities.validate_tokens,
        validation,
        start_to_close_timeout=timedelta(seconds=45),
        retry_policy=SHORT_RETRY,
    )


async def revoke_tokens(revocation: RevokeTokensInput) -> None:
    """RFC 7009: sealed tokens nobody will use (rejected, or brought back after a cancellation).

    Best effort: a failure is logged; the tokens expire unused at the OP."""
    try:
        await workflow.execute_activity_method(
            CibaActivities.revoke_tokens,
            revocation,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
    except ACTIVITY_FAILED:
        workflow.logger.warning("tokens of auth_req_id %s could not be revoked", revocation.auth_req_id)


async def revoke_access_token(revocation: RevokeAccessTokenInput) -> None:
    """RFC 7009, from workflow code: an approved access token nobody will use.

    Best effort: a failure is logged; the token expires unused at the OP."""
    try:
        await workflow.execute_activity_method(
            CibaActivities.revoke_access_token,
            revocation,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
    except ACTIVITY_FAILED:
        workflow.logger.warning("access token of auth_req_id %s could not be revoked", revocation.auth_req_id)


async def record_decision(
    outcome: ApprovalOutcome,
    request: ApprovalRequest,
    *,
    binding: RequestBinding | None = None,
    sealed_id_token: str | None = None,
) -> ApprovalOutcome | None:
    """Write the decision record of `outcome` (temporal_ciba.records), from workflow code.

    A local activity (one marker event, no task queue round trip) that writes it exactly once
    however often it runs. Every approval calls it before returning its outcome; a decision
    taken without asking anyone (a policy that lets the action through) calls it too. A
    cancellation that arrives meanwhile waits for the write, then goes on.

    The outcome on record when it is not `outcome`: a decision this approval took first, whose
    workflow task never completed (records.activity); the approval returns it instead."""
    info = workflow.info()
    handle = workflow.start_local_activity_method(
        DecisionRecorder.record_decision,
        RecordDecisionInput(
            outcome=outcome,
            request=request,
            first_run_id=info.first_execution_run_id,
            run_id=info.run_id,
            issuer=binding.issuer if binding else None,
            client_id=binding.client_id if binding else None,
            sealed_id_token=sealed_id_token,
        ),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RECORD_RETRY,
        local_retry_threshold=LOCAL_RETRY_THRESHOLD,
    )
    try:
        recorded = await asyncio.shield(handle)
    except asyncio.CancelledError:
        await _recorded(handle)
        raise
    except (ActivityError, ApplicationError) as exc:
        # A local activity's non-retryable failure arrives as its ApplicationError, unwrapped.
        workflow.logger.error("decision of auth_req_id %s not recorded: %s", outcome.auth_req_id, root_cause(exc))
        return None
    return recorded.outcome


def root_cause(error: BaseException) -> str:
    """The first line of the innermost cause of an activity's failure, for an outcome's reason."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _token_request_retry(interval: float) -> RetryPolicy:
    """A retry after a transport failure is a token request too: never sooner than the interval."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=max(1.0, interval)),
        maximum_interval=timedelta(seconds=max(30.0, interval)),
    )


async def _shielded(handle: Awaitable[T], keep_late: Callable[[T], None]) -> T | None:
    """A token request's result, shielded from cancellation; None if the OP stayed unreachable.

    One that comes back after the approval was cancelled goes to `keep_late` (its tokens are to
    be revoked, not dropped), then the cancellation goes on."""
    try:
        return await asyncio.shield(handle)
    except asyncio.CancelledError:
        try:
            late = await asyncio.wait_for(handle, timeout=LATE_TOKEN_WAIT.total_seconds())
        except (TimeoutError, *ACTIVITY_FAILED):
            raise asyncio.CancelledError() from None
        keep_late(late)
        raise
    except ACTIVITY_FAILED as exc:
        if is_cancelled_exception(exc):
            raise asyncio.CancelledError() from exc
        return None


async def _recorded(handle: Awaitable[RecordedDecision]) -> None:
    try:
        await handle
    except (ActivityError, ApplicationError) as exc:
        workflow.logger.error("decision not recorded: %s", root_cause(exc))

"""Poll mode's token-request loop, in one heartbeating activity (CIBA §7.3, §11).

The loop redeems (redeem.py: the token request and, once tokens come, their validation) until
the OP gives a final answer or the deadline passes. Token requests start at least the OP's
interval apart; every `slow_down` adds 5 s to the interval for this and every later request
(CIBA §11, RFC 8628 §3.5); a 503's Retry-After holds the next one back further. Its pacing
(the last request's start, the interval, a Retry-After) is in its heartbeat details, so an
attempt that follows a worker's crash continues from it, and never polls sooner than the OP
allows: the server keeps only the details of the last heartbeat it received (the SDK throttles
heartbeats), so a later attempt also waits one whole interval from its own start, which comes
after the crashed attempt's last request.

A cancellation arrives with a heartbeat's answer. A token request already on its way is let
finish (never two at once for one auth_req_id): an approval it brings back is returned, for
the workflow to revoke its access token; anything else ends the attempt as cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from temporal_ciba._models import PollInput, PollProgress, RedeemInput, RedeemResult

# What slow_down adds to the interval (CIBA §11, RFC 8628 §3.5).
SLOW_DOWN_SECONDS = 5.0
# The longest the loop sleeps between two heartbeats; the SDK sends them at most every 0.8 of
# the heartbeat timeout (temporal_ciba._approval.calls.POLL_HEARTBEAT_TIMEOUT).
HEARTBEAT_EVERY = 5.0


class PollLoop:
    """Redeems at the OP's pace until a final answer; the clock, sleep and heartbeat are given.

    `clock` is the wall clock in epoch seconds (the activity's time.time, the test server's in
    the workflow tests); `heartbeat` records PollProgress for a later attempt."""

    def __init__(
        self,
        redeem: Callable[[RedeemInput], Awaitable[RedeemResult]],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        heartbeat: Callable[[PollProgress], None],
    ) -> None:
        self._redeem = redeem
        self._clock = clock
        self._sleep = sleep
        self._heartbeat = heartbeat

    async def run(self, input: PollInput, *, details: Sequence[Any] = (), attempt: int = 1) -> RedeemResult:
        """The first final answer (approved, rejected, failed), or `pending` at the deadline.

        No request is made that could not start before the deadline; the answer waits for it."""
        started = self._clock()
        progress = resume(input, details, attempt=attempt, now=started)
        deadline = input.deadline.timestamp()
        while True:
            due = next_request_at(input, progress)
            if due >= deadline:
                await self._wait_until(deadline, progress)
                return _ended(RedeemResult(kind="pending", reason="no decision before the deadline"), progress)
            await self._wait_until(due, progress)
            progress.last_request_started = self._clock()
            progress.not_before = None
            self._heartbeat(progress)
            result = await _finishing(self._redeem(input.redemption), lambda: self._heartbeat(progress))
            progress.polls += 1
            if result.kind == "slow_down":
                progress.interval_seconds += SLOW_DOWN_SECONDS
            elif result.kind == "retry_later":
                progress.not_before = self._clock() + (result.retry_after_seconds or 0.0)
            elif result.kind != "pending":
                return _ended(result, progress)
            self._heartbeat(progress)

    async def _wait_until(self, due: float, progress: PollProgress) -> None:
        while (wait := due - self._clock()) > 0:
            self._heartbeat(progress)
            await self._sleep(min(wait, HEARTBEAT_EVERY))


def resume(input: PollInput, details: Sequence[Any], *, attempt: int, now: float) -> PollProgress:
    """The pacing this attempt starts from: the last heartbeat's, else the input's.

    A later attempt (after a crash, or a failed request) waits one whole interval from its own
    start too: the details the server kept may be older than the crashed attempt's last
    request, whose start came before this attempt's."""
    last = input.last_request_at.timestamp() if input.last_request_at else None
    progress = PollProgress(interval_seconds=input.interval_seconds, last_request_started=last)
    if details:
        kept = PollProgress.model_validate(details[-1])
        progress = kept.model_copy(update={"interval_seconds": max(kept.interval_seconds, input.interval_seconds)})
    if attempt > 1:
        progress.last_request_started = max(progress.last_request_started or now, now)
    return progress


def next_request_at(input: PollInput, progress: PollProgress) -> float:
    """When the next token request may start: an interval after the last (or the request's
    acknowledgement), no sooner than a Retry-After, and slower once the wait is long."""
    interval = progress.interval_seconds
    last = progress.last_request_started
    since = max(input.requested_at.timestamp(), last) if last is not None else input.requested_at.timestamp()
    policy = input.polling
    if since - input.requested_at.timestamp() >= policy.long_wait_after_seconds:
        interval = max(interval, policy.long_wait_interval_seconds)
    return max(since + interval, progress.not_before or 0.0)


async def _finishing(request: Awaitable[RedeemResult], beat: Callable[[], None]) -> RedeemResult:
    """The request's answer, heartbeating while it runs, let finish even when cancelled meanwhile.

    An OP may hold a token request open (long polling) longer than the heartbeat timeout: the
    heartbeats go on. Cancelled with an approval in hand, the approval is returned (its access
    token is the workflow's to revoke); with any other answer, the cancellation goes on."""
    task = asyncio.ensure_future(request)
    try:
        while not (await asyncio.wait({task}, timeout=HEARTBEAT_EVERY))[0]:
            beat()
        return task.result()
    except asyncio.CancelledError:
        result = await task
        if result.kind == "approved":
            return result
        raise


def _ended(result: RedeemResult, progress: PollProgress) -> RedeemResult:
    return result.model_copy(update={"polls": progress.polls, "interval_seconds": progress.interval_seconds})

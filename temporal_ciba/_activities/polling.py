"""Poll mode's token-request loop, in one heartbeating activity (CIBA §7.3, §11).

The loop redeems (redeem.py: the token request and, once tokens come, their validation) until
the OP gives a final answer or the deadline passes. Token requests start at least the OP's
interval apart. A `slow_down` (CIBA §11, RFC 8628 §3.5: 5 s more for every later request) or a
503's Retry-After ends the activity with it, so the workflow records the new pacing in its
history and starts the next activity from it: a changed pace is never only in a heartbeat the
server may not have received. Within an activity the pacing (the last request's start) is in
its heartbeat details, so an attempt that follows a worker's crash continues from it, and never
polls sooner than the OP allows: the server keeps only the details of the last heartbeat it
received (the SDK throttles heartbeats), so a later attempt also waits one whole interval from
its own start, which comes after the crashed attempt's last request.

Temporal may start a later attempt while an earlier one still runs (a worker stalled past the
heartbeat timeout); the earlier one hears it only at its next heartbeat. PollRuns keeps the two
from polling at once on one worker: the later attempt joins the loop that runs.

A cancellation arrives with a heartbeat's answer. A token request already on its way is let
finish (never two at once for one auth_req_id): an approval it brings back is returned, for
the workflow to revoke its access token; anything else ends the attempt as cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporal_ciba._models import PollInput, PollProgress, RedeemInput, RedeemResult

# What slow_down adds to the interval (CIBA §11, RFC 8628 §3.5).
SLOW_DOWN_SECONDS = 5.0
# Requests start this much later than the interval allows. The OP's clock reads their arrival,
# and the time a request takes to leave the worker and cross the network varies by a few
# milliseconds from one to the next: without it, the OP sees some requests closer than the
# interval (CIBA §7.3: "at least"), as a loaded machine's chaos run showed at 0.994 s for 1 s.
PACING_MARGIN_SECONDS = 0.05
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
                # The workflow starts the next activity at the grown interval (CIBA §11).
                progress.interval_seconds += SLOW_DOWN_SECONDS
            if result.kind != "pending":
                return _ended(result, progress)
            self._heartbeat(progress)

    async def _wait_until(self, due: float, progress: PollProgress) -> None:
        while (wait := due - self._clock()) > 0:
            self._heartbeat(progress)
            await self._sleep(min(wait, HEARTBEAT_EVERY))


# A loop's answer that no attempt may have delivered is kept this long for a later attempt.
KEEP_ANSWER_SECONDS = 600.0

StartLoop = Callable[[Sequence[Any], Callable[[PollProgress], None]], Awaitable[RedeemResult]]


@dataclass
class _Run:
    """One poll loop, the attempts that follow it (their heartbeats), and its last progress."""

    task: asyncio.Future[RedeemResult] = field(init=False)
    progress: PollProgress | None = None
    # attempt number -> that attempt's heartbeat, run in its own activity context.
    followers: dict[int, Callable[[PollProgress], None]] = field(default_factory=dict)

    def report(self, progress: PollProgress) -> None:
        self.progress = progress.model_copy()
        for beat in list(self.followers.values()):
            beat(self.progress)

    def answered(self) -> bool:
        return self.task.done() and not self.task.cancelled() and self.task.exception() is None


class PollRuns:
    """The poll loops of one worker, one per poll activity (its workflow run and activity id).

    Temporal starts a later attempt of an activity whose heartbeats stopped reaching it (a worker
    stalled past the heartbeat timeout) while the earlier attempt may still be polling: it hears
    so only at its next heartbeat. Two loops would then poll for one auth_req_id, and a grant one
    of them redeemed would be lost (its completion refused, the other meeting invalid_grant).
    Here a later attempt on the same worker joins the loop that runs, heartbeats for it, and
    takes its answer; an answer is kept for a later attempt (KEEP_ANSWER_SECONDS) in case the
    attempt that returned it was no longer the current one. A loop stops when its latest attempt
    is cancelled. Attempts on two workers cannot meet: the threat model states that limit."""

    def __init__(self, *, keep_seconds: float = KEEP_ANSWER_SECONDS) -> None:
        self._runs: dict[tuple[str, str], _Run] = {}
        self._ended: deque[tuple[float, tuple[str, str], _Run]] = deque()
        self._keep = keep_seconds

    def __len__(self) -> int:
        return len(self._runs)

    async def attempt(
        self,
        key: tuple[str, str],
        start: StartLoop,
        *,
        attempt: int,
        details: Sequence[Any],
        heartbeat: Callable[[PollProgress], None],
    ) -> RedeemResult:
        """This attempt's answer: the loop's running for `key` (or kept from it), or a new one's.

        `start(details, report)` runs a PollLoop resumed from `details` whose heartbeat is
        `report`; `heartbeat` is this attempt's own, called in its activity context."""
        self._sweep()
        run = self._runs.get(key)
        context = contextvars.copy_context()
        while True:
            if run is None or (run.task.done() and not run.answered()):
                # None runs, or it stopped without an answer: resume from the freshest pacing.
                resume_from = [run.progress.model_dump(mode="json")] if run and run.progress else details
                run = self._start(key, start, resume_from)
            if run.task.done():
                return run.task.result()
            if run.progress is not None:
                heartbeat(run.progress)
            run.followers[attempt] = lambda progress: context.run(heartbeat, progress)
            try:
                await asyncio.wait({run.task})
            except asyncio.CancelledError:
                del run.followers[attempt]
                if any(other > attempt for other in run.followers):
                    raise  # a later attempt follows the loop: it goes on for that one
                run.task.cancel()  # the loop lets a request in flight finish
                return await run.task
            finally:
                run.followers.pop(attempt, None)
            if not run.task.cancelled():
                return run.task.result()  # an answer, or the loop's failure (retried)

    def _start(self, key: tuple[str, str], start: StartLoop, details: Sequence[Any]) -> _Run:
        run = _Run()
        run.task = asyncio.ensure_future(start(details, run.report))
        run.task.add_done_callback(lambda _: self._ended.append((time.monotonic(), key, run)))
        self._runs[key] = run
        return run

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self._keep
        while self._ended and self._ended[0][0] < cutoff:
            _, key, run = self._ended.popleft()
            if self._runs.get(key) is run:  # not a later loop for the same activity
                del self._runs[key]


def resume(input: PollInput, details: Sequence[Any], *, attempt: int, now: float) -> PollProgress:
    """The pacing this attempt starts from: the last heartbeat's, else the input's.

    A later attempt (after a crash, or a failed request) waits one whole interval from its own
    start too: the details the server kept may be older than the crashed attempt's last
    request, whose start came before this attempt's."""
    last = input.last_request_at.timestamp() if input.last_request_at else None
    not_before = input.not_before.timestamp() if input.not_before else None
    progress = PollProgress(interval_seconds=input.interval_seconds, last_request_started=last, not_before=not_before)
    if details:
        kept = PollProgress.model_validate(details[-1])
        progress = kept.model_copy(
            update={
                "interval_seconds": max(kept.interval_seconds, input.interval_seconds),
                "not_before": max(kept.not_before or 0.0, not_before or 0.0) or None,
            }
        )
    if attempt > 1:
        progress.last_request_started = max(progress.last_request_started or now, now)
    return progress


def next_request_at(input: PollInput, progress: PollProgress) -> float:
    """When the next token request may start: an interval after the last (or the request's
    acknowledgement), no sooner than a Retry-After, and slower once the wait is long; a margin
    later (PACING_MARGIN_SECONDS)."""
    interval = progress.interval_seconds
    last = progress.last_request_started
    since = max(input.requested_at.timestamp(), last) if last is not None else input.requested_at.timestamp()
    policy = input.polling
    if since - input.requested_at.timestamp() >= policy.long_wait_after_seconds:
        interval = max(interval, policy.long_wait_interval_seconds)
    return max(since + interval, progress.not_before or 0.0) + PACING_MARGIN_SECONDS


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

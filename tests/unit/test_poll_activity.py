"""Poll mode's token requests in one heartbeating activity (ciba.poll, temporal_ciba._activities.polling).

The real poll loop runs on the time-skipping server's clock (ScriptedOP.poll sleeps in server time)
or on a controlled clock: its pacing (an interval between request starts, slow_down, Retry-After),
its resumption from heartbeat details, its cancellation, and what a long wait costs the history."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._activities import CibaActivities
from temporal_ciba._activities.polling import PollLoop, PollRuns, next_request_at, resume
from temporal_ciba._models import (
    PollingPolicy,
    PollInput,
    PollProgress,
    RedeemInput,
    RedeemResult,
    TokenRequestResult,
)
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.ciba import CibaClient, ClientSecretBasic, RequestBinding, TransportError
from temporal_ciba.crypto import TokenSealer, access_token_context
from tests.support.mock_op import MockOP
from tests.support.mock_op import env as mock_op_env
from tests.support.scripted_op import GRANTED, ScriptedOP, gaps, start, worker
from tests.support.temporal import wait_for
from tests.support.tokens import ACCESS_TOKEN, AUTH_REQ_ID, CLIENT_ID, ISSUER, NOW, binding, claims, token_response

PENDING = TokenRequestResult(kind="pending")
SLOW_DOWN = TokenRequestResult(kind="slow_down")
SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
# The test server's clock counts milliseconds, and a gap is two readings of it, each rounded.
CLOCK_RESOLUTION = 0.002


async def event_types(handle: WorkflowHandle) -> list[int]:
    return [event.event_type async for event in handle.fetch_history_events()]


async def poll_activities(handle: WorkflowHandle) -> list[str]:
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        async for event in handle.fetch_history_events()
        if event.event_type == SCHEDULED
    ]


async def test_requests_start_an_interval_apart_slowed_by_slow_down_and_held_by_retry_after(
    env: WorkflowEnvironment,
) -> None:
    """CIBA §7.3 and §11 without a timer or a workflow task per poll: a pending answer keeps the
    activity polling; a slow_down or a Retry-After ends it, and the workflow starts the next at
    the pace it brought (in history, never only in a heartbeat the server may have missed)."""
    answers = [PENDING, SLOW_DOWN, PENDING, TokenRequestResult(kind="retry_later", retry_after_seconds=12), PENDING]
    op = ScriptedOP(env, [*answers, GRANTED], interval=5)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "approved" and outcome.sealed_access_token == "sealed-at"
    # 5 s; +5 s after slow_down for every later request; Retry-After 12 s once (the requests
    # answer at once in server time; the clock is read a moment after each sleep).
    spacing = gaps(op.poll_times)
    early = min(gap - wanted for gap, wanted in zip(spacing, [5, 10, 10, 12, 10], strict=True))
    assert early >= -CLOCK_RESOLUTION, spacing
    assert spacing == pytest.approx([5, 10, 10, 12, 10], abs=0.2)
    assert (state.polls, state.interval_seconds) == (6, 10)
    assert await poll_activities(handle) == ["ciba.poll"] * 3
    assert EventType.EVENT_TYPE_TIMER_STARTED not in await event_types(handle)


async def test_a_retried_attempt_keeps_the_slowed_interval_and_waits_it_from_its_own_start(
    env: WorkflowEnvironment,
) -> None:
    """The OP unreachable on the third request: the attempt fails and Temporal retries it (5 s
    later); the new attempt polls at the interval two slow_downs made (15 s, recorded by the
    workflow), and no sooner than that interval after its own start."""
    op = ScriptedOP(env, [SLOW_DOWN, SLOW_DOWN, PENDING, GRANTED], interval=5)
    op.token_request_failures[3] = TransportError("the OP could not be reached: connection refused")
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "approved"
    # Three activities (each slow_down ends one), the third's failed attempt retried once.
    assert op.poll_attempts == 4
    spacing = gaps(op.poll_times)
    assert spacing[:2] == pytest.approx([10, 15], abs=0.2)
    # The failed request, then the retry's: the 5 s retry backoff plus the whole 15 s interval.
    assert spacing[2] >= 15, spacing
    assert state.interval_seconds == 15


async def _at_least(op: ScriptedOP, count: int) -> bool:
    return len(op.poll_times) >= count


async def test_a_long_wait_is_one_run_of_a_few_events(env: WorkflowEnvironment) -> None:
    """Two hours pending at 5 s: one run, at most 50 events, as for any length of wait.

    After the first ten minutes every 300 s (the policy's long wait; 30 s by default). The
    benchmark counts a 24-hour wait with the defaults; here the loop moves the test server's
    clock in its 5 s heartbeat steps, so a shorter wait keeps the test short."""
    op = ScriptedOP(env, [], interval=5, expires_in=7_200)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue, polling=PollingPolicy(long_wait_interval_seconds=300))
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "expired"
    events = await event_types(handle)
    assert len(events) <= 50, len(events)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW not in events
    assert state.runs == 1
    # 5 s apart until 600 s after the acknowledgement, then 300 s apart until the deadline.
    spacing = [round(gap) for gap in gaps(op.poll_times)]
    assert spacing == [5] * 119 + [300] * ((7_200 - 600) // 300 - 1)
    assert state.polls == len(op.poll_times)


async def test_an_op_unreachable_until_the_deadline_ends_the_wait_as_expired(env: WorkflowEnvironment) -> None:
    """A request that fails in transport is retried at the loop's pacing, never sooner; the attempt
    that reaches the deadline answers pending, as any poll there would."""
    op = ScriptedOP(env, [], interval=5, expires_in=60)
    op.token_request_error = TransportError("the OP could not be reached: connection refused")
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert outcome.status == "expired"
    assert len(op.poll_times) > 2 and min(gaps(op.poll_times)) >= 5 - 0.5


async def test_a_poll_activity_that_fails_for_good_is_an_error_outcome(env: WorkflowEnvironment) -> None:
    """Not a failed workflow: the approval ends `error`, and nothing is approved."""
    op = ScriptedOP(env, [], interval=5, expires_in=60)
    op.token_request_error = ApplicationError("the loop broke", non_retryable=True)
    running, task_queue = worker(env, op)
    async with running:
        outcome = await (await start(env, op, task_queue)).result()
    assert (outcome.status, outcome.error) == ("error", None)
    assert outcome.reason == "the OP could not be reached before the deadline"
    assert outcome.sealed_access_token is None


async def test_the_approval_shows_the_loop_s_requests_and_its_slowed_interval(env: WorkflowEnvironment) -> None:
    """A slow_down ends the activity with its pacing: the status query shows it, and the next
    activity starts from it."""
    op = ScriptedOP(env, [TokenRequestResult(kind="slow_down"), GRANTED], interval=5)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        outcome = await handle.result()
        state = await handle.query(CibaApprovalWorkflow.status)
    assert outcome.status == "approved"
    assert (state.polls, state.interval_seconds) == (2, 10)
    assert [round(gap) for gap in gaps(op.poll_times)] == [10]


async def test_a_cancellation_reaches_the_loop_and_no_request_follows(env: WorkflowEnvironment) -> None:
    op = ScriptedOP(env, [], interval=5)
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await wait_for(lambda: _at_least(op, 3), what="three requests")
        await handle.cancel()
        outcome = await handle.result()
    # The workflow waited for the activity to end (cancelled): no request can follow.
    assert outcome.status == "cancelled"
    assert op.poll_cancelled and op.poll_attempts == 1


@pytest.mark.parametrize("records", [True, False], ids=["recorded", "unrecorded"])
async def test_an_approval_in_flight_at_the_cancellation_is_revoked(env: WorkflowEnvironment, records: bool) -> None:
    """The token request on its way is let finish (never two at once); its access token is revoked.
    Recorded first where the approval records its decisions (the record may hold an approval
    taken with it); where it records none, nothing is written."""
    op = ScriptedOP(env, [GRANTED], interval=5)
    op.records = records
    op.blocking = True
    running, task_queue = worker(env, op)
    async with running:
        handle = await start(env, op, task_queue)
        await asyncio.wait_for(op.poll_started.wait(), timeout=30)
        await handle.cancel()
        # The loop heartbeats while the request runs: one of them brings the cancellation.
        await asyncio.wait_for(op.poll_cancel_requested.wait(), timeout=30)
        op.block_next_poll.set()
        outcome = await handle.result()
    assert outcome.status == "cancelled"
    assert op.poll_attempts == 1
    assert op.revoked == ["sealed-at"]
    assert len(op.poll_times) == 1
    assert [written.outcome.status for written in op.recorded] == (["cancelled"] if records else [])


# The loop on a controlled clock ------------------------------------------------------------------

SENT = datetime(2026, 1, 1, tzinfo=UTC)


def poll_input(**changes: object) -> PollInput:
    binding = RequestBinding(issuer="https://op", client_id="c", auth_req_id="r", requested_at=0, scope="openid")  # type: ignore[arg-type]
    fields: dict[str, object] = {
        "redemption": RedeemInput(binding=binding, holder_workflow_id="w", holder_run_id="r"),
        "interval_seconds": 5.0,
        "requested_at": SENT,
        "deadline": SENT + timedelta(hours=1),
        **changes,
    }
    return PollInput(**fields)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.requests: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def redeem(self, _: RedeemInput) -> RedeemResult:
        self.requests.append(self.now)
        return RedeemResult(kind="approved")


class PendingClock(Clock):
    async def redeem(self, _: RedeemInput) -> RedeemResult:
        self.requests.append(self.now)
        return RedeemResult(kind="pending")


@pytest.mark.parametrize(
    ("deadline", "requests"),
    [(15.0, [5.0, 10.0]), (15.5, [5.0, 10.0, 15.0]), (12.0, [5.0, 10.0])],
    ids=["due-at-the-deadline", "due-before-it", "between"],
)
async def test_at_the_deadline_the_loop_answers_pending_having_waited_for_it(
    deadline: float, requests: list[float]
) -> None:
    """No request that could not start before the deadline; the answer comes at the deadline
    itself (the workflow then ends the approval as expired), heartbeating the pacing meanwhile."""
    start = SENT.timestamp()
    clock = PendingClock(now=start)
    beats: list[object] = []
    loop = PollLoop(clock.redeem, clock=lambda: clock.now, sleep=clock.sleep, heartbeat=beats.append)
    result = await loop.run(poll_input(deadline=SENT + timedelta(seconds=deadline)))
    assert [request - start for request in clock.requests] == requests
    assert (result.kind, result.reason, clock.now - start) == ("pending", "no decision before the deadline", deadline)
    assert beats and all(isinstance(beat, PollProgress) for beat in beats)


async def test_a_restarted_attempt_waits_the_interval_in_its_details_after_its_own_start() -> None:
    """After a crash the server has the last heartbeat's details, maybe older than the last request:
    the next request waits the kept interval (15 s, not the 5 s the workflow knew) after both the
    kept request's start and the new attempt's own start."""
    last = SENT.timestamp() + 100
    clock = Clock(now=last + 3)
    kept = PollProgress(interval_seconds=15, last_request_started=last, polls=7)
    loop = PollLoop(clock.redeem, clock=lambda: clock.now, sleep=clock.sleep, heartbeat=lambda _: None)
    result = await loop.run(poll_input(), details=[kept.model_dump(mode="json")], attempt=2)
    assert clock.requests == [last + 3 + 15]
    # Without details, a later attempt waits an interval from its own start all the same.
    clock = Clock(now=last + 3)
    loop = PollLoop(clock.redeem, clock=lambda: clock.now, sleep=clock.sleep, heartbeat=lambda _: None)
    await loop.run(poll_input(), attempt=2)
    assert clock.requests == [last + 3 + 5]
    assert (result.polls, result.interval_seconds) == (8, 15)


def test_a_first_attempt_polls_an_interval_after_the_acknowledgement_or_the_last_request() -> None:
    start = SENT.timestamp()
    assert next_request_at(poll_input(), resume(poll_input(), (), attempt=1, now=start)) == start + 5
    later = poll_input(last_request_at=SENT + timedelta(seconds=40))
    assert next_request_at(later, resume(later, (), attempt=1, now=start + 41)) == start + 45
    # Past the long-wait threshold, no faster than its interval.
    slow = poll_input(polling=PollingPolicy(long_wait_after_seconds=60, long_wait_interval_seconds=30))
    progress = PollProgress(interval_seconds=5, last_request_started=start + 61)
    assert next_request_at(slow, progress) == start + 91


def test_the_long_wait_starts_exactly_its_threshold_after_the_acknowledgement() -> None:
    slow = poll_input(polling=PollingPolicy(long_wait_after_seconds=60, long_wait_interval_seconds=30))
    start = SENT.timestamp()
    assert next_request_at(slow, PollProgress(interval_seconds=5, last_request_started=start + 60)) == start + 90
    assert next_request_at(slow, PollProgress(interval_seconds=5, last_request_started=start + 59)) == start + 64


@pytest.mark.parametrize(
    ("kept", "given", "resumed"),
    [
        # The larger interval (a slow_down the workflow had not heard of, or one it had), and the
        # later Retry-After, whichever kept it.
        ({"interval_seconds": 15, "not_before": 100.0}, {"interval_seconds": 5.0}, (15, 100.0)),
        ({"interval_seconds": 5}, {"interval_seconds": 10.0, "not_before": SENT}, (10, SENT.timestamp())),
        ({"interval_seconds": 5, "not_before": SENT.timestamp() + 9}, {"not_before": SENT}, (5, SENT.timestamp() + 9)),
        ({"interval_seconds": 5}, {}, (5, None)),
    ],
    ids=["kept-slower", "given-slower-and-a-retry-after", "kept-retry-after-later", "no-retry-after"],
)
def test_a_resumed_attempt_keeps_the_slower_pacing_of_its_details_and_its_input(
    kept: dict[str, object], given: dict[str, object], resumed: tuple[float, float | None]
) -> None:
    """Never faster than either: the details the server kept and the input the workflow gave."""
    details = [PollProgress(**kept, last_request_started=SENT.timestamp() + 40, polls=3).model_dump(mode="json")]  # type: ignore[arg-type]
    progress = resume(poll_input(**given), details, attempt=1, now=SENT.timestamp() + 41)
    assert (progress.interval_seconds, progress.not_before) == resumed
    assert (progress.last_request_started, progress.polls) == (SENT.timestamp() + 40, 3)


async def test_a_request_starts_an_interval_after_the_last_answer_not_the_last_start() -> None:
    """A request that took 2 s to be answered (a loaded worker, a slow network) may have reached
    the OP late: the next waits the interval from its answer, so the OP sees them an interval apart."""
    clock = Clock(now=SENT.timestamp())
    answers = [RedeemResult(kind="pending"), RedeemResult(kind="approved")]

    async def slow_redeem(_: RedeemInput) -> RedeemResult:
        clock.requests.append(clock.now)
        clock.now += 2
        return answers.pop(0)

    loop = PollLoop(slow_redeem, clock=lambda: clock.now, sleep=clock.sleep, heartbeat=lambda _: None)
    assert (await loop.run(poll_input())).kind == "approved"
    first = SENT.timestamp() + 5
    assert clock.requests == [first, first + 2 + 5]


async def test_no_request_that_could_not_start_before_the_deadline() -> None:
    clock = Clock(now=SENT.timestamp())
    loop = PollLoop(clock.redeem, clock=lambda: clock.now, sleep=clock.sleep, heartbeat=lambda _: None)
    result = await loop.run(poll_input(deadline=SENT + timedelta(seconds=4)))
    assert (result.kind, clock.requests) == ("pending", [])
    assert clock.now >= SENT.timestamp() + 4  # answered at the deadline, not before


# Attempts of one poll activity on one worker (PollRuns) ----------------------------------------


class HeldOP:
    """A token endpoint that answers each request when the test says so."""

    def __init__(self) -> None:
        self.requests = 0
        self.answers: asyncio.Queue[RedeemResult] = asyncio.Queue()
        self.asked = asyncio.Event()

    async def redeem(self, _: RedeemInput) -> RedeemResult:
        self.requests += 1
        self.asked.set()
        return await self.answers.get()


class Loops:
    """PollRuns' `start`: a real PollLoop on a clock that never waits, counted."""

    def __init__(self, op: HeldOP) -> None:
        self.op = op
        self.started = 0
        self.clock = Clock(now=SENT.timestamp())

    def __call__(self, details: object, report: Callable[[PollProgress], None]) -> Awaitable[RedeemResult]:
        self.started += 1
        loop = PollLoop(self.op.redeem, clock=lambda: self.clock.now, sleep=self.clock.sleep, heartbeat=report)
        return loop.run(poll_input(), details=details, attempt=1)  # type: ignore[arg-type]


KEY = ("run", "1")
APPROVED = RedeemResult(kind="approved", sealed_access_token="sealed-at")


async def test_a_later_attempt_joins_the_running_loop_and_takes_its_approval() -> None:
    """Temporal retried an attempt that stalled past its heartbeat timeout while it still polls:
    the retry must not poll too (a second token request would meet invalid_grant once the first
    redeemed the grant, and the approval would be lost). It joins, heartbeats, and takes the
    loop's approval; the stalled attempt, cancelled when it hears of the timeout, leaves the loop
    running for the later one."""
    op, runs = HeldOP(), PollRuns()
    loops = Loops(op)
    beats: dict[int, list[PollProgress]] = {1: [], 2: []}
    first = asyncio.ensure_future(runs.attempt(KEY, loops, attempt=1, details=(), heartbeat=beats[1].append))
    await asyncio.wait_for(op.asked.wait(), timeout=5)
    second = asyncio.ensure_future(runs.attempt(KEY, loops, attempt=2, details=(), heartbeat=beats[2].append))
    await asyncio.sleep(0)
    first.cancel()
    op.answers.put_nowait(RedeemResult(kind="pending"))
    await asyncio.wait_for(_requests(op, 2), timeout=5)
    op.answers.put_nowait(APPROVED)
    assert (await asyncio.wait_for(second, timeout=5)).kind == "approved"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (loops.started, op.requests) == (1, 2)
    assert beats[2] and beats[2][-1].polls == 1  # the later attempt heartbeat the loop's pacing
    # From the moment it joined: its first heartbeat is the loop's pacing as it stood then.
    assert all(isinstance(beat, PollProgress) for beat in beats[2])


async def test_an_answer_is_kept_for_the_attempt_after_the_one_it_reached() -> None:
    """The attempt that got the approval had already timed out (its completion is refused): the
    next attempt takes the same answer, with no token request."""
    op, runs = HeldOP(), PollRuns()
    loops = Loops(op)
    op.answers.put_nowait(APPROVED)
    assert (await runs.attempt(KEY, loops, attempt=1, details=(), heartbeat=lambda _: None)).kind == "approved"
    again = await runs.attempt(KEY, loops, attempt=2, details=(), heartbeat=lambda _: None)
    assert again.sealed_access_token == "sealed-at"
    assert (loops.started, op.requests) == (1, 1)
    # Another activity (another key) polls for itself.
    op.answers.put_nowait(RedeemResult(kind="rejected"))
    assert (await runs.attempt(("run", "2"), loops, attempt=1, details=(), heartbeat=lambda _: None)).kind == "rejected"
    assert loops.started == 2


async def test_kept_answers_are_let_go_after_their_time() -> None:
    op, runs = HeldOP(), PollRuns(keep_seconds=0)
    op.answers.put_nowait(APPROVED)
    await runs.attempt(KEY, Loops(op), attempt=1, details=(), heartbeat=lambda _: None)
    op.answers.put_nowait(RedeemResult(kind="rejected"))
    await runs.attempt(("run", "2"), Loops(op), attempt=1, details=(), heartbeat=lambda _: None)
    assert len(runs) == 1  # the first was swept when the second began


async def test_the_latest_attempt_cancelled_stops_the_loop_after_its_request() -> None:
    """A cancellation of the current attempt stops the loop; the request on its way is let
    finish, and an approval it brings is returned (the workflow revokes it)."""
    op, runs = HeldOP(), PollRuns()
    loops = Loops(op)
    attempt = asyncio.ensure_future(runs.attempt(KEY, loops, attempt=1, details=(), heartbeat=lambda _: None))
    await asyncio.wait_for(op.asked.wait(), timeout=5)
    attempt.cancel()
    await asyncio.sleep(0)
    assert not attempt.done()  # the request is still on its way
    op.answers.put_nowait(APPROVED)
    assert (await asyncio.wait_for(attempt, timeout=5)).kind == "approved"
    assert op.requests == 1


async def test_a_stopped_loop_is_resumed_from_its_last_pacing() -> None:
    """The loop stopped without an answer (its only attempt cancelled): the next attempt starts a
    new loop from the progress the old one reported, fresher than any heartbeat the server kept."""
    op, runs = HeldOP(), PollRuns()
    resumed: list[object] = []

    def start(details: object, report: Callable[[PollProgress], None]) -> Awaitable[RedeemResult]:
        resumed.append(details)
        return Loops(op)(details, report)

    attempt = asyncio.ensure_future(runs.attempt(KEY, start, attempt=1, details=(), heartbeat=lambda _: None))
    await asyncio.wait_for(op.asked.wait(), timeout=5)
    attempt.cancel()
    op.answers.put_nowait(RedeemResult(kind="pending"))
    with pytest.raises(asyncio.CancelledError):
        await attempt
    op.answers.put_nowait(APPROVED)
    assert (await runs.attempt(KEY, start, attempt=2, details=(), heartbeat=lambda _: None)).kind == "approved"
    assert resumed[0] == ()
    kept = PollProgress.model_validate(resumed[1][0])  # type: ignore[index]
    assert kept.last_request_started == SENT.timestamp() + 5  # the stopped loop's request


async def _requests(op: HeldOP, count: int) -> None:
    while op.requests < count:
        await asyncio.sleep(0.01)


class PollingOP(MockOP):
    """MockOP whose token endpoint says authorization_pending `pending` times, then grants."""

    def __init__(self, pending: int, now: Callable[[], float]) -> None:
        super().__init__()
        self.pending = pending
        self.now = now
        self.token_requests: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/token":
            return await super().__call__(request)
        self.token_requests.append(self.now())
        if len(self.token_requests) <= self.pending:
            return httpx.Response(400, json={"error": "authorization_pending"})
        return httpx.Response(200, json=token_response(self.keys.sign(claims())).model_dump(mode="json"))


async def test_the_poll_activity_asks_at_the_interval_and_heartbeats_only_its_pacing() -> None:
    """CibaActivities.poll as a worker runs it, on its own clock and sleep: a request an interval
    after the acknowledgement and after each pending answer, the approval's access token sealed
    for the holder at the end, and heartbeat details that hold the pacing and never a token."""
    clock = Clock(now=NOW - 30)
    op, sealer = PollingOP(pending=2, now=lambda: clock.now), TokenSealer(os.urandom(32))
    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW)
    acts = CibaActivities(ciba, sealer, clock=lambda: clock.now, sleep=clock.sleep)
    heartbeats: list[tuple[object, ...]] = []
    environment = mock_op_env()
    environment.on_heartbeat = lambda *details: heartbeats.append(details)
    redemption = RedeemInput(binding=binding(), holder_workflow_id="agent", holder_run_id="agent-run")
    acknowledged = datetime.fromtimestamp(NOW - 30, UTC)
    poll = PollInput(
        redemption=redemption, interval_seconds=5, requested_at=acknowledged, deadline=acknowledged + timedelta(hours=1)
    )
    result = await environment.run(acts.poll, poll)
    assert result.kind == "approved" and result.approval is not None and result.approval.sub == "alice"
    assert op.token_requests == [NOW - 25, NOW - 20, NOW - 15]
    holder = access_token_context(AUTH_REQ_ID, action_digest=None, workflow_id="agent", run_id="agent-run")
    assert result.sealed_access_token is not None and sealer.unseal(result.sealed_access_token, context=holder)
    progress = [PollProgress.model_validate(details[0]) for details in heartbeats]
    assert progress and progress[-1].polls == 2 and progress[-1].interval_seconds == 5
    assert all(ACCESS_TOKEN not in json.dumps(details) for details in heartbeats)

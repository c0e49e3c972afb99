"""The one fake of the approval activities, and the helpers of the workflow tests.

The fake is every `ciba.*` activity under its real name, answering from a script; the helpers
start workers and approvals on the time-skipping test server, wait for them, and read their
histories."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from temporal_ciba._activities import Redemptions
from temporal_ciba._activities.polling import PollLoop, PollRuns
from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalState,
    ApprovalWorkflowInput,
    PollInput,
    PollProgress,
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
from temporal_ciba._plugin import PASSTHROUGH_MODULES, PluginMarker
from temporal_ciba._search_attributes import CIBA_STATUS
from temporal_ciba._workflow import STATUS_QUERY, CibaApprovalWorkflow
from temporal_ciba.ciba import RequestBinding, TransportError
from temporal_ciba.records import RecordDecisionInput, RecordedDecision
from tests.support.temporal import wait_for
from tests.support.workflow_environment import HEARTBEATS_AT_ONCE

# A scripted answer to a token request: what the OP's token endpoint says, which the redeem
# then validates; or, for the redeem only, its whole verdict (a quorum's approver's, say).
Answer = TokenRequestResult | RedeemResult


# The one proof the scripted activities refuse (a notification someone other than the callback wrote).
FORGED_PROOF = "forged"


class ScriptedOP:
    """The approval activities under their real names, answering from a script.

    They record what they were asked and when (in workflow time). `answers` is one script for
    every request (each gets auth_req_id `req-1`), or one script per login_hint (each request
    then gets auth_req_id `req-<login_hint>`); a token request takes the next answer of its
    script, and `pending` once the script is spent."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        answers: list[Answer] | dict[str, list[Answer]],
        *,
        interval: int = 5,
        expires_in: int = 600,
        send_error: str | None = None,
        mode: str = "poll",
    ) -> None:
        self.env = env
        self.answers = answers
        self.interval = interval
        self.expires_in = expires_in
        self.send_error = send_error
        self.send_error_description: str | None = "refused"
        self.mode = mode
        self.asked: list[ApprovalRequest] = []  # every backchannel request, as the workflow sent it
        self.poll_times: list[float] = []
        self.token_requests: list[str] = []  # the auth_req_id of each token request
        self.revoked: list[str] = []
        self.block_next_poll = asyncio.Event()
        self.blocking = False
        self.poll_started = asyncio.Event()
        self.block_send = False
        self.send_started = asyncio.Event()
        self.sends = 0
        self.gated = False
        self.release: asyncio.Queue[None] = asyncio.Queue()
        self.validated: list[ValidateTokensInput | RedeemInput] = []
        self.redemptions = Redemptions()
        self.pending_request_seconds: float | None = None  # what a redeem that is not final says it took
        self.token_request_error: Exception | None = None  # every token request raises it
        self.records = True  # what the send says: the approval records its outcome
        self.poll_activity = True  # what the send says: poll mode polls in one activity (ciba.poll)
        # The decision records the approval wrote (ciba.record_decision), one per write attempt.
        self.recorded: list[RecordDecisionInput] = []
        # What the next record writes raise, one per attempt (then they succeed).
        self.record_failures: list[Exception] = []
        self.record_started = asyncio.Event()
        # The decision the record write finds already on record, made from the one it was given
        # (RecordedDecision.outcome); None: the write records the given one.
        self.decision_on_record: Callable[[ApprovalOutcome], ApprovalOutcome] | None = None
        self.answer_record: asyncio.Event | None = None  # when set, record writes wait for it
        self.answer_send: asyncio.Event | None = None  # when set, the send answers once it is set
        self.validation_error: Exception | None = None  # every validation attempt raises it
        self.validation_started = asyncio.Event()
        # When set, validations wait for it. (An activity that never returns would outlive its
        # test: it does not heartbeat, so no cancellation reaches it, and while the server counts
        # it as running the time-skipping server stops skipping time for the tests after.)
        self.answer_validation: asyncio.Event | None = None
        self.revocation_error: Exception | None = None  # every revocation attempt raises it
        self.revocation_attempts = 0
        # What a late access token's revocation names: the real activity opens the sealed token
        # only with the action digest and the holder it was sealed to.
        self.access_token_revocations: list[RevokeAccessTokenInput] = []
        self.verified: list[VerifyNotificationInput] = []  # every push whose proof was checked
        self.redeemed: list[RedeemInput] = []  # what each redeem was asked (its pings to check among it)
        self.verification_error: Exception | None = None  # every proof check raises it
        self.verification_started = asyncio.Event()
        self.answer_verification: asyncio.Event | None = None  # when set, proof checks wait for it
        # The poll activity's heartbeats (its pacing), and how many attempts it made.
        self.heartbeats: list[PollProgress] = []
        self.poll_attempts = 0
        self.poll_runs = PollRuns()  # the poll loops, as CibaActivities keeps them
        self.poll_cancelled = False  # the poll activity ended cancelled
        self.poll_cancel_requested = asyncio.Event()  # a cancellation reached the poll activity
        # The token requests (by number, from 1) that raise, once each.
        self.token_request_failures: dict[int, Exception] = {}

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.send,
            self.request_token,
            self.validate,
            self.revoke,
            self.redeem,
            self.revoke_access_token,
            self.record,
            self.verify_notification,
            self.poll,
        ]

    def auth_req_id_for(self, login_hint: str | None) -> str:
        return f"req-{login_hint}" if isinstance(self.answers, dict) else "req-1"

    def _next_answer(self, auth_req_id: str) -> Answer:
        if isinstance(self.answers, dict):
            script = self.answers.get(auth_req_id.removeprefix("req-"), [])
        else:
            script = self.answers
        return script.pop(0) if script else TokenRequestResult(kind="pending")

    @activity.defn(name="ciba.send_authentication_request")
    async def send(self, input: SendRequestInput) -> SendRequestResult:
        self.asked.append(input.request)
        self.send_started.set()
        self.sends += 1
        if self.answer_send is not None:
            await self.answer_send.wait()
        if self.block_send:
            await asyncio.Event().wait()  # until the workflow's cancellation cancels this activity
        if self.send_error == "unreachable":
            raise TransportError("the OP could not be reached: connection refused")
        if self.send_error:
            reason = f"{self.send_error}: {self.send_error_description}" if self.send_error_description else None
            return SendRequestResult(error=self.send_error, reason=reason, records=self.records)
        auth_req_id = self.auth_req_id_for(input.request.login_hint)
        binding = RequestBinding(
            issuer="https://op",
            client_id="c",
            auth_req_id=auth_req_id,
            requested_at=self.sends,  # each request its own binding, as the real clock makes it
            scope="openid",
            delivery_mode=self.mode,
            expected_subject=input.request.expected_subject,
        )  # type: ignore[arg-type]
        return SendRequestResult(
            auth_req_id=auth_req_id,
            expires_in=self.expires_in,
            interval=self.interval,
            binding=binding,
            delivery_mode=self.mode,
            binding_message_sent=f"{input.request.binding_message}, code ABCD",
            records=self.records,
            poll_activity=self.poll_activity,
        )  # type: ignore[arg-type]

    @activity.defn(name="ciba.request_token")
    async def request_token(self, input: TokenRequestInput) -> TokenRequestResult:
        answer = await self._token_request(input.auth_req_id)
        assert isinstance(answer, TokenRequestResult), "a redeem's verdict answers only the redeem"
        return answer

    async def _token_request(self, auth_req_id: str) -> Answer:
        self.token_requests.append(auth_req_id)
        self.poll_times.append((await self.env.get_current_time()).timestamp())
        self.poll_started.set()
        if self.token_request_error is not None:
            raise self.token_request_error
        if (failure := self.token_request_failures.pop(len(self.poll_times), None)) is not None:
            raise failure
        if self.blocking:
            await self.block_next_poll.wait()
        if self.gated:
            await self.release.get()
        return self._next_answer(auth_req_id)

    @activity.defn(name="ciba.verify_notification")
    async def verify_notification(self, input: VerifyNotificationInput) -> bool:
        """A push's proof, as scripted: every proof holds but FORGED_PROOF (the real check is unit-tested)."""
        self.verified.append(input)
        self.verification_started.set()
        if self.answer_verification is not None:
            await self.answer_verification.wait()
        if self.verification_error is not None:
            raise self.verification_error
        return input.delivery.proof != FORGED_PROOF

    @activity.defn(name="ciba.redeem")
    async def redeem(self, input: RedeemInput) -> RedeemResult:
        """The token request answers from the script.

        Granted tokens are validated as `validate` does, and rejected ones revoked on the spot; a
        repeat joins the first (Redemptions), as the real activity does."""
        self.redeemed.append(input)
        unproven = sum(notice.proof == FORGED_PROOF for notice in input.notices)
        if input.notices and unproven == len(input.notices):
            return RedeemResult(kind="unproven", unproven_notices=unproven)
        plain = input.model_copy(update={"notices": [], "first_run_id": None})
        result = await self.redemptions.once(plain, lambda: self._redeem(plain))
        return result.model_copy(update={"unproven_notices": unproven})

    async def _redeem(self, input: RedeemInput) -> RedeemResult:
        answer = await self._token_request(input.binding.auth_req_id)
        if isinstance(answer, RedeemResult):
            return answer
        if answer.kind != "granted":
            result = RedeemResult.model_validate(answer.model_dump(exclude={"sealed_tokens"}))
            if answer.kind != "failed":
                result.request_seconds = self.pending_request_seconds
            return result
        assert answer.sealed_tokens is not None
        self.validated.append(input)
        if answer.sealed_tokens == "forged":
            self.revoked.append(answer.sealed_tokens)
            reason = "the ID token was issued by another issuer"
            return RedeemResult(kind="rejected", error="iss_mismatch", reason=reason)
        return RedeemResult(
            kind="rejected" if answer.sealed_tokens == "rejected-with-claims" else "approved",
            approval=APPROVAL,
            sealed_access_token="sealed-at",
            sealed_id_token="sealed-id-token",
        )  # type: ignore[arg-type]

    @activity.defn(name="ciba.poll")
    async def poll(self, input: PollInput) -> RedeemResult:
        """The real poll loop (temporal_ciba._activities.polling) on the test server's clock.

        It sleeps in server time (the time-skipping server skips it) and redeems from the script
        as `redeem` does; every heartbeat it makes is kept in `heartbeats`."""
        now = (await self.env.get_current_time()).timestamp()

        async def sleep(seconds: float) -> None:
            nonlocal now
            await self.env.sleep(seconds)
            now = (await self.env.get_current_time()).timestamp()

        def heartbeat(progress: PollProgress) -> None:
            self.heartbeats.append(progress.model_copy())
            activity.heartbeat(progress.model_dump(mode="json"))

        info = activity.info()
        self.poll_attempts += 1

        def start(details: Sequence[Any], report: Callable[[PollProgress], None]) -> Awaitable[RedeemResult]:
            loop = PollLoop(self._redeem, clock=lambda: now, sleep=sleep, heartbeat=report)
            return loop.run(input, details=details, attempt=info.attempt)

        async def watch() -> None:
            await activity.wait_for_cancelled()
            self.poll_cancel_requested.set()

        watcher = asyncio.create_task(watch())
        try:
            return await self.poll_runs.attempt(
                (info.workflow_run_id or "", info.activity_id),
                start,
                attempt=info.attempt,
                details=info.heartbeat_details,
                heartbeat=heartbeat,
            )
        except asyncio.CancelledError:
            self.poll_cancelled = True
            raise
        finally:
            watcher.cancel()

    @activity.defn(name="ciba.revoke_access_token")
    async def revoke_access_token(self, input: RevokeAccessTokenInput) -> bool:
        self.access_token_revocations.append(input)
        if self.revocation_error is not None:
            raise self.revocation_error
        self.revoked.append(input.sealed_access_token)
        return True

    @activity.defn(name="ciba.validate_tokens")
    async def validate(self, input: ValidateTokensInput) -> ValidateTokensResult:
        self.validated.append(input)
        self.validation_started.set()
        if self.answer_validation is not None:
            await self.answer_validation.wait()
        if self.validation_error is not None:
            raise self.validation_error
        if input.sealed_tokens == "forged":
            return ValidateTokensResult(error="iss_mismatch", reason="the ID token was issued by another issuer")
        if input.sealed_tokens == "refused without a reason":
            return ValidateTokensResult(error="invalid_token")
        return ValidateTokensResult(
            approval=APPROVAL,
            sealed_access_token="sealed-at",
            sealed_id_token="sealed-id-token",
        )  # type: ignore[arg-type]

    @activity.defn(name="ciba.revoke_tokens")
    async def revoke(self, input: RevokeTokensInput) -> bool:
        self.revocation_attempts += 1
        if self.revocation_error is not None:
            raise self.revocation_error
        self.revoked.append(input.sealed_tokens)
        return True

    @activity.defn(name="ciba.record_decision")
    async def record(self, input: RecordDecisionInput) -> RecordedDecision:
        self.recorded.append(input)
        self.record_started.set()
        if self.answer_record is not None:
            await self.answer_record.wait()
        if self.record_failures:
            raise self.record_failures.pop(0)
        on_record = self.decision_on_record(input.outcome) if self.decision_on_record is not None else None
        return RecordedDecision(record_id="record-id", outcome=on_record)


async def start(
    env: WorkflowEnvironment,
    op: ScriptedOP,
    task_queue: str,
    *,
    workflow_type: Any = CibaApprovalWorkflow,  # or a stand-in with its `run` (test_decision_path_without_redeem)
    **request: object,
) -> WorkflowHandle:
    approval = ApprovalRequest(login_hint="alice", binding_message="Approve it", **request)  # type: ignore[arg-type]
    return await env.client.start_workflow(
        workflow_type.run,
        ApprovalWorkflowInput(request=approval),
        id=f"wf-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


def worker(
    env: WorkflowEnvironment,
    op: ScriptedOP,
    *workflows: type,
    interceptors: Sequence[Interceptor] = (),
    task_queue: str | None = None,
    **options: Any,
) -> tuple[Worker, str]:
    """A worker of the approval (and `workflows`) on a new task queue, or on `task_queue` (a restart);
    `options` go to the Worker."""
    task_queue = task_queue or f"logic-{uuid.uuid4().hex[:8]}"
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[CibaApprovalWorkflow, *workflows],
        # The sandbox as CibaPlugin sets it up: temporal_ciba passed through, not re-imported. So
        # the workflow code under test is the module mutmut instruments (scripts/mutation.sh).
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
        ),
        # A bug that raises in workflow code fails the test's workflow at once, instead of a
        # workflow task retried until the test times out.
        workflow_failure_exception_types=[Exception],
        activities=op.activities,
        # What CibaPlugin adds to a worker for require_approval to find.
        interceptors=[*interceptors, PluginMarker()],
        max_heartbeat_throttle_interval=HEARTBEATS_AT_ONCE,
        **options,
    ), task_queue


def dropped_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each "dropped" line, without the workflow's context that the SDK's logger appends."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped a ")]
    return [line.split(" ({'attempt'")[0] for line in lines]


async def wait_for_event(handle: WorkflowHandle, event_type: EventType.ValueType, *, count: int = 1) -> None:
    """Until the history holds `count` events of this type (the server has recorded them)."""

    async def recorded() -> bool:
        events = [event async for event in handle.fetch_history_events() if event.event_type == event_type]
        return len(events) >= count

    await wait_for(recorded, what=f"{count} {EventType.Name(event_type)}")


async def workflow_task_after(
    handle: WorkflowHandle,
    event_type: EventType.ValueType,
    task_event: EventType.ValueType,
    *,
    count: int = 1,
) -> None:
    """Until the history holds `count` events of this type and, after the last of them, a workflow
    task event: STARTED when the workflow has them while its local activity (which heartbeats the
    task) may still run; COMPLETED when it has acted on them (holds a child's handle, say)."""

    async def after() -> bool:
        kinds = [event.event_type async for event in handle.fetch_history_events()]
        seen = [index for index, kind in enumerate(kinds) if kind == event_type]
        return len(seen) >= count and task_event in kinds[seen[-1] :]

    await wait_for(after, what=f"{count} {EventType.Name(event_type)} and a {EventType.Name(task_event)} after them")


async def upserted_fields(handle: WorkflowHandle) -> list[set[str]]:
    """The search attributes each upsert in the run's history set, by name (without the SDK's
    own TemporalChangeVersion, which patches add)."""
    return [
        set(event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        - {"TemporalChangeVersion"}
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]


async def upserted_statuses(handle: WorkflowHandle) -> int:
    """How many times the approval set its status search attribute."""
    return len([fields for fields in await upserted_fields(handle) if CIBA_STATUS.name in fields])


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# The activity reads the test server's clock when it runs, after the timer fired and the task was
# dispatched: on a loaded machine that adds real seconds to a gap (5.2 s seen for a 5 s interval).
# The rule is "never sooner than the interval"; the upper slack only has to tell apart the
# intervals the rules produce (5, 10, 30, 40, 60 s).
EARLY_SLACK = 0.5
LATE_SLACK = 3.0

GRANTED = TokenRequestResult(kind="granted", sealed_tokens="sealed-tokens")


# What the validation activity vouches for: every claim an outcome carries.
APPROVAL = {
    "sub": "alice",
    "acr": "urn:example:acr:mfa",
    "amr": ["hwk", "pin"],
    "auth_time": 1_700_000_000,
    "scope": "openid payments",
    "authorization_details": [{"type": "payment_initiation", "creditorName": "ACME GmbH"}],
    "issued_at": 1_700_000_001,
    "expires_at": 1_700_000_301,
}


async def wait_pending(handle: WorkflowHandle, *, timeout: float = 30.0) -> None:
    """Until the approval's status query (on its own workflow, or on the caller of an inline one) says pending.

    It has sent its request and knows its auth_req_id."""

    async def pending() -> bool:
        return (await handle.query(STATUS_QUERY, result_type=ApprovalState)).status == "pending"

    await wait_for(pending, timeout=timeout, interval=0.02, what=f"{handle.id} to be pending")


def approved(sub: str, hint: str | None = None) -> RedeemResult:
    """A redeem's verdict.

    Approved by `sub`, asked of `hint` (default: the same name); its token names the hint."""
    return RedeemResult(
        kind="approved",
        approval={"sub": sub, "scope": "openid", "issued_at": 1, "expires_at": 2},  # type: ignore[arg-type]
        sealed_access_token=f"sealed-{hint or sub}",
    )

"""One approval's state machine, in workflow code: send the request, wait, redeem, and end with
an outcome.

    send the backchannel request ──▶ wait (timer, or a notification) ──▶ redeem: request the
          ▲                                                               token and validate it
          └──────── pending / slow_down / Retry-After ◀──────────────────────┤
                                                                             ▼
                                                                          outcome

It lives in one of two homes (temporal_ciba._workflow): CibaApprovalWorkflow, a child of the
caller, or the caller's own workflow (`require_approval(..., inline=True)`). It does no I/O;
every call to the OP and every check is an activity. It ends with an ApprovalOutcome whatever
happens: a refusal, an expiry, a forged token and a cancellation are outcomes, not failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._activities import GRANT_LOST, CibaActivities
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalPhase,
        ApprovalRequest,
        ApprovalState,
        OutcomeStatus,
        PendingState,
        PingNotice,
        PushDelivery,
        RedeemInput,
        RedeemResult,
        RevokeAccessTokenInput,
        RevokeTokensInput,
        SendRequestInput,
        TokenRequestInput,
        TokenRequestResult,
        ValidateTokensInput,
    )
    from temporal_ciba._rendering import code, describe_authorization_details
    from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS
    from temporal_ciba.ciba import PollSchedule, RequestBinding, SlowDown, ValidatedApproval
    from temporal_ciba.records import DecisionRecorder, RecordDecisionInput

T = TypeVar("T")
# Pings are paced by the interval since this change; histories from before it replay without.
PING_PACING_PATCH = "ping-pacing"
# Every outcome is recorded (temporal_ciba.records) since this change. Only an outcome reached
# before the send activity answered asks it: the answer says so otherwise (SendRequestResult.records).
RECORD_PATCH = "decision-record"
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
# Token errors that mean the user said no, or the request ran out (CIBA §11).
DECISION_ERRORS: dict[str, OutcomeStatus] = {"access_denied": "denied", "expired_token": "expired"}
# A fallback poll in ping or push mode is spread over this fraction more, so thousands of
# approvals started together do not poll together.
FALLBACK_JITTER = 0.25
# Notices for an auth_req_id the approval has not recorded yet (a ping can overtake the send
# activity's result); a few are enough, the bearer was verified.
MAX_EARLY_NOTICES = 8


@dataclass(frozen=True)
class Holder:
    """The workflow run that may use the approved access token (temporal_ciba._grant)."""

    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class DecisionPath:
    """The decision path of issue 15; False only when replaying histories recorded before it.

    redeem: the request and the redeem (one step that requests and validates the tokens) are
    local activities (no sealed token response in history, no task queue round trips); a ping
    for an auth_req_id not yet recorded is kept; the run chain of a notice is checked here, not
    by the callback; two search-attribute upserts (pending, outcome) instead of four; the
    fallback poll of ping and push mode is jittered.
    """

    redeem: bool


class Approval:
    """One approval, from its request to its outcome, in the workflow that hosts it; the host
    routes the callback's signals to `notify` and `deliver` and answers its query with `state`."""

    def __init__(
        self,
        request: ApprovalRequest,
        *,
        holder: Holder,
        path: DecisionPath,
        resume: PendingState | None = None,
        continue_as_new: Callable[[PendingState], NoReturn] | None = None,
    ) -> None:
        self._request = request
        self._holder = holder
        self._path = path
        self._continue_as_new = continue_as_new
        self._pending = resume
        self._notified = resume.notified if resume else False
        self._asked_again = resume.asked_again if resume else False
        # Whether the outcome is recorded: the send activity's answer says (None: not sent).
        self._records: bool | None = resume.records if resume else None
        self._early_notices: list[str] = []
        self._early_pushes: list[PushDelivery] = []
        self._pushed: PushDelivery | None = None
        self._tokens_to_revoke: str | None = None
        self._late_access_token: str | None = None
        # The validated ID token, sealed: the decision record's evidence.
        self._sealed_id_token: str | None = None
        self.state = ApprovalState(
            status="pending" if resume else "requesting",
            workflow_id=workflow.info().workflow_id,
            login_hint=request.approver,
            binding_message=request.binding_message,
            authorization_details=request.authorization_details,
            summary=request.summary,
            action_digest=request.action_digest,
        )
        if resume:
            self._record_pending(resume)

    # Notifications (verified by the callback service) ---------------------------------------------

    def _own_chain(self, first_run_id: str | None) -> bool:
        # The bearer names a run chain; an earlier approval under the same workflow id is another.
        return first_run_id is None or first_run_id == workflow.info().first_execution_run_id

    def notify(self, notice: PingNotice) -> None:
        """Ping (CIBA §10.2): request the token now."""
        pending = self._pending
        if not self._own_chain(notice.first_run_id):
            workflow.logger.warning("ignored a ping for another run chain")
        elif pending is None and self._path.redeem:
            if len(self._early_notices) < MAX_EARLY_NOTICES:
                self._early_notices.append(notice.auth_req_id)
        elif (
            pending is not None
            and notice.auth_req_id == pending.auth_req_id
            and pending.binding.delivery_mode == "ping"
        ):
            self._notified = True
        else:
            workflow.logger.warning("ignored a ping for another auth_req_id or mode")

    def deliver(self, delivery: PushDelivery) -> None:
        """Push (CIBA §10.3): the tokens or an error; the first wins."""
        pending = self._pending
        if pending is None and self._path.redeem and self._own_chain(delivery.first_run_id):
            if len(self._early_pushes) < MAX_EARLY_NOTICES:
                self._early_pushes.append(delivery)
        elif (
            not self._own_chain(delivery.first_run_id)
            or pending is None
            or delivery.auth_req_id != pending.auth_req_id
            or pending.binding.delivery_mode != "push"
        ):
            workflow.logger.warning("ignored a push for another auth_req_id, run chain or mode")
        elif self._pushed is None:
            self._pushed = delivery

    # The process ------------------------------------------------------------------------------------

    async def run(self) -> ApprovalOutcome:
        """The outcome, once its decision record is written (histories from before records: not).
        Whether to record is in the send activity's result, already in history, so the decision
        path pays one marker for it; an outcome reached before any answer asks a patch."""
        outcome = await self._decide()
        if self._records if self._records is not None else workflow.patched(RECORD_PATCH):
            await self._record(outcome)
        return outcome

    async def _decide(self) -> ApprovalOutcome:
        try:
            while True:
                if self._pending is None:
                    self._show("requesting")
                    refused = await self._send_request()
                    if refused is not None:
                        return refused
                self._show("pending")
                outcome = await self._wait_for_decision()
                if outcome is not None:
                    return outcome
                # The grant was lost and the caller asked for a second request.
                self._asked_again = True
                self._pending = None
        except asyncio.CancelledError:
            if self._tokens_to_revoke is not None:
                await self._revoke(self._tokens_to_revoke)
            if self._late_access_token is not None:
                await self._revoke_access_token(self._late_access_token)
            return self._finish("cancelled", reason="the approval was cancelled before a decision")

    async def _send_request(self) -> ApprovalOutcome | None:
        """The backchannel request; an outcome if the OP refused it, else None with _pending set."""
        info = workflow.info()
        if self._request.policy_deadline is not None and self._request.policy_deadline <= workflow.now():
            return self._finish("expired", reason="the policy deadline passed before the request was sent")
        send = SendRequestInput(
            request=self._request, workflow_id=info.workflow_id, first_run_id=info.first_execution_run_id
        )
        try:
            # On the redeem path a local activity: no task queue round trip, three events fewer.
            # A worker that dies while the request is on its way sends it again either way.
            if self._path.redeem:
                sent = await workflow.execute_local_activity_method(
                    CibaActivities.send_authentication_request,
                    send,
                    start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
                    retry_policy=SEND_RETRY,
                )
            else:
                sent = await workflow.execute_activity_method(
                    CibaActivities.send_authentication_request,
                    send,
                    start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
                    retry_policy=SEND_RETRY,
                )
        except ACTIVITY_FAILED as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            return self._finish("error", reason=f"the OP could not be reached: {_cause(exc)}")
        self._records = sent.records
        if sent.auth_req_id is None or sent.binding is None or sent.expires_in is None:
            return self._finish("error", error=sent.error, reason=sent.reason or "the OP refused the request")
        self.state.binding_message_sent = sent.binding_message_sent
        now = workflow.now()
        deadline = now + timedelta(seconds=sent.expires_in)
        if self._request.policy_deadline is not None:
            deadline = min(deadline, self._request.policy_deadline)
        self._pending = PendingState(
            auth_req_id=sent.auth_req_id,
            binding=sent.binding,
            requested_at=now,
            deadline=deadline,
            interval_seconds=float(sent.interval or 5),
            asked_again=self._asked_again,
            records=sent.records,
        )
        if sent.auth_req_id in self._early_notices and sent.binding.delivery_mode == "ping":
            self._notified = True
        if sent.binding.delivery_mode == "push":
            self._pushed = next((d for d in self._early_pushes if d.auth_req_id == sent.auth_req_id), None)
        self._early_notices.clear()
        self._early_pushes.clear()
        self._record_pending(self._pending)
        return None

    async def _wait_for_decision(self) -> ApprovalOutcome | None:
        """The outcome, or None when a lost grant is to be answered by asking again."""
        pending = self._pending
        assert pending is not None
        schedule = PollSchedule(interval=pending.interval_seconds)
        retry_after = 0.0
        last_request_seconds = 0.0
        polls_this_run = 0
        push = pending.binding.delivery_mode == "push"
        while True:
            remaining = (pending.deadline - workflow.now()).total_seconds()
            if self._pushed is not None:
                return await self._accept_push(pending, self._pushed)
            if remaining <= 0:
                return self._finish("expired", reason="no decision before the deadline")
            if not self._notified:
                # Push mode never polls (CIBA §10.3): the OP delivers, or the deadline passes.
                # Polls start an interval apart (CIBA §7.3): the timer starts once the last
                # request has returned, so it is shorter by the time that request took.
                poll_delay = self._poll_delay(pending, schedule.interval) - last_request_seconds
                delay = remaining if push else max(poll_delay, retry_after)
                if delay > 0:
                    try:
                        await workflow.wait_condition(
                            lambda: self._notified or self._pushed is not None, timeout=min(delay, remaining)
                        )
                    except TimeoutError:
                        pass
                if self._pushed is not None or push:
                    continue
                if workflow.now() >= pending.deadline:
                    return self._finish("expired", reason="no decision before the deadline")
            if self._notified and not await self._pace_notified_request(pending, max(schedule.interval, retry_after)):
                return self._finish("expired", reason="no decision before the deadline")
            self._notified = False
            answer: RedeemResult | TokenRequestResult | None
            if self._path.redeem:
                answer = await self._redeem(pending, schedule.interval)
            else:
                answer = await self._request_token(pending, schedule.interval)
            pending.last_token_request_at = workflow.now()
            polls_this_run += 1
            pending.polls += 1
            self.state.polls = pending.polls
            retry_after = 0.0
            last_request_seconds = (answer.request_seconds if isinstance(answer, RedeemResult) else None) or 0.0
            if answer is None:
                return self._finish("error", reason="the OP could not be reached before the deadline")
            if isinstance(answer, RedeemResult) and answer.kind in ("approved", "rejected"):
                return self._redeemed(pending, answer)
            if answer.kind == "granted":
                assert isinstance(answer, TokenRequestResult) and answer.sealed_tokens is not None
                return await self._validate(pending, answer.sealed_tokens)
            if answer.kind == "failed":
                if answer.error == GRANT_LOST and self._request.on_lost_grant == "ask_again" and not self._asked_again:
                    workflow.logger.warning("grant of auth_req_id %s lost: asking again", pending.auth_req_id)
                    return None
                status = DECISION_ERRORS.get(answer.error or "", "error")
                reason = self._denial() if status == "denied" else answer.reason or "the OP ended the request"
                return self._finish(status, error=answer.error, reason=reason)
            if answer.kind == "slow_down":
                schedule, _ = schedule.after(SlowDown())
            elif answer.kind == "retry_later":
                retry_after = answer.retry_after_seconds or 0.0
            pending.interval_seconds = schedule.interval
            self.state.interval_seconds = schedule.interval
            if self._continue_as_new is not None and (
                polls_this_run >= self._request.polling.polls_per_run or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                pending.notified = self._notified
                pending.runs += 1
                self._continue_as_new(pending)

    async def _pace_notified_request(self, pending: PendingState, spacing: float) -> bool:
        """A ping asks for the token at once, but never sooner than `spacing` after the last
        request (CIBA §7.3), however many pings (or replayed ones) arrive; False if the
        deadline passes first."""
        if pending.last_token_request_at is None:
            return True
        wait = (pending.last_token_request_at + timedelta(seconds=spacing) - workflow.now()).total_seconds()
        if wait <= 0 or not workflow.patched(PING_PACING_PATCH):
            return True
        remaining = (pending.deadline - workflow.now()).total_seconds()
        await workflow.sleep(min(wait, max(remaining, 0.0)))
        return workflow.now() < pending.deadline

    def _poll_delay(self, pending: PendingState, interval: float) -> float:
        """The OP's interval; slower once the wait is long; in ping mode only a slow fallback."""
        policy = self._request.polling
        delay = interval
        if (workflow.now() - pending.requested_at).total_seconds() >= policy.long_wait_after_seconds:
            delay = max(delay, policy.long_wait_interval_seconds)
        if pending.binding.delivery_mode != "poll":
            fallback = policy.notification_fallback_interval_seconds
            if self._path.redeem:
                fallback *= 1 + FALLBACK_JITTER * workflow.random().random()
            delay = max(delay, fallback)
        return delay

    async def _redeem(self, pending: PendingState, interval: float) -> RedeemResult | None:
        """One token request and its validation, as a local activity: no task queue round trip,
        no token response in history. Shielded from cancellation like _request_token. None if
        the OP stayed unreachable."""
        remaining = pending.deadline - workflow.now()
        handle = workflow.start_local_activity_method(
            CibaActivities.redeem,
            RedeemInput(
                binding=pending.binding,
                holder_workflow_id=self._holder.workflow_id,
                holder_run_id=self._holder.run_id,
                action_digest=self._request.action_digest,
            ),
            start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
            schedule_to_close_timeout=max(remaining, 2 * TOKEN_REQUEST_TIMEOUT),
            retry_policy=_token_request_retry(interval),
        )

        def keep_late(late: RedeemResult) -> None:
            if late.kind == "approved":
                self._late_access_token = late.sealed_access_token

        return await _shielded(handle, keep_late)

    def _redeemed(self, pending: PendingState, result: RedeemResult) -> ApprovalOutcome:
        if result.kind == "rejected" or result.approval is None:
            return self._finish("rejected", error=result.error, reason=result.reason or "the tokens failed validation")
        return self._approved(pending, result.approval, result.sealed_access_token, result.sealed_id_token)

    async def _request_token(self, pending: PendingState, interval: float) -> TokenRequestResult | None:
        """One token request (histories from before the redeem path). It is shielded from
        cancellation: tokens it brings back after a cancellation must be revoked, not dropped.
        None if the OP stayed unreachable."""
        remaining = pending.deadline - workflow.now()
        handle = workflow.start_activity_method(
            CibaActivities.request_token,
            TokenRequestInput(auth_req_id=pending.auth_req_id),
            start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
            schedule_to_close_timeout=max(remaining, 2 * TOKEN_REQUEST_TIMEOUT),
            retry_policy=_token_request_retry(interval),
        )

        def keep_late(late: TokenRequestResult) -> None:
            if late.kind == "granted":
                self._tokens_to_revoke = late.sealed_tokens

        return await _shielded(handle, keep_late)

    async def _accept_push(self, pending: PendingState, delivery: PushDelivery) -> ApprovalOutcome:
        """Pushed tokens are validated with the push rules (the binding's mode is push); a
        pushed error is the outcome (CIBA §12)."""
        if delivery.sealed_tokens is not None:
            return await self._validate(pending, delivery.sealed_tokens)
        error = delivery.error or "transaction_failed"
        reason = f"{error}: {delivery.error_description}" if delivery.error_description else error
        status = DECISION_ERRORS.get(error, "error")
        return self._finish(status, error=error, reason=self._denial() if status == "denied" else reason)

    def _denial(self) -> str:
        """The human line of a denial (`error` keeps the code, access_denied)."""
        return f"{self._request.approver} denied the request on their device"

    async def _validate(self, pending: PendingState, sealed_tokens: str) -> ApprovalOutcome:
        self._show("validating")
        self._tokens_to_revoke = sealed_tokens
        try:
            result = await workflow.execute_activity_method(
                CibaActivities.validate_tokens,
                ValidateTokensInput(
                    sealed_tokens=sealed_tokens,
                    binding=pending.binding,
                    holder_workflow_id=self._holder.workflow_id,
                    holder_run_id=self._holder.run_id,
                    action_digest=self._request.action_digest,
                ),
                start_to_close_timeout=timedelta(seconds=45),
                retry_policy=SHORT_RETRY,
            )
        except ACTIVITY_FAILED as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            await self._revoke(sealed_tokens)
            return self._finish("error", reason=f"the tokens could not be validated: {_cause(exc)}")
        self._tokens_to_revoke = None
        if result.approval is None:
            await self._revoke(sealed_tokens)
            return self._finish("rejected", error=result.error, reason=result.reason or "the tokens failed validation")
        return self._approved(pending, result.approval, result.sealed_access_token, result.sealed_id_token)

    def _approved(
        self,
        pending: PendingState,
        approval: ValidatedApproval,
        sealed_access_token: str | None,
        sealed_id_token: str | None,
    ) -> ApprovalOutcome:
        self._sealed_id_token = sealed_id_token
        pinned = pending.binding.expected_subject is not None
        return self._finish(
            "approved",
            reason=f"approved by {approval.sub}"
            + ("" if pinned else " (not pinned to the person asked: no expected_subject for this login_hint)"),
            subject_pinned=pinned,
            sub=approval.sub,
            acr=approval.acr,
            amr=approval.amr,
            auth_time=approval.auth_time,
            scope=approval.scope,
            authorization_details=approval.authorization_details,
            sealed_access_token=sealed_access_token,
        )

    async def _revoke(self, sealed_tokens: str) -> None:
        assert self._pending is not None
        try:
            await workflow.execute_activity_method(
                CibaActivities.revoke_tokens,
                RevokeTokensInput(sealed_tokens=sealed_tokens, auth_req_id=self._pending.auth_req_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except ACTIVITY_FAILED:
            workflow.logger.warning("tokens of auth_req_id %s could not be revoked", self._pending.auth_req_id)
        self._tokens_to_revoke = None

    async def _revoke_access_token(self, sealed_access_token: str) -> None:
        assert self._pending is not None
        await revoke_access_token(
            RevokeAccessTokenInput(
                sealed_access_token=sealed_access_token,
                auth_req_id=self._pending.auth_req_id,
                action_digest=self._request.action_digest,
                holder_workflow_id=self._holder.workflow_id,
                holder_run_id=self._holder.run_id,
            )
        )
        self._late_access_token = None

    async def _record(self, outcome: ApprovalOutcome) -> None:
        binding = self._pending.binding if self._pending else None
        await record_decision(outcome, self._request, binding=binding, sealed_id_token=self._sealed_id_token)

    # What operators see -------------------------------------------------------------------------

    def _record_pending(self, pending: PendingState) -> None:
        self.state.auth_req_id = pending.auth_req_id
        self.state.requested_at = pending.requested_at
        self.state.deadline = pending.deadline
        self.state.interval_seconds = pending.interval_seconds
        self.state.polls = pending.polls
        self.state.runs = pending.runs

    def _show(self, status: ApprovalPhase, reason: str | None = None) -> None:
        """One state change: the status query, the search attributes, the current details, one log line.

        On the redeem path the passing phases (requesting, validating) reach only the query and
        the details: the search attributes change twice, when the request is pending and at the end.
        """
        self.state.status = status
        if not (self._path.redeem and status in ("requesting", "validating")):
            self._upsert(status)
        workflow.set_current_details(self._details())
        auth_req_id = self._pending.auth_req_id if self._pending else None
        workflow.logger.info(
            "approval %s%s",
            status,
            f": {reason}" if reason else "",
            extra={"ciba_status": status, "auth_req_id": auth_req_id},
        )

    def _upsert(self, status: ApprovalPhase) -> None:
        current = workflow.info().typed_search_attributes
        updates: list[SearchAttributeUpdate[Any]] = []
        if current.get(CIBA_STATUS) != status:
            updates.append(CIBA_STATUS.value_set(status))
        if self._pending is not None:
            if current.get(CIBA_AUTH_REQ_ID) != self._pending.auth_req_id:
                updates.append(CIBA_AUTH_REQ_ID.value_set(self._pending.auth_req_id))
            if current.get(CIBA_DEADLINE) != self._pending.deadline:
                updates.append(CIBA_DEADLINE.value_set(self._pending.deadline))
        if updates:
            workflow.upsert_search_attributes(updates)

    def _details(self) -> str:
        state = self.state
        lines = [
            f"**CIBA approval: {state.status}**",
            "",
            f"Asked {code(state.login_hint)} to approve:",
            f"> {code(state.binding_message)}",
            "",
        ]
        if state.summary:
            lines += [f"- {code(line)}" for line in state.summary]
        elif state.authorization_details:
            lines += describe_authorization_details(state.authorization_details)
        if state.deadline is not None:
            lines.append(f"- until {state.deadline:%Y-%m-%d %H:%M:%S} UTC")
        if state.auth_req_id is not None:
            lines.append(f"- auth_req_id `{state.auth_req_id}`")
        if state.action_digest is not None:
            lines.append(f"- action digest `{state.action_digest[:16]}…`")
        if state.outcome is not None:
            lines += ["", f"Outcome: **{state.outcome.status}**: {code(state.outcome.reason)}"]
        return "\n".join(lines)

    def _finish(
        self, status: OutcomeStatus, *, reason: str, error: str | None = None, **claims: Any
    ) -> ApprovalOutcome:
        pending = self._pending
        outcome = ApprovalOutcome(
            status=status,
            workflow_id=workflow.info().workflow_id,
            auth_req_id=pending.auth_req_id if pending else None,
            error=error,
            reason=reason,
            action_digest=self._request.action_digest,
            requested_at=pending.requested_at if pending else None,
            deadline=pending.deadline if pending else None,
            decided_at=workflow.now(),
            policy=self._request.policy,
            **claims,
        )
        self.state.outcome = outcome
        self._show(status, reason)
        return outcome


async def revoke_access_token(revocation: RevokeAccessTokenInput) -> None:
    """RFC 7009, from workflow code: an approved access token nobody will use. Best effort: a
    failure is logged; the token expires unused at the OP."""
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
) -> None:
    """Write the decision record of `outcome` (temporal_ciba.records), from workflow code: a
    local activity (one marker event, no task queue round trip) that writes it exactly once
    however often it runs. Every approval calls it before returning its outcome; a decision
    taken without asking anyone (a policy that lets the action through) calls it too. A
    cancellation that arrives meanwhile waits for the write, then goes on."""
    info = workflow.info()
    handle = workflow.start_local_activity_method(
        DecisionRecorder.record_decision,
        RecordDecisionInput(
            outcome=outcome.model_copy(update={"sealed_access_token": None}),
            request=request,
            first_run_id=info.first_execution_run_id,
            run_id=info.run_id,
            issuer=binding.issuer if binding else None,
            client_id=binding.client_id if binding else None,
            sealed_id_token=sealed_id_token,
        ),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RECORD_RETRY,
    )
    try:
        await asyncio.shield(handle)
    except asyncio.CancelledError:
        await _recorded(handle)
        raise
    except (ActivityError, ApplicationError) as exc:
        # A local activity's non-retryable failure arrives as its ApplicationError, unwrapped.
        workflow.logger.error("decision of auth_req_id %s not recorded: %s", outcome.auth_req_id, _cause(exc))


def _token_request_retry(interval: float) -> RetryPolicy:
    """A retry after a transport failure is a token request too: never sooner than the interval."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=max(1.0, interval)),
        maximum_interval=timedelta(seconds=max(30.0, interval)),
    )


async def _shielded(handle: Awaitable[T], keep_late: Callable[[T], None]) -> T | None:
    """A token request's result, shielded from cancellation: one that comes back after the
    approval was cancelled goes to `keep_late` (its tokens are to be revoked, not dropped), then
    the cancellation goes on. None if the OP stayed unreachable."""
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


async def _recorded(handle: Awaitable[str]) -> None:
    try:
        await handle
    except (ActivityError, ApplicationError) as exc:
        workflow.logger.error("decision not recorded: %s", _cause(exc))


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).splitlines()[0] if str(error) else type(error).__name__

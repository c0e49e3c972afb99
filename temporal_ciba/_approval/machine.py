"""One approval's state machine, in workflow code: send, wait, redeem, and end with an outcome.

    send the backchannel request ──▶ wait (timer, or a notification) ──▶ redeem: request the
          ▲                                                               token and validate it
          └──────── pending / slow_down / Retry-After ◀──────────────────────┤
                                                                             ▼
                                                                          outcome

It lives in one of two homes (temporal_ciba._workflow): CibaApprovalWorkflow, a child of the
caller, or the caller's own workflow (`require_approval(..., inline=True)`). It does no I/O;
every call to the OP and every check is an activity. It ends with an ApprovalOutcome whatever
happens: a refusal, an expiry, a forged token and a cancellation are outcomes, not failures.

This module decides; its helpers each hold one other job: inbox.py the pings and pushes,
calls.py every activity call with its options (and the revocations and the decision record),
view.py what operators see, compat.py the patch ids that keep older histories replaying.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._activities import GRANT_LOST
    from temporal_ciba._approval import calls, view
    from temporal_ciba._approval.calls import ACTIVITY_FAILED, root_cause
    from temporal_ciba._approval.compat import (
        NOTIFICATION_PROOF_PATCH,
        PING_PACING_PATCH,
        PING_RETRY_PATCH,
        RECORD_BEFORE_REVOKE_PATCH,
        RECORD_PATCH,
        DecisionPath,
    )
    from temporal_ciba._approval.inbox import Inbox
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalPhase,
        ApprovalRequest,
        ApprovalState,
        OutcomeStatus,
        PendingState,
        PingNotice,
        PollInput,
        PushDelivery,
        RedeemInput,
        RedeemResult,
        RevokeAccessTokenInput,
        RevokeTokensInput,
        SendRequestInput,
        TokenRequestInput,
        TokenRequestResult,
        ValidateTokensInput,
        VerifyNotificationInput,
    )
    from temporal_ciba.ciba import PollSchedule, SlowDown, ValidatedApproval

# Token errors that mean the user said no, or the request ran out (CIBA §11).
DECISION_ERRORS: dict[str, OutcomeStatus] = {"access_denied": "denied", "expired_token": "expired"}
# A fallback poll in ping or push mode is spread over this fraction more, so thousands of
# approvals started together do not poll together.
FALLBACK_JITTER = 0.25
CANCELLED = "the approval was cancelled before a decision"


@dataclass(frozen=True)
class Holder:
    """The workflow run that may use the approved access token (temporal_ciba._grant)."""

    workflow_id: str
    run_id: str


class Approval:
    """One approval, from its request to its outcome, in the workflow that hosts it.

    The host routes the callback's signals to `notify` and `deliver` and answers its query with
    `state`."""

    def __init__(
        self,
        request: ApprovalRequest,
        *,
        holder: Holder,
        path: DecisionPath,
        resume: PendingState | None = None,
        continue_as_new: Callable[[PendingState], NoReturn] | None = None,
        own_workflow: bool = False,
    ) -> None:
        self._request = request
        # The approval is its workflow (CibaApprovalWorkflow), not inline in its host's: a
        # cancellation that arrives while its decision is recorded ends with that decision.
        self._own_workflow = own_workflow
        self._holder = holder
        self._path = path
        self._continue_as_new = continue_as_new
        self._pending = resume
        self._inbox = Inbox(path, notified=resume.notified if resume else False)
        self._asked_again = resume.asked_again if resume else False
        # Whether the outcome is recorded: the send activity's answer says (None: not sent).
        self._records: bool | None = resume.records if resume else None
        self._tokens_to_revoke: str | None = None
        self._late_access_token: str | None = None
        # The validated ID token, sealed: the decision record's evidence.
        self._sealed_id_token: str | None = None
        # Whether the outcome is the decision on record already (_take_recorded): not written again.
        self._on_record = False
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
            view.show_pending(self.state, resume)

    # Notifications (verified by the callback service; inbox.py) ----------------------------------

    def notify(self, notice: PingNotice, *, signal: str = "ciba.notify") -> None:
        """Ping (CIBA §10.2): request the token now."""
        if notice.undecodable_reason is not None:
            self.drop(signal, notice.undecodable_reason)
        else:
            self._inbox.notify(notice, self._pending)

    def deliver(self, delivery: PushDelivery, *, signal: str = "ciba.deliver") -> None:
        """Push (CIBA §10.3): the tokens or an error; the first wins."""
        if delivery.undecodable_reason is not None:
            self.drop(signal, delivery.undecodable_reason)
        else:
            self._inbox.deliver(delivery, self._pending)

    def drop(self, signal: str, reason: str) -> None:
        """A notification dropped unread: logged with its signal name and why, and counted
        where operators see it (the status query's dropped_notifications, the current details)."""
        workflow.logger.warning("dropped a %s signal: %s", signal, reason, extra={"ciba_dropped_signal": signal})
        view.show_dropped(self.state)

    # The process ------------------------------------------------------------------------------------

    async def run(self) -> ApprovalOutcome:
        """The outcome, once its decision record is written.

        Whether to record is in the send activity's result, already in history; an outcome
        reached before any answer asks the patch (compat.RECORD_PATCH)."""
        outcome = await self._decide()
        if self._on_record:
            return outcome
        if self._records if self._records is not None else workflow.patched(RECORD_PATCH):
            recorded = await self._record(outcome)
            if recorded is not None:
                return self._take_recorded(recorded)
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
            return await self._cancelled()

    async def _cancelled(self) -> ApprovalOutcome:
        """The outcome of a cancellation before a decision, and the tokens in hand revoked."""
        in_hand = self._tokens_to_revoke is not None or self._late_access_token is not None
        if in_hand and self._records and workflow.patched(RECORD_BEFORE_REVOKE_PATCH):
            return await self._cancelled_on_record()
        await self._revoke_in_hand()
        return self._finish("cancelled", reason=CANCELLED)

    async def _cancelled_on_record(self) -> ApprovalOutcome:
        """A cancellation with tokens in hand: the record is written before they are revoked
        (compat.RECORD_BEFORE_REVOKE_PATCH).

        It may hold an approval taken with them in a workflow task that never completed; that
        approval is then the outcome, its access token left alive for the action."""
        self._on_record = True
        cancelled = self._outcome("cancelled", reason=CANCELLED)
        recorded = await self._record(cancelled)
        if recorded is not None and recorded.approved:
            # The tokens in hand are the ones it was taken with; a late access token that is
            # not the one it carries is nobody's.
            late = self._late_access_token
            if late is not None and late != recorded.sealed_access_token:
                await self._revoke_access_token(late)
            return self._take_recorded(recorded)
        await self._revoke_in_hand()
        return self._take_recorded(recorded) if recorded is not None else self._shown(cancelled)

    async def _revoke_in_hand(self) -> None:
        if self._tokens_to_revoke is not None:
            await self._revoke(self._tokens_to_revoke)
        if self._late_access_token is not None:
            await self._revoke_access_token(self._late_access_token)

    async def _send_request(self) -> ApprovalOutcome | None:
        """The backchannel request; an outcome if the OP refused it, else None with _pending set."""
        info = workflow.info()
        if self._request.policy_deadline is not None and self._request.policy_deadline <= workflow.now():
            return self._finish("expired", reason="the policy deadline passed before the request was sent")
        send = SendRequestInput(
            request=self._request, workflow_id=info.workflow_id, first_run_id=info.first_execution_run_id
        )
        try:
            sent = await calls.send_request(send, local=self._path.redeem)
        except ACTIVITY_FAILED as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            return self._finish("error", reason=f"the OP could not be reached: {root_cause(exc)}")
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
            poll_activity=sent.poll_activity,
        )
        self._inbox.sent(sent.auth_req_id, sent.binding.delivery_mode)
        view.show_pending(self.state, self._pending)
        return None

    async def _wait_for_decision(self) -> ApprovalOutcome | None:
        """The outcome, or None when a lost grant is to be answered by asking again."""
        pending = self._pending
        assert pending is not None
        schedule = PollSchedule(interval=pending.interval_seconds)
        retry_after = 0.0
        ping_retry = False  # the last token request answered a ping, and the OP said come back
        last_request_seconds = 0.0
        polls_this_run = 0
        push = pending.binding.delivery_mode == "push"
        if self._polls_in_activity(pending):
            return await self._poll_in_activity(pending)
        while True:
            remaining = (pending.deadline - workflow.now()).total_seconds()
            if self._inbox.pushed is not None:
                delivery = self._inbox.pushed
                if not await self._push_proven(delivery):
                    self._inbox.drop_pushed()
                    self.drop("ciba.deliver", "the push carries no valid proof from the callback")
                    continue
                return await self._accept_push(pending, delivery)
            if remaining <= 0:
                return self._finish("expired", reason="no decision before the deadline")
            if not self._inbox.notified:
                # Push mode never polls (CIBA §10.3): the OP delivers, or the deadline passes.
                # Polls start an interval apart (CIBA §7.3): the timer starts once the last
                # request has returned, so it is shorter by the time that request took.
                poll_delay = self._poll_delay(pending, schedule.interval) - last_request_seconds
                if ping_retry and workflow.patched(PING_RETRY_PATCH):
                    poll_delay = schedule.interval - last_request_seconds  # the OP will not ping again
                delay = remaining if push else max(poll_delay, retry_after)
                if delay > 0:
                    try:
                        await workflow.wait_condition(
                            lambda: self._inbox.notified or self._inbox.pushed is not None,
                            timeout=min(delay, remaining),
                        )
                    except TimeoutError:
                        pass
                if self._inbox.pushed is not None or push:
                    continue
                if workflow.now() >= pending.deadline:
                    return self._finish("expired", reason="no decision before the deadline")
            if self._inbox.notified and not await self._pace_notified_request(
                pending, max(schedule.interval, retry_after)
            ):
                return self._finish("expired", reason="no decision before the deadline")
            # A ping's request, or a retry of one the OP told to come back: the OP will not ping again.
            pinged = ping_retry or (self._inbox.notified and pending.binding.delivery_mode == "ping")
            self._inbox.notified = False
            notices = self._inbox.take_notices()
            answer: RedeemResult | TokenRequestResult | None
            if self._path.redeem:
                answer = await self._redeem(pending, schedule.interval, notices)
                for _ in range(answer.unproven_notices if answer is not None else 0):
                    self.drop("ciba.notify", "the ping carries no valid proof from the callback")
                if answer is not None and answer.kind == "unproven":
                    continue  # no token request was made: the wait goes on
            else:
                answer = await self._request_token(pending, schedule.interval)
            pending.last_token_request_at = workflow.now()
            polls_this_run += 1
            pending.polls += 1
            self.state.polls = pending.polls
            retry_after = 0.0
            ping_retry = False
            last_request_seconds = (answer.request_seconds if isinstance(answer, RedeemResult) else None) or 0.0
            if answer is None:
                return self._finish("error", reason="the OP could not be reached before the deadline")
            if isinstance(answer, RedeemResult) and answer.kind in ("approved", "rejected"):
                return self._redeemed(pending, answer)
            if isinstance(answer, RedeemResult) and answer.recorded is not None:
                return self._take_recorded(answer.recorded)
            if answer.kind == "granted":
                assert isinstance(answer, TokenRequestResult) and answer.sealed_tokens is not None
                return await self._validate(pending, answer.sealed_tokens)
            if answer.kind == "failed":
                return self._failed(pending, answer)
            if answer.kind == "slow_down":
                schedule, _ = schedule.after(SlowDown())
                ping_retry = pinged
            elif answer.kind == "retry_later":
                retry_after = answer.retry_after_seconds or 0.0
                ping_retry = pinged
            pending.interval_seconds = schedule.interval
            self.state.interval_seconds = schedule.interval
            if self._continue_as_new is not None and (
                polls_this_run >= self._request.polling.polls_per_run or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                pending.notified = self._inbox.notified
                pending.runs += 1
                self._continue_as_new(pending)

    def _failed(self, pending: PendingState, answer: RedeemResult | TokenRequestResult) -> ApprovalOutcome | None:
        """The outcome of the OP's final error; None when a lost grant is answered by asking again."""
        if answer.error == GRANT_LOST and self._request.on_lost_grant == "ask_again" and not self._asked_again:
            workflow.logger.warning("grant of auth_req_id %s lost: asking again", pending.auth_req_id)
            return None
        status = DECISION_ERRORS.get(answer.error or "", "error")
        reason = self._denial() if status == "denied" else answer.reason or "the OP ended the request"
        return self._finish(status, error=answer.error, reason=reason)

    def _polls_in_activity(self, pending: PendingState) -> bool:
        """Poll mode polls in one activity, where the send activity's result says it may.

        (SendRequestResult.poll_activity, already in history: no patch marker.)

        No ping or push can reach a poll-mode request (it was sent without a notification token,
        and the inbox takes none for it), so the activity is the only way the decision arrives."""
        return (
            pending.binding.delivery_mode == "poll"
            and self._path.redeem
            and pending.poll_activity
            and self._request.polling.poll_in == "activity"
        )

    async def _poll_in_activity(self, pending: PendingState) -> ApprovalOutcome | None:
        """The outcome of poll mode's token requests, made by one activity (calls.poll).

        The history holds the activity's three events, not one timer and one redeem per poll.
        A slow_down or a Retry-After ends the activity: the next one starts from the pacing it
        brought, recorded here rather than only in a heartbeat the server may have missed."""
        not_before: datetime | None = None

        def keep_late(late: RedeemResult) -> None:
            if late.kind == "approved":
                self._late_access_token = late.sealed_access_token

        while True:
            polling = PollInput(
                redemption=RedeemInput(
                    binding=pending.binding,
                    holder_workflow_id=self._holder.workflow_id,
                    holder_run_id=self._holder.run_id,
                    action_digest=self._request.action_digest,
                ),
                interval_seconds=pending.interval_seconds,
                requested_at=pending.requested_at,
                last_request_at=pending.last_token_request_at,
                not_before=not_before,
                deadline=pending.deadline,
                polling=self._request.polling,
            )
            answer = await calls.poll(polling, remaining=pending.deadline - workflow.now(), keep_late=keep_late)
            if answer is None:
                return self._finish("error", reason="the OP could not be reached before the deadline")
            pending.polls += answer.polls or 0
            pending.interval_seconds = answer.interval_seconds or pending.interval_seconds
            pending.last_token_request_at = workflow.now()
            self.state.polls = pending.polls
            self.state.interval_seconds = pending.interval_seconds
            if answer.kind in ("approved", "rejected"):
                return self._redeemed(pending, answer)
            if answer.kind == "failed":
                return self._failed(pending, answer)
            if answer.kind == "slow_down":
                not_before = None
                continue
            if answer.kind == "retry_later":
                not_before = workflow.now() + timedelta(seconds=answer.retry_after_seconds or 0.0)
                continue
            return self._finish("expired", reason="no decision before the deadline")

    async def _pace_notified_request(self, pending: PendingState, spacing: float) -> bool:
        """Wait until a pinged token request may go; False if the deadline passes first.

        A ping asks for the token at once, but never sooner than `spacing` after the last request
        (CIBA §7.3), however many pings (or replayed ones) arrive."""
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

    async def _push_proven(self, delivery: PushDelivery) -> bool:
        """Whether the callback made this push (calls.verify_notification checks its proof).

        Runs recorded before the check (compat.NOTIFICATION_PROOF_PATCH), or on the path without
        the redeem, take the push as it came."""
        if not self._path.redeem or not workflow.patched(NOTIFICATION_PROOF_PATCH):
            return True
        first_run_id = workflow.info().first_execution_run_id
        return await calls.verify_notification(VerifyNotificationInput(delivery=delivery, first_run_id=first_run_id))

    async def _redeem(self, pending: PendingState, interval: float, notices: list[PingNotice]) -> RedeemResult | None:
        """One token request and its validation (calls.redeem); None if the OP stayed unreachable.

        After pings (`notices`) the activity checks their proofs first ("unproven" when none
        holds: no request). An approved access token that comes back after a cancellation is kept
        to be revoked."""
        remaining = pending.deadline - workflow.now()
        redemption = RedeemInput(
            binding=pending.binding,
            holder_workflow_id=self._holder.workflow_id,
            holder_run_id=self._holder.run_id,
            action_digest=self._request.action_digest,
            notices=notices,
            first_run_id=workflow.info().first_execution_run_id,
        )

        def keep_late(late: RedeemResult) -> None:
            if late.kind == "approved":
                self._late_access_token = late.sealed_access_token

        return await calls.redeem(redemption, remaining=remaining, interval=interval, keep_late=keep_late)

    def _redeemed(self, pending: PendingState, result: RedeemResult) -> ApprovalOutcome:
        if result.kind == "rejected" or result.approval is None:
            return self._finish("rejected", error=result.error, reason=result.reason or "the tokens failed validation")
        return self._approved(pending, result.approval, result.sealed_access_token, result.sealed_id_token)

    async def _request_token(self, pending: PendingState, interval: float) -> TokenRequestResult | None:
        """One token request, its validation to follow; None if the OP stayed unreachable.

        The path of runs recorded without REDEEM_PATCH (DecisionPath.redeem False). Tokens it
        brings back after a cancellation are kept to be revoked, not dropped."""
        remaining = pending.deadline - workflow.now()

        def keep_late(late: TokenRequestResult) -> None:
            if late.kind == "granted":
                self._tokens_to_revoke = late.sealed_tokens

        request = TokenRequestInput(auth_req_id=pending.auth_req_id)
        return await calls.request_token(request, remaining=remaining, interval=interval, keep_late=keep_late)

    async def _accept_push(self, pending: PendingState, delivery: PushDelivery) -> ApprovalOutcome:
        """The outcome of a push: its tokens validated, or its error (CIBA §12).

        Pushed tokens are validated with the push rules (the binding's mode is push)."""
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
            result = await calls.validate_tokens(
                ValidateTokensInput(
                    sealed_tokens=sealed_tokens,
                    binding=pending.binding,
                    holder_workflow_id=self._holder.workflow_id,
                    holder_run_id=self._holder.run_id,
                    action_digest=self._request.action_digest,
                )
            )
        except ACTIVITY_FAILED as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            await self._revoke(sealed_tokens)
            return self._finish("error", reason=f"the tokens could not be validated: {root_cause(exc)}")
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
        await calls.revoke_tokens(RevokeTokensInput(sealed_tokens=sealed_tokens, auth_req_id=self._pending.auth_req_id))
        self._tokens_to_revoke = None

    async def _revoke_access_token(self, sealed_access_token: str) -> None:
        assert self._pending is not None
        await calls.revoke_access_token(
            RevokeAccessTokenInput(
                sealed_access_token=sealed_access_token,
                auth_req_id=self._pending.auth_req_id,
                action_digest=self._request.action_digest,
                holder_workflow_id=self._holder.workflow_id,
                holder_run_id=self._holder.run_id,
            )
        )
        self._late_access_token = None

    async def _record(self, outcome: ApprovalOutcome) -> ApprovalOutcome | None:
        """Write the decision record; the outcome on record instead, when it holds another (calls.record_decision)."""
        binding = self._pending.binding if self._pending else None
        return await calls.record_decision(
            outcome,
            self._request,
            binding=binding,
            sealed_id_token=self._sealed_id_token,
            finish_when_cancelled=self._own_workflow,
        )

    def _take_recorded(self, recorded: ApprovalOutcome) -> ApprovalOutcome:
        """The decision on record, taken first by this approval in a workflow task that never
        completed: the outcome, so record and outcome agree."""
        self._on_record = True
        self.state.outcome = recorded
        self._show(recorded.status, f"{recorded.reason} (the decision on record)")
        return recorded

    # What operators see (view.py) ---------------------------------------------------------------

    def _show(self, status: ApprovalPhase, reason: str | None = None) -> None:
        """One state change: what operators see (view.show), and one log line."""
        view.show(self.state, status, pending=self._pending, path=self._path)
        auth_req_id = self._pending.auth_req_id if self._pending else None
        workflow.logger.info(
            "approval %s%s",
            status,
            f": {reason}" if reason else "",
            extra={"ciba_status": status, "auth_req_id": auth_req_id},
        )

    def _finish(
        self, status: OutcomeStatus, *, reason: str, error: str | None = None, **claims: Any
    ) -> ApprovalOutcome:
        return self._shown(self._outcome(status, reason=reason, error=error, **claims))

    def _outcome(
        self, status: OutcomeStatus, *, reason: str, error: str | None = None, **claims: Any
    ) -> ApprovalOutcome:
        pending = self._pending
        return ApprovalOutcome(
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

    def _shown(self, outcome: ApprovalOutcome) -> ApprovalOutcome:
        self.state.outcome = outcome
        self._show(outcome.status, outcome.reason)
        return outcome

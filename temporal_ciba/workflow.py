"""CibaApprovalWorkflow: ask a human through CIBA, wait durably, and return a validated outcome.

    send the backchannel request ──▶ wait (timer, or a notification) ──▶ request the token
          ▲                                                                  │
          └──────── pending / slow_down / Retry-After ◀──────────────────────┤
                                                                             ▼
                                       validate the tokens against the request ──▶ outcome

The workflow does no I/O; every call to the OP and every check is an activity. It ends with an
ApprovalOutcome whatever happens: a refusal, an expiry, a forged token and a cancellation are
outcomes, not failures. `require_approval` runs it as a child of any workflow.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from temporal_ciba.activities import GRANT_LOST, CibaActivities
    from temporal_ciba.ciba import PollSchedule, SlowDown
    from temporal_ciba.models import (
        ApprovalOutcome,
        ApprovalPhase,
        ApprovalRequest,
        ApprovalState,
        ApprovalWorkflowInput,
        OutcomeStatus,
        PendingState,
        PingNotice,
        PushDelivery,
        RevokeTokensInput,
        SendRequestInput,
        TokenRequestInput,
        TokenRequestResult,
        ValidateTokensInput,
    )
    from temporal_ciba.rendering import code, describe_authorization_details, static_details, static_summary
    from temporal_ciba.search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS

# Pings are paced by the interval since this change; histories from before it replay without.
PING_PACING_PATCH = "ping-pacing"
# The OP may hold a token request open for up to 30 s (long polling); an attempt must end
# before it is retried, so no two token requests for one auth_req_id are ever in flight.
TOKEN_REQUEST_TIMEOUT = timedelta(seconds=45)
# After a cancellation, how long a token request already in flight may still run for its
# tokens to be revoked; past that it is cancelled (the OP is probably down: no tokens came).
LATE_TOKEN_WAIT = 2 * TOKEN_REQUEST_TIMEOUT
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
SHORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=10
)
# Token errors that mean the user said no, or the request ran out (CIBA §11).
DECISION_ERRORS: dict[str, OutcomeStatus] = {"access_denied": "denied", "expired_token": "expired"}


@workflow.defn
class CibaApprovalWorkflow:
    @workflow.init
    def __init__(self, input: ApprovalWorkflowInput) -> None:
        request = input.request
        self._request = request
        self._pending = input.resume
        self._notified = input.resume.notified if input.resume else False
        self._asked_again = input.resume.asked_again if input.resume else False
        self._pushed: PushDelivery | None = None
        self._tokens_to_revoke: str | None = None
        self._state = ApprovalState(
            status="pending" if input.resume else "requesting",
            workflow_id=workflow.info().workflow_id,
            login_hint=request.login_hint,
            binding_message=request.binding_message,
            authorization_details=request.authorization_details,
            summary=request.summary,
            action_digest=request.action_digest,
        )
        if input.resume:
            self._record_pending(input.resume)

    @workflow.query
    def status(self) -> ApprovalState:
        return self._state

    @workflow.signal
    def notify(self, notice: PingNotice) -> None:
        """Ping (CIBA §10.2), verified by the callback service: request the token now."""
        pending = self._pending
        if (
            pending is not None
            and notice.auth_req_id == pending.auth_req_id
            and pending.binding.delivery_mode == "ping"
        ):
            self._notified = True
        else:
            workflow.logger.warning("ignored a ping for another auth_req_id or mode")

    @workflow.signal
    def deliver(self, delivery: PushDelivery) -> None:
        """Push (CIBA §10.3), verified by the callback service: the tokens or an error; the first wins."""
        pending = self._pending
        if pending is None or delivery.auth_req_id != pending.auth_req_id or pending.binding.delivery_mode != "push":
            workflow.logger.warning("ignored a push for another auth_req_id or mode")
        elif self._pushed is None:
            self._pushed = delivery

    @workflow.run
    async def run(self, input: ApprovalWorkflowInput) -> ApprovalOutcome:
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
            return self._finish("cancelled", reason="the approval was cancelled before a decision")

    # Steps --------------------------------------------------------------------------------------

    async def _send_request(self) -> ApprovalOutcome | None:
        """The backchannel request; an outcome if the OP refused it, else None with _pending set."""
        info = workflow.info()
        if self._request.policy_deadline is not None and self._request.policy_deadline <= workflow.now():
            return self._finish("expired", reason="the policy deadline passed before the request was sent")
        try:
            sent = await workflow.execute_activity_method(
                CibaActivities.send_authentication_request,
                SendRequestInput(
                    request=self._request, workflow_id=info.workflow_id, first_run_id=info.first_execution_run_id
                ),
                start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
                retry_policy=SEND_RETRY,
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            return self._finish("error", reason=f"the OP could not be reached: {_cause(exc)}")
        if sent.auth_req_id is None or sent.binding is None or sent.expires_in is None:
            return self._finish("error", error=sent.error, reason=sent.reason or "the OP refused the request")
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
        )
        self._record_pending(self._pending)
        return None

    async def _wait_for_decision(self) -> ApprovalOutcome | None:
        """The outcome, or None when a lost grant is to be answered by asking again."""
        pending = self._pending
        assert pending is not None
        schedule = PollSchedule(interval=pending.interval_seconds)
        retry_after = 0.0
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
                delay = remaining if push else max(self._poll_delay(pending, schedule.interval), retry_after)
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
            result = await self._request_token(pending, schedule.interval)
            pending.last_token_request_at = workflow.now()
            polls_this_run += 1
            pending.polls += 1
            self._state.polls = pending.polls
            retry_after = 0.0
            if result is None:
                return self._finish("error", reason="the OP could not be reached before the deadline")
            if result.kind == "granted":
                assert result.sealed_tokens is not None
                return await self._validate(pending, result.sealed_tokens)
            if result.kind == "failed":
                if result.error == GRANT_LOST and self._request.on_lost_grant == "ask_again" and not self._asked_again:
                    workflow.logger.warning("grant of auth_req_id %s lost: asking again", pending.auth_req_id)
                    return None
                status = DECISION_ERRORS.get(result.error or "", "error")
                reason = self._denial() if status == "denied" else result.reason or "the OP ended the request"
                return self._finish(status, error=result.error, reason=reason)
            if result.kind == "slow_down":
                schedule, _ = schedule.after(SlowDown())
            elif result.kind == "retry_later":
                retry_after = result.retry_after_seconds or 0.0
            pending.interval_seconds = schedule.interval
            self._state.interval_seconds = schedule.interval
            if polls_this_run >= self._request.polling.polls_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                pending.notified = self._notified
                pending.runs += 1
                workflow.continue_as_new(ApprovalWorkflowInput(request=self._request, resume=pending))

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
            delay = max(delay, policy.notification_fallback_interval_seconds)
        return delay

    async def _request_token(self, pending: PendingState, interval: float) -> TokenRequestResult | None:
        """One token request. It is shielded from cancellation: tokens it brings back after a
        cancellation must be revoked, not dropped. None if the OP stayed unreachable."""
        remaining = pending.deadline - workflow.now()
        handle = workflow.start_activity_method(
            CibaActivities.request_token,
            TokenRequestInput(auth_req_id=pending.auth_req_id),
            start_to_close_timeout=TOKEN_REQUEST_TIMEOUT,
            schedule_to_close_timeout=max(remaining, 2 * TOKEN_REQUEST_TIMEOUT),
            # A retry after a transport failure is a token request too: never sooner than the interval.
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=max(1.0, interval)),
                maximum_interval=timedelta(seconds=max(30.0, interval)),
            ),
        )
        try:
            return await asyncio.shield(handle)
        except asyncio.CancelledError:
            try:
                late = await asyncio.wait_for(handle, timeout=LATE_TOKEN_WAIT.total_seconds())
            except (TimeoutError, ActivityError):
                raise asyncio.CancelledError() from None
            if late.kind == "granted":
                self._tokens_to_revoke = late.sealed_tokens
            raise
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            return None

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
        return f"{self._request.login_hint} denied the request on their device"

    async def _validate(self, pending: PendingState, sealed_tokens: str) -> ApprovalOutcome:
        self._show("validating")
        # The run that asked (the server names the parent; nobody's input can): only it may use
        # the access token. An approval started on its own is its own holder, usable by none.
        info = workflow.info()
        holder = info.parent or workflow.ParentInfo(info.namespace, info.run_id, info.workflow_id)
        self._tokens_to_revoke = sealed_tokens
        try:
            result = await workflow.execute_activity_method(
                CibaActivities.validate_tokens,
                ValidateTokensInput(
                    sealed_tokens=sealed_tokens,
                    binding=pending.binding,
                    holder_workflow_id=holder.workflow_id,
                    holder_run_id=holder.run_id,
                    action_digest=self._request.action_digest,
                ),
                start_to_close_timeout=timedelta(seconds=45),
                retry_policy=SHORT_RETRY,
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from exc
            await self._revoke(sealed_tokens)
            return self._finish("error", reason=f"the tokens could not be validated: {_cause(exc)}")
        self._tokens_to_revoke = None
        if result.approval is None:
            await self._revoke(sealed_tokens)
            return self._finish("rejected", error=result.error, reason=result.reason or "the tokens failed validation")
        approval = result.approval
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
            sealed_access_token=result.sealed_access_token,
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
        except ActivityError:
            workflow.logger.warning("tokens of auth_req_id %s could not be revoked", self._pending.auth_req_id)
        self._tokens_to_revoke = None

    # What operators see -------------------------------------------------------------------------

    def _record_pending(self, pending: PendingState) -> None:
        self._state.auth_req_id = pending.auth_req_id
        self._state.requested_at = pending.requested_at
        self._state.deadline = pending.deadline
        self._state.interval_seconds = pending.interval_seconds
        self._state.polls = pending.polls
        self._state.runs = pending.runs

    def _show(self, status: ApprovalPhase, reason: str | None = None) -> None:
        """One state change: the status query, the search attributes, the current details, one log line."""
        self._state.status = status
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
        workflow.set_current_details(self._details())
        auth_req_id = self._pending.auth_req_id if self._pending else None
        workflow.logger.info(
            "approval %s%s",
            status,
            f": {reason}" if reason else "",
            extra={"ciba_status": status, "auth_req_id": auth_req_id},
        )

    def _details(self) -> str:
        state = self._state
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
            **claims,
        )
        self._state.outcome = outcome
        self._show(status, reason)
        return outcome


def _cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


async def require_approval(
    request: ApprovalRequest,
    *,
    id: str | None = None,
    task_queue: str | None = None,
) -> ApprovalOutcome:
    """Ask for approval from inside any workflow and wait durably for the outcome.

    Runs CibaApprovalWorkflow as a child with an id derived from the parent's (and the action
    digest, when there is one), so a replay or a retry finds the same approval. Act only if
    `outcome.approved`.
    """
    info = workflow.info()
    suffix = request.action_digest[:16] if request.action_digest else str(workflow.uuid4())[:8]
    return await workflow.execute_child_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=request),
        id=id or f"{info.workflow_id}.approval-{suffix}",
        task_queue=task_queue or info.task_queue,
        parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        # What the Temporal UI's list shows, readable with no worker running (encrypted like any payload).
        static_summary=static_summary(request),
        static_details=static_details(request),
    )

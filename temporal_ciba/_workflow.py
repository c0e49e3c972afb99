"""Where an approval waits: inline in the workflow that asked, or its own child workflow.

    require_approval(request, inline=True)   ──▶ the caller's own workflow: the fastest path (one
                                                  workflow task from the ping to the caller's next
                                                  line; poll mode's wait is one activity)
    require_approval(request, inline=False)  ──▶ CibaApprovalWorkflow, a child: long waits
                                                  (continue-as-new keeps every history small)
    require_approval(request)                ──▶ inline unless the request may wait longer than
                                                  INLINE_WAIT_LIMIT (then a child)

Either way the same state machine (temporal_ciba._approval) runs, with the same outcome,
search attributes, status query and current details, on the workflow it runs in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final, Literal, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._approval import (
        INLINE_DEFAULT_PATCH,
        REDEEM_PATCH,
        Approval,
        DecisionPath,
        Holder,
        record_decision,
        static_details,
        static_summary,
    )
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalRequest,
        ApprovalState,
        ApprovalWorkflowInput,
        PendingState,
        PingNotice,
        PushDelivery,
    )
    from temporal_ciba._policy import NO_POLICY, ApprovalPolicy, PolicyAction, PolicyError
    from temporal_ciba._quorum import quorum_deadline, run_quorum
    from temporal_ciba._search_attributes import CIBA_STATUS

__all__ = [
    "DELIVER_SIGNAL",
    "INLINE_WAIT_LIMIT",
    "NOTIFY_SIGNAL",
    "STATUS_QUERY",
    "WORKER_POLICY",
    "CibaApprovalWorkflow",
    "require_approval",
    "worker_approval_policy",
]

# What the callback service signals, and the query operators read; on CibaApprovalWorkflow and
# on any workflow with an inline approval (namespaced: the caller's own handlers stay its own).
NOTIFY_SIGNAL = "ciba.notify"
DELIVER_SIGNAL = "ciba.deliver"
STATUS_QUERY = "ciba.status"


@workflow.defn
class CibaApprovalWorkflow:
    @workflow.init
    def __init__(self, input: ApprovalWorkflowInput) -> None:
        info = workflow.info()
        # The run that asked (the server names the parent; nobody's input can): only it may use
        # the access token. An approval started on its own is its own holder, usable by none.
        parent = info.parent
        holder = Holder(parent.workflow_id, parent.run_id) if parent else Holder(info.workflow_id, info.run_id)
        self._approval = Approval(
            input.request,
            holder=holder,
            path=DecisionPath(redeem=workflow.patched(REDEEM_PATCH)),
            resume=input.resume,
            continue_as_new=self._continue_as_new,
            own_workflow=True,
        )
        self._request = input.request

    @workflow.query
    def status(self) -> ApprovalState:
        return self._approval.state

    @workflow.query(name=STATUS_QUERY)
    def ciba_status(self) -> ApprovalState:
        return self._approval.state

    @workflow.signal(name=NOTIFY_SIGNAL)
    def ciba_notify(self, notice: PingNotice) -> None:
        """Ping (CIBA §10.2), its bearer verified by the callback service: request the token now."""
        self._approval.notify(notice, signal=NOTIFY_SIGNAL)

    @workflow.signal(name=DELIVER_SIGNAL)
    def ciba_deliver(self, delivery: PushDelivery) -> None:
        """Push (CIBA §10.3), its bearer verified by the callback service: the tokens or an error."""
        self._approval.deliver(delivery, signal=DELIVER_SIGNAL)

    # The unprefixed names, which recorded histories carry (temporal_ciba._approval.compat).
    @workflow.signal
    def notify(self, notice: PingNotice) -> None:
        self._approval.notify(notice, signal="notify")

    @workflow.signal
    def deliver(self, delivery: PushDelivery) -> None:
        self._approval.deliver(delivery, signal="deliver")

    @workflow.run
    async def run(self, input: ApprovalWorkflowInput) -> ApprovalOutcome:
        return await self._approval.run()

    def _continue_as_new(self, pending: PendingState) -> NoReturn:
        workflow.continue_as_new(ApprovalWorkflowInput(request=self._request, resume=pending))


class _InlineApprovals:
    """The approvals running inline in one workflow, reached through the handlers it registers."""

    def __init__(self) -> None:
        self.waiting: list[Approval] = []
        self.latest: Approval | None = None

    async def run(self, approval: Approval) -> ApprovalOutcome:
        self.waiting.append(approval)
        self.latest = approval
        try:
            return await approval.run()
        finally:
            self.waiting.remove(approval)

    def notify(self, notice: PingNotice) -> None:
        if notice.undecodable_reason is not None and not self.waiting:
            workflow.logger.warning("dropped a %s signal: %s", NOTIFY_SIGNAL, notice.undecodable_reason)
        for approval in self.waiting:
            approval.notify(notice, signal=NOTIFY_SIGNAL)

    def deliver(self, delivery: PushDelivery) -> None:
        if delivery.undecodable_reason is not None and not self.waiting:
            workflow.logger.warning("dropped a %s signal: %s", DELIVER_SIGNAL, delivery.undecodable_reason)
        for approval in self.waiting:
            approval.deliver(delivery, signal=DELIVER_SIGNAL)

    def status(self) -> ApprovalState | None:
        """The latest inline approval's state (None before the first)."""
        return self.latest.state if self.latest else None

    @classmethod
    def of_this_workflow(cls) -> _InlineApprovals:
        handler = workflow.get_signal_handler(NOTIFY_SIGNAL)
        existing = getattr(handler, "__self__", None)
        if isinstance(existing, cls):
            return existing
        registry = cls()
        workflow.set_signal_handler(NOTIFY_SIGNAL, registry.notify)
        workflow.set_signal_handler(DELIVER_SIGNAL, registry.deliver)
        workflow.set_query_handler(STATUS_QUERY, registry.status)
        if workflow.get_query_handler("status") is None:
            workflow.set_query_handler("status", registry.status)
        return registry


# require_approval(..., policy=WORKER_POLICY): the worker's policy file (CIBA_POLICY_FILE).
WORKER_POLICY: Final = "worker"
# How long a decision waits for the worker's policy (a policy file broken by an edit is retried
# until fixed, within this); then the approval ends as an error.
POLICY_WAIT = timedelta(minutes=10)


async def worker_approval_policy() -> ApprovalPolicy:
    """The worker's policy file as it is now, through the local activity `ciba.approval_policy`.

    Its result is recorded in history, so a replay evaluates the policy the first run saw, and a
    new decision sees the operator's latest edit. A FailureError if the worker has none (an
    ApplicationError of type NO_POLICY, alone or as an ActivityError's cause)."""
    return await workflow.execute_local_activity(
        "ciba.approval_policy",
        result_type=ApprovalPolicy,
        schedule_to_close_timeout=POLICY_WAIT,
        retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
    )


# The longest expected wait (requested_expiry, or the policy deadline) that require_approval runs
# inline by default. Inline, the caller's history grows with the wait only in ping and push mode's
# fallback polls (one each notification_fallback_interval_seconds, 600 s by default: about 5
# events); within an hour that is at most 6 of them. A longer wait runs as a child, whose
# history continues as new; an unknown one (the OP's expires_in, minutes with the OPs we know)
# runs inline.
INLINE_WAIT_LIMIT = timedelta(hours=1)
# The name under which CibaPlugin's worker interceptor offers an extern function to workflow code:
# its presence is how require_approval knows that the worker running it has the plugin.
PLUGIN_MARKER: Final = "temporal_ciba.CibaPlugin"


def _require_plugin() -> None:
    """Fail the workflow (not retried) when the worker running it lacks CibaPlugin.

    Without it the approval workflow is not registered and the payloads are not encrypted: the
    child would wait for ever for a worker that knows CibaApprovalWorkflow. Deterministic: the
    marker is part of the worker's configuration, not of the outside world. Not checked while
    replaying: history recorded with the plugin replays as it ran, also in a Replayer built
    without it (a history that failed here on a worker without the plugin is the one that does
    not replay there)."""
    if PLUGIN_MARKER not in workflow.extern_functions() and not workflow.unsafe.is_replaying():
        raise ApplicationError(
            "require_approval needs CibaPlugin on the worker that runs this workflow: "
            "Worker(..., plugins=[CibaPlugin.from_env()]) or a client connected with CibaPlugin",
            type="CibaPluginMissing",
            non_retryable=True,
        )


async def require_approval(
    request: ApprovalRequest,
    *,
    id: str | None = None,
    task_queue: str | None = None,
    inline: bool | None = None,
    policy: ApprovalPolicy | Literal["worker"] | None = None,
    action: PolicyAction | None = None,
) -> ApprovalOutcome:
    """Ask for approval from inside any workflow and wait durably for the outcome.

    Where it waits, unless `inline` says: in this workflow (the fastest path in every delivery
    mode), or as the child CibaApprovalWorkflow, whose history continues as new however long the
    wait, when the request may wait longer than INLINE_WAIT_LIMIT (its requested_expiry or
    policy_deadline) or an `id` names the child (docs: guides/asking-for-an-approval.md, where
    the approval waits). Inline, this workflow gets the search attributes, the `ciba.status`
    query and the notifications; a child has the given id or one derived from the parent's (and
    the action digest, when there is one), so a replay or a retry finds the same approval. Act
    only if `outcome.approved`.

    With a `policy` (an ApprovalPolicy, or WORKER_POLICY for the worker's policy file) the
    policy decides for `action` (default: `PolicyAction.of(request)`): no approval (an
    `approved` outcome with `policy.approval == "none"`, no approver, no token), one approver
    (the request with the rule's approver, acr_values, expiry and binding message), or a
    quorum (temporal_ciba._quorum). The decision is `outcome.policy`.

    On a worker without CibaPlugin it fails the workflow at once with ApplicationError
    `CibaPluginMissing` (not retried), naming CibaPlugin.
    """
    _require_plugin()
    if policy is not None:
        return await _by_policy(request, policy, action, id=id, task_queue=task_queue, inline=inline)
    info = workflow.info()
    if inline is None:
        # A given id is the child's: the caller (a tool call's gate) looks the approval up by it.
        inline = id is None and _inline_by_default(request)
    if inline:
        approval = Approval(request, holder=Holder(info.workflow_id, info.run_id), path=DecisionPath(redeem=True))
        return await _InlineApprovals.of_this_workflow().run(approval)
    return await (await _start_approval(request, id or _approval_id(request), task_queue))


def _inline_by_default(request: ApprovalRequest) -> bool:
    """Inline, unless the request may wait longer than INLINE_WAIT_LIMIT.

    Runs recorded when the default was a child keep it (compat.INLINE_DEFAULT_PATCH)."""
    expected = timedelta(seconds=request.requested_expiry) if request.requested_expiry is not None else None
    if request.policy_deadline is not None:
        until_deadline = request.policy_deadline - workflow.now()
        expected = until_deadline if expected is None else min(expected, until_deadline)
    if expected is not None and expected > INLINE_WAIT_LIMIT:
        return False
    return workflow.patched(INLINE_DEFAULT_PATCH)


def _approval_id(request: ApprovalRequest) -> str:
    suffix = request.action_digest[:16] if request.action_digest else str(workflow.uuid4())[:8]
    return f"{workflow.info().workflow_id}.approval-{suffix}"


async def _start_approval(
    request: ApprovalRequest, id: str, task_queue: str | None
) -> workflow.ChildWorkflowHandle[CibaApprovalWorkflow, ApprovalOutcome]:
    return await workflow.start_child_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=request),
        id=id,
        task_queue=task_queue or workflow.info().task_queue,
        parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        # Listed as requesting from its first event, without an upsert of its own.
        search_attributes=TypedSearchAttributes([SearchAttributePair(CIBA_STATUS, "requesting")]),
        # What the Temporal UI's list shows, readable with no worker running (encrypted like any payload).
        static_summary=static_summary(request),
        static_details=static_details(request),
    )


async def _by_policy(
    request: ApprovalRequest,
    policy: ApprovalPolicy | Literal["worker"],
    action: PolicyAction | None,
    *,
    id: str | None,
    task_queue: str | None,
    inline: bool | None,
) -> ApprovalOutcome:
    """require_approval under a policy: decide, then ask nobody, one approver, or a quorum."""
    info = workflow.info()

    def policy_error(reason: str) -> ApprovalOutcome:
        return ApprovalOutcome(
            status="error",
            workflow_id=info.workflow_id,
            error="policy_error",
            reason=reason,
            action_digest=request.action_digest,
            decided_at=workflow.now(),
        )

    try:
        if policy == WORKER_POLICY:
            policy = await worker_approval_policy()
        assert isinstance(policy, ApprovalPolicy)
        decision, rule = policy.decide(action or PolicyAction.of(request))
        binding_message = rule.render_binding_message(action or PolicyAction.of(request), request.binding_message)
    except FailureError as exc:
        # A local activity's failure may arrive as its own error (ApplicationError, TimeoutError), unwrapped.
        cause = exc.cause if isinstance(exc, ActivityError) else exc
        if isinstance(cause, ApplicationError) and cause.type == NO_POLICY:
            return policy_error(cause.message)
        return policy_error(f"the worker's approval policy could not be read: {cause}")
    except PolicyError as exc:
        return policy_error(f"the approval policy cannot decide: {exc}")
    if decision.approval == "none":
        unasked = ApprovalOutcome(
            status="approved",
            workflow_id=info.workflow_id,
            reason=f"no approval needed: {decision.reason} (policy rule {decision.rule})",
            action_digest=request.action_digest,
            decided_at=workflow.now(),
            policy=decision,
        )
        await record_decision(unasked, request)  # the decision not to ask is a decision too
        return unasked
    changes: dict[str, object] = {"binding_message": binding_message, "policy": decision}
    if rule.acr_values is not None:
        changes["acr_values"] = rule.acr_values
    if rule.requested_expiry is not None:
        changes["requested_expiry"] = rule.requested_expiry
    try:
        asked = ApprovalRequest(**{**dict(request), **changes})
    except ValueError as exc:
        return policy_error(f"the approval policy made an invalid request: {str(exc).splitlines()[0]}")

    def of(hint: str, **more: object) -> ApprovalRequest:
        # The caller's expected_subject pins the person the caller asked for, no one else.
        pinned = request.expected_subject if hint == request.login_hint else None
        return ApprovalRequest(**{**dict(asked), "login_hint": hint, "expected_subject": pinned, **more})

    if decision.approval == "one":
        # The request carries the decision, and so does the outcome of every approval.
        return await require_approval(of(decision.approvers[0]), id=id, task_queue=task_queue, inline=inline)
    deadline = quorum_deadline(asked, workflow.now())
    per_approver = [of(hint, policy_deadline=deadline) for hint in decision.approvers]
    assert decision.quorum is not None
    outcome = await run_quorum(
        per_approver,
        needed=decision.quorum,
        end_on_denial=rule.on_denial == "end",
        base_id=id or _approval_id(asked),
        deadline=deadline,
        start_child=lambda child, child_id: _start_approval(child, child_id, task_queue),
        revoke_holder=(info.workflow_id, info.run_id),
    )
    return outcome.model_copy(update={"policy": decision})

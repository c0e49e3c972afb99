"""The example agent: it wants to pay an invoice, and pays only what a human approved.

decide the action ──▶ require_approval ──▶ approved? ──▶ pay (exactly once)
                                               └─ no ──▶ stop, paying nothing
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporal_ciba import ApprovalRequest, PolicyAction
    from temporal_ciba_examples.payment_agent.activities import PaymentActivities
    from temporal_ciba_examples.payment_agent.models import (
        ExecutePaymentInput,
        PaymentAgentInput,
        PaymentAgentResult,
        action_digest,
        authorization_details,
        binding_message,
        summary,
    )

from temporal_ciba import WORKER_POLICY, require_approval


@workflow.defn
class PaymentAgentWorkflow:
    @workflow.run
    async def run(self, input: PaymentAgentInput) -> PaymentAgentResult:
        action = input.action
        digest = action_digest(action)
        request = ApprovalRequest(
            login_hint=input.approver,
            binding_message=binding_message(action, digest),
            scope=input.scope,
            acr_values=input.acr_values,
            authorization_details=authorization_details(action, digest),
            summary=summary(action),
            requested_expiry=input.requested_expiry,
            action_digest=digest,
            expected_subject=input.expected_subject,
        )
        if input.use_policy:
            # The amount policy decides: no approval, the owner at a stronger acr, or a quorum.
            parties = {"owner": input.approver, **input.parties}
            outcome = await require_approval(
                request, inline=input.inline, policy=WORKER_POLICY, action=PolicyAction.of(request, parties=parties)
            )
        else:
            outcome = await require_approval(request, inline=input.inline)
        if not outcome.approved:
            workflow.logger.info("payment not made: approval %s", outcome.status)
            return PaymentAgentResult(outcome=outcome)
        if outcome.sealed_access_token is None:
            # The policy let it through unasked: no person approved, so there is no token, and
            # the example payment API pays only with one. A real agent pays such amounts with its
            # own credentials; this one reports the decision and stops.
            workflow.logger.info("payment below the approval threshold: %s", outcome.reason)
            return PaymentAgentResult(outcome=outcome)
        # The activity opens the approval only in this run, for this action, and derives the
        # idempotency key from the same context: retries, crashes and replays pay once.
        receipt = await workflow.execute_activity_method(
            PaymentActivities.execute_payment,
            ExecutePaymentInput(action=action, outcome=outcome),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=20),
        )
        return PaymentAgentResult(outcome=outcome, receipt=receipt)

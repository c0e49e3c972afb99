"""The PydanticAI payment example's decision record passes `audit verify`'s action check.

Its approval is bound to the payment's digest, the one its authorization_details name for the
payment API (ToolApproval.action_digest); bound to the tool call's digest instead, every record
would fail verify ("an authorization_details entry names another action digest")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents import ToolArguments, tool_action_digest
from temporal_ciba.records import RecordDecisionInput
from temporal_ciba.records._audit import _check_action
from temporal_ciba_examples.payment_agent.models import action_digest
from temporal_ciba_examples.pydantic_ai_payment.workflows import PAY_APPROVAL, PAY_TOOL, PayerDeps
from tests.support.flows import INVOICE


@dataclass
class RunContext:
    deps: PayerDeps


def test_the_pay_tools_record_names_one_digest() -> None:
    arguments = ToolArguments(
        {"payment": INVOICE.model_dump(mode="json")},
        tool_name=PAY_TOOL,
        call_id="pay-1",
        context=RunContext(PayerDeps(approver="alice")),
    )
    request = PAY_APPROVAL.request_for(arguments)
    assert request.action_digest == action_digest(INVOICE) != tool_action_digest(PAY_TOOL, arguments)
    outcome = ApprovalOutcome(
        status="approved",
        workflow_id="pai-1.tool-pay-1",
        auth_req_id="req-1",
        reason="approved by alice",
        action_digest=request.action_digest,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    record = RecordDecisionInput(outcome=outcome, request=request, first_run_id="r", run_id="r").record(None)
    assert request.authorization_details and _check_action(record) is None

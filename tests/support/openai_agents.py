"""A workflow that tries what the model cannot do through the SDK: run a gated tool's activity
with arguments other than those the human approved."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporal_ciba.agents import ApprovedToolCall, ToolArguments, ask_for_tool_call
    from temporal_ciba.example.maintenance import TOOL, MaintenanceActivities, MaintenanceInput, approval_for


class TamperInput(BaseModel):
    agent: MaintenanceInput
    approved: dict[str, Any]
    executed: dict[str, Any]


class TamperResult(BaseModel):
    approval_status: str
    error_type: str | None = None
    non_retryable: bool | None = None


@workflow.defn
class TamperingWorkflow:
    """Asks for `approved`, then hands the tool's activity the approval with `executed`."""

    @workflow.run
    async def run(self, input: TamperInput) -> TamperResult:
        approved = ToolArguments(input.approved, tool_name=TOOL, call_id="call_tamper")
        outcome = await ask_for_tool_call(approval_for(input.agent), approved)
        call = ApprovedToolCall(tool_name=TOOL, call_id="call_tamper", arguments=input.executed, outcome=outcome)
        try:
            await workflow.execute_activity_method(
                MaintenanceActivities.apply_production_change,
                call,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except ActivityError as exc:
            cause = exc.cause
            assert isinstance(cause, ApplicationError)
            return TamperResult(
                approval_status=outcome.status, error_type=cause.type, non_retryable=cause.non_retryable
            )
        return TamperResult(approval_status=outcome.status)

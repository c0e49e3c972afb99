"""The maintenance bot: it changes production only after the on-call approver said yes, once.

A change to `production` needs a one-time CIBA decision whose RFC 9396 authorization_details
(type `production_change`) name the system, the change and the window; a `staging` change runs
without asking (`when`). With a second approver the two-person rule applies: both are asked at
once and the change runs only when two different people (two validated `sub`s) said yes
(TWO_PERSON_RULE, a policy in code). The tool records the change in the ledger (tool_ledger.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from agents import Agent

    from temporal_ciba import ApprovalPolicy, PolicyRule
    from temporal_ciba.agents import ApprovedToolCall, ToolApproval, ToolArguments, short_code, tool_action_digest
    from temporal_ciba.agents.openai import ToolApprovals, gated_activity_as_tool
    from temporal_ciba.crypto import TokenSealer
    from temporal_ciba_examples.shared.tool_agent import ToolAgentInput, ToolAgentResult
    from temporal_ciba_examples.shared.tool_ledger import ToolLedger, open_call

TOOL = "apply_production_change"


class ProductionChange(BaseModel):
    """Apply a change to a system within a maintenance window (ISO 8601 times, UTC)."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, max_length=60)
    environment: Literal["production", "staging"]
    change: str = Field(min_length=1, max_length=200)
    window_start: str
    window_end: str


class MaintenanceInput(ToolAgentInput):
    approver: str = Field(min_length=1, description="login_hint of the on-call approver")
    requested_expiry: int | None = Field(default=None, gt=0, description="seconds the approver has to decide")
    # The two-person rule: a production change needs this person too (a different `sub`).
    second_approver: str | None = Field(default=None, min_length=1)


# The two-person rule as a policy in code: both approvers, two distinct people, any denial ends it.
TWO_PERSON_RULE = ApprovalPolicy(
    rules=[
        PolicyRule(
            name="production-two-person",
            action=TOOL,
            approval="quorum",
            approvers=["approver", "second"],
            reason="a production change needs two different people",
        )
    ]
)


def needs_decision(arguments: ToolArguments) -> bool:
    return arguments["environment"] == "production"


def authorization_details(arguments: ToolArguments) -> list[dict[str, Any]]:
    return [
        {
            "type": "production_change",
            "actions": ["apply"],
            "system": arguments["system"],
            "change": arguments["change"],
            "window": {"start": arguments["window_start"], "end": arguments["window_end"]},
            "actionDigest": tool_action_digest(arguments.tool_name, arguments),
        }
    ]


def binding_message(arguments: ToolArguments) -> str:
    code = short_code(tool_action_digest(arguments.tool_name, arguments))
    return f"Change {arguments['system'][:40]} in production, code {code}"


def approval_for(input: MaintenanceInput) -> ToolApproval:
    second = input.second_approver
    return ToolApproval(
        login_hint=input.approver,
        requested_expiry=input.requested_expiry,
        binding_message=binding_message,
        authorization_details=authorization_details,
        when=needs_decision,
        policy=TWO_PERSON_RULE if second else None,
        parties={"second": second} if second else None,
    )


class MaintenanceActivities:
    def __init__(self, sealer: TokenSealer, ledger: ToolLedger) -> None:
        self._sealer = sealer
        self._ledger = ledger

    @activity.defn(name=TOOL)
    async def apply_production_change(self, call: ApprovedToolCall) -> str:
        change = ProductionChange.model_validate(call.arguments)
        # The activity asks the same question as the workflow: a production change without a
        # decision for exactly these arguments does not run.
        open_call(self._sealer, call, required=change.environment == "production")
        new = self._ledger.record_call(call)
        again = "" if new else " (already applied)"
        return f"Applied to {change.system} ({change.environment}): {change.change}{again}."


@workflow.defn
class MaintenanceBotWorkflow:
    @workflow.run
    async def run(self, input: MaintenanceInput) -> ToolAgentResult:
        tool = gated_activity_as_tool(
            MaintenanceActivities.apply_production_change,
            approval_for(input),
            parameters=ProductionChange,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        agent = Agent(name="maintenance-bot", instructions="Apply the requested changes.", tools=[tool])
        approvals = ToolApprovals()
        result = await approvals.run(agent, input.prompt())
        return ToolAgentResult(reply=str(result.final_output), outcomes=approvals.outcomes)

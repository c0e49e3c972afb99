"""The support assistant: it resets a customer's account only when the account holder, and no
one else, confirms it on their own device.

The approval goes to the holder (`login_hint`) and is pinned to the holder's subject
(`expected_subject`): an approval by anybody else is `rejected`. Its RFC 9396
authorization_details (type `account_reset`) name the account and how the new credentials are
sent. The tool records the reset in the ledger (tool_ledger.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from agents import Agent

    from temporal_ciba.agents import ApprovedToolCall, ToolApproval, ToolArguments, short_code, tool_action_digest
    from temporal_ciba.agents.openai import ToolApprovals, gated_activity_as_tool
    from temporal_ciba.crypto import TokenSealer
    from temporal_ciba_examples.shared.tool_agent import ToolAgentInput, ToolAgentResult
    from temporal_ciba_examples.shared.tool_ledger import ToolLedger, open_call

TOOL = "reset_account"


class AccountReset(BaseModel):
    """Reset the customer's account: revoke its sessions and send a reset link."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(min_length=1, max_length=40)
    send_link_by: Literal["email", "sms"]


def authorization_details(arguments: ToolArguments) -> list[dict[str, Any]]:
    return [
        {
            "type": "account_reset",
            "actions": ["reset"],
            "account_id": arguments["account_id"],
            "send_link_by": arguments["send_link_by"],
            "actionDigest": tool_action_digest(arguments.tool_name, arguments),
        }
    ]


def binding_message(arguments: ToolArguments) -> str:
    code = short_code(tool_action_digest(arguments.tool_name, arguments))
    return f"Reset your account {arguments['account_id'][:40]}, code {code}"


class SupportInput(ToolAgentInput):
    """The conversation's customer: who the assistant serves, as the OP knows them."""

    holder: str = Field(min_length=1, description="login_hint of the account holder")
    holder_subject: str = Field(min_length=1, description="the holder's `sub` at the OP")


def approval_for(input: SupportInput) -> ToolApproval:
    return ToolApproval(
        login_hint=input.holder,
        expected_subject=input.holder_subject,
        binding_message=binding_message,
        authorization_details=authorization_details,
    )


class SupportActivities:
    def __init__(self, sealer: TokenSealer, ledger: ToolLedger) -> None:
        self._sealer = sealer
        self._ledger = ledger

    @activity.defn(name=TOOL)
    async def reset_account(self, call: ApprovedToolCall) -> str:
        reset = AccountReset.model_validate(call.arguments)
        open_call(self._sealer, call, required=True)
        new = self._ledger.record_call(call)
        again = "" if new else " (already done)"
        return f"Account {reset.account_id} reset; a link was sent by {reset.send_link_by}{again}."


@workflow.defn
class SupportAssistantWorkflow:
    @workflow.run
    async def run(self, input: SupportInput) -> ToolAgentResult:
        tool = gated_activity_as_tool(
            SupportActivities.reset_account,
            approval_for(input),
            parameters=AccountReset,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        agent = Agent(name="support-assistant", instructions="Help the customer with their account.", tools=[tool])
        approvals = ToolApprovals()
        result = await approvals.run(agent, input.prompt())
        return ToolAgentResult(reply=str(result.final_output), outcomes=approvals.outcomes)

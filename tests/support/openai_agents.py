"""Workflows that try what an agent through the SDK does not.

Run a gated tool's activity with arguments other than those approved, approve a gated call without
CIBA, mix a gated tool with one the application approves itself."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from agents import Agent, FunctionTool, Runner

    from temporal_ciba.agents import ApprovedToolCall, ToolArguments, ask_for_tool_call
    from temporal_ciba.agents.openai import ToolApprovals, gated_activity_as_tool
    from temporal_ciba_examples.openai_agents.maintenance import (
        TOOL,
        MaintenanceActivities,
        MaintenanceInput,
        ProductionChange,
        approval_for,
    )


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


class ToolRunResult(BaseModel):
    reply: str = ""
    other_interruptions: list[str] = []
    approvals: int = 0
    error: str | None = None


async def _note(context: Any, arguments: str) -> str:
    return "noted"


def _agent(input: MaintenanceInput) -> Agent[Any]:
    gated = gated_activity_as_tool(
        MaintenanceActivities.apply_production_change,
        approval_for(input),
        parameters=ProductionChange,
        start_to_close_timeout=timedelta(seconds=30),
    )
    # A tool of the application's own that needs the SDK's plain approval, not ours.
    note = FunctionTool(
        name="note",
        description="Take a note.",
        params_json_schema={"type": "object", "properties": {}, "additionalProperties": False, "required": []},
        on_invoke_tool=_note,
        needs_approval=True,
    )
    return Agent(name="mixed", tools=[gated, note])


@workflow.defn
class MixedToolsWorkflow:
    """A gated tool and the application's own approval-needing tool, called in one turn."""

    @workflow.run
    async def run(self, input: MaintenanceInput) -> ToolRunResult:
        agent = _agent(input)
        approvals = ToolApprovals()
        result = await approvals.run(agent, input.prompt())
        others = [str(item.tool_name) for item in result.interruptions]
        state = result.to_state()
        for item in result.interruptions:
            state.approve(item)  # the application's own decision for its own tool
        result = await approvals.run(agent, state)
        return ToolRunResult(
            reply=str(result.final_output), other_interruptions=others, approvals=len(approvals.outcomes)
        )


@workflow.defn
class SelfApprovedWorkflow:
    """Approves the gated call with the SDK's state.approve, bypassing run_with_approvals."""

    @workflow.run
    async def run(self, input: MaintenanceInput) -> ToolRunResult:
        agent = _agent(input)
        result = await Runner.run(agent, input.prompt())
        state = result.to_state()
        for item in result.interruptions:
            state.approve(item)
        try:
            result = await Runner.run(agent, state)
        except Exception as exc:
            causes = [exc]
            while causes[-1].__cause__ is not None:
                causes.append(causes[-1].__cause__)  # type: ignore[arg-type]
            types = [c.type if isinstance(c, ApplicationError) else type(c).__name__ for c in causes]
            return ToolRunResult(error=" <- ".join(str(t) for t in types))
        return ToolRunResult(reply=str(result.final_output))

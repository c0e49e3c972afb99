"""Gate an OpenAI Agents SDK tool (on Temporal) behind a validated CIBA approval.

    tool = gated_activity_as_tool(reset_account, approval, parameters=ResetAccount,
                                  start_to_close_timeout=timedelta(seconds=30))
    agent = Agent(name="support", tools=[tool])
    result = await run_with_approvals(agent, "Reset account 42")      # in the agent's workflow

    Runner.run ──▶ interruption (needs_approval: approval.applies_to(args))
       └─ ask_for_tool_call: a child CibaApprovalWorkflow per tool call, durable
            approved ──▶ state.approve ──▶ the tool runs its activity with ApprovedToolCall
            otherwise ──▶ state.reject(rejection_message=refusal_for_model(...)): the model's
                          next turn reads why, in one line

The activity receives the call's arguments and the validated outcome, and calls
`open_tool_call(sealer, call)` before it acts: arguments other than those approved, or another
workflow run, find no token (GrantRefused). Versions: temporalio-openai-agents 1.1
(openai-agents 0.22); `OpenAIAgentsPlugin` goes before `CibaPlugin` in a plugin list.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from agents import Agent, FunctionTool, RunContextWrapper, Runner, RunResult, RunState, ToolApprovalItem
from agents.tool_context import ToolContext
from pydantic import BaseModel, ValidationError
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents._tool_approval import (
    ApprovedToolCall,
    ToolApproval,
    ToolArguments,
    ask_for_tool_call,
    refusal_for_model,
    tool_action_digest,
)

__all__ = ["GatedTool", "ToolApprovals", "gated_activity_as_tool", "run_with_approvals"]


@dataclasses.dataclass
class GatedTool(FunctionTool):
    """A FunctionTool whose calls need a CIBA approval where `approval.applies_to` says so."""

    approval: ToolApproval = dataclasses.field(kw_only=True)
    parameters: type[BaseModel] = dataclasses.field(kw_only=True)

    def arguments(self, raw: str | Mapping[str, Any], *, call_id: str, context: Any = None) -> ToolArguments:
        """The call's arguments as the tool's parameters model reads them.

        Defaults are filled in and values are JSON types: the one form that is digested, approved
        and handed to the activity. ValidationError for arguments the model got wrong."""
        parsed = (
            self.parameters.model_validate_json(raw)
            if isinstance(raw, str)
            else self.parameters.model_validate(dict(raw))
        )
        return ToolArguments(parsed.model_dump(mode="json"), tool_name=self.name, call_id=call_id, context=context)


# The approvals of the run in progress, for the tool invocations of that run. A context variable,
# since tools run as tasks of the workflow's own event loop and inherit it; other workflows on
# the same worker have their own context.
_current: contextvars.ContextVar[ToolApprovals] = contextvars.ContextVar("temporal_ciba_tool_approvals")


class ToolApprovals:
    """Runs an agent in workflow code, answering its gated tools' interruptions with CIBA approvals.

    `outcomes` keeps each call's validated outcome by tool call id.

    Once only interruptions of other tools (not GatedTools) remain, `run` returns that result:
    decide them on `result.to_state()` (approve or reject), then call `run` again with that state.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, ApprovalOutcome] = {}
        self._digests: dict[str, str] = {}

    async def run(self, agent: Agent[Any], input: str | list[Any] | RunState[Any], **run_options: Any) -> RunResult:
        """`Runner.run(agent, input, **run_options)`, asking for approval at each gated tool call.

        While the run stops on gated tool calls, ask for each (concurrently), approve or reject
        it, and resume."""
        token = _current.set(self)
        try:
            result = await Runner.run(agent, input, **run_options)
            while ours := [item for item in result.interruptions if _gated_tool(item) is not None]:
                state = result.to_state()
                decisions = await asyncio.gather(*(self._decide(item, result.context_wrapper) for item in ours))
                for item, refusal in zip(ours, decisions, strict=True):
                    if refusal is None:
                        state.approve(item)
                    else:
                        state.reject(item, rejection_message=refusal)
                result = await Runner.run(agent, state, **run_options)
            return result
        finally:
            _current.reset(token)

    async def _decide(self, item: ToolApprovalItem, context: RunContextWrapper[Any]) -> str | None:
        """Ask for one call; None when approved, else the line the model reads."""
        tool = _gated_tool(item)
        assert tool is not None
        call_id = item.call_id
        assert call_id is not None  # a function tool call always has one
        try:
            arguments = tool.arguments(item.arguments or "{}", call_id=call_id, context=context)
        except ValidationError as exc:
            return _invalid_arguments(tool.name, exc)
        outcome = await ask_for_tool_call(tool.approval, arguments)
        self.outcomes[call_id] = outcome
        self._digests[call_id] = tool_action_digest(tool.name, arguments)
        return None if outcome.approved else refusal_for_model(tool.name, outcome)

    def approved(self, call_id: str, digest: str) -> ApprovalOutcome | None:
        """The approved outcome of this call, if it was approved for exactly this digest."""
        outcome = self.outcomes.get(call_id)
        return outcome if outcome is not None and outcome.approved and self._digests[call_id] == digest else None


async def run_with_approvals(
    agent: Agent[Any], input: str | list[Any] | RunState[Any], **run_options: Any
) -> RunResult:
    """`ToolApprovals().run(...)`: run the agent, asking a human for every gated tool call."""
    return await ToolApprovals().run(agent, input, **run_options)


def _gated_tool(item: ToolApprovalItem) -> GatedTool | None:
    tools = getattr(item.agent, "tools", [])
    return next((tool for tool in tools if isinstance(tool, GatedTool) and tool.name == item.tool_name), None)


def _invalid_arguments(tool_name: str, error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "arguments"
    return f"The {tool_name} call was not run: its arguments are invalid ({where}: {first['msg']})."


def gated_activity_as_tool(
    activity_fn: Callable[..., Any],
    approval: ToolApproval,
    *,
    parameters: type[BaseModel],
    name: str | None = None,
    description: str | None = None,
    start_to_close_timeout: timedelta = timedelta(minutes=5),
    retry_policy: RetryPolicy | None = None,
    task_queue: str | None = None,
    strict_json_schema: bool = True,
) -> GatedTool:
    """A tool that runs `activity_fn` only after a human approved this very call.

    The model calls it with `parameters`; `activity_fn` is an activity taking one
    ApprovedToolCall, and approval is asked where `approval.when` asks for it. Run the agent
    with `run_with_approvals`; a call approved any other way is refused. The tool's name is the
    activity's unless given."""
    activity_name = activity._Definition.must_from_callable(activity_fn).name
    if not activity_name:
        raise ValueError("gated_activity_as_tool: the activity needs a name (a dynamic activity cannot be a tool)")
    tool_name = name or activity_name

    async def needs_approval(context: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        try:
            arguments = tool.arguments(params, call_id=call_id, context=context)
        except ValidationError:
            return False  # nothing to approve: the invocation refuses the call
        return tool.approval.applies_to(arguments)

    async def invoke(context: ToolContext[Any], raw_arguments: str) -> str:
        call_id = context.tool_call_id
        try:
            arguments = tool.arguments(raw_arguments or "{}", call_id=call_id, context=context)
        except ValidationError as exc:
            return _invalid_arguments(tool.name, exc)
        outcome = None
        if tool.approval.applies_to(arguments):
            approvals = _current.get(None)
            outcome = approvals.approved(call_id, tool_action_digest(tool.name, arguments)) if approvals else None
            if outcome is None:
                raise ApplicationError(
                    f"the {tool.name} call {call_id} has no CIBA approval: run the agent with run_with_approvals",
                    type="ToolCallNotApproved",
                    non_retryable=True,
                )
        call = ApprovedToolCall(tool_name=tool.name, call_id=call_id, arguments=dict(arguments), outcome=outcome)
        result: Any = await workflow.execute_activity(
            activity_name,
            call,
            task_queue=task_queue,
            start_to_close_timeout=start_to_close_timeout,
            retry_policy=retry_policy,
            summary=f"{tool.name} {call_id}",
        )
        return str(result)

    schema = parameters.model_json_schema()
    tool = GatedTool(
        name=tool_name,
        description=description or parameters.__doc__ or activity_fn.__doc__ or "",
        params_json_schema=schema,
        on_invoke_tool=invoke,
        strict_json_schema=strict_json_schema,
        needs_approval=needs_approval,
        approval=approval,
        parameters=parameters,
    )
    return tool

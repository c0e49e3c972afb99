"""Gate a PydanticAI agent's tool calls behind a validated CIBA approval (PydanticAI on Temporal).

    agent = Agent(
        model,
        name="payer",
        capabilities=[TemporalDurability(), CibaToolApprovals({"pay": ToolApproval(login_hint="alice")})],
    )

    @agent.tool(metadata={"temporal": False})           # runs in the workflow; its side effect does not
    async def pay(ctx: RunContext[None], payment: Payment) -> str:
        call = approved_call(ctx, payment=payment)      # every argument the tool acts on
        receipt = await workflow.execute_activity(pay_activity, call, ...)   # open_tool_call(sealer, call)
        ...

What happens to a call of a gated tool (all of it in the agent's workflow, deterministic):

1. `before_tool_execute`: the arguments are validated; unless `ToolApproval.when` lets the call
   through, the call is deferred (`ApprovalRequired`), carrying its arguments as JSON.
2. `handle_deferred_tool_calls`: for each deferred call of a gated tool, a child
   CibaApprovalWorkflow (`ask_for_tool_call`, its id from the agent workflow's, the tool call id
   and the action digest). Approved: the call resumes with the validated outcome as its
   `tool_call_metadata`. Anything else: it is denied with `refusal_for_model`'s one line, which
   the model reads as the tool's result on its next turn.
3. The tool runs. `approved_call` pairs the arguments the tool actually runs with and the outcome;
   the activity that acts calls `open_tool_call(sealer, call)`, which opens the access token only
   for the approved action digest in this workflow run. Arguments changed after approval (a
   handler's `ToolApproved(override_args=...)`, another capability's `before_tool_execute`) give
   another digest: GrantRefused, nothing runs.

Declare a gated tool without `requires_approval=True` (this capability defers it, with its
validated arguments); a gated call deferred by anything else fails the run with a UserError.
The tool may also run in PydanticAI's own tool activity (the default); `approved_call` and
`open_tool_call` work there too, as long as the sealer reaches it. Approvals of tools not named
here are left to the agent's other capabilities (or end the run as DeferredToolRequests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic_ai.capabilities import AbstractCapability, ValidatedToolArgs
from pydantic_ai.exceptions import ApprovalRequired, UserError
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolApproved,
    ToolDefinition,
    ToolDenied,
)
from pydantic_core import to_jsonable_python

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents._tool_approval import (
    ApprovedToolCall,
    ToolApproval,
    ToolArguments,
    ask_for_tool_call,
    refusal_for_model,
)

# The key under which this module keeps its data in PydanticAI's per-call metadata: the deferred
# call's arguments (as JSON) on the way out, the validated outcome on the way back.
METADATA_KEY = "temporal_ciba"


def tool_arguments_json(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validated tool arguments (pydantic models, dates, decimals) as plain JSON values.

    This is the form the action digest is computed over, the same in the workflow and in the
    tool."""
    return dict(to_jsonable_python(dict(arguments)))


class CibaToolApprovals(AbstractCapability[Any]):
    """A PydanticAI capability: the tools named here run only after a human approved the call.

    Approval is asked through CIBA. Put it after `TemporalDurability()` in the agent's
    capabilities.

    `tools` maps a tool's name to its ToolApproval (who approves, what they see, when to ask);
    its functions receive the call's ToolArguments: the validated arguments as JSON values,
    `tool_name`, `call_id` and `context` (the RunContext).
    """

    def __init__(self, tools: Mapping[str, ToolApproval]) -> None:
        super().__init__()
        self.tools = dict(tools)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # holds functions: not buildable from an agent spec

    async def before_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
    ) -> ValidatedToolArgs:
        approval = self.tools.get(tool_def.name)
        # An approved call goes on: the tool's activity checks the approval against the
        # arguments it runs with (open_tool_call), wherever they came from.
        if approval is None or ctx.tool_call_approved:
            return args
        arguments = tool_arguments_json(args)
        if approval.applies_to(
            ToolArguments(arguments, tool_name=tool_def.name, call_id=call.tool_call_id, context=ctx)
        ):
            raise ApprovalRequired(metadata={METADATA_KEY: arguments})
        return args

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        ours = [call for call in requests.approvals if call.tool_name in self.tools]
        if not ours:
            return None
        # Several calls in one model turn are asked for at once, each with its own approval.
        outcomes = await asyncio.gather(*(self._ask(ctx, call, requests) for call in ours))
        approvals: dict[str, ToolApproved | ToolDenied] = {}
        metadata: dict[str, dict[str, Any]] = {}
        for call, outcome in zip(ours, outcomes, strict=True):
            if outcome.approved:
                approvals[call.tool_call_id] = ToolApproved()
                metadata[call.tool_call_id] = {METADATA_KEY: outcome.model_dump(mode="json")}
            else:
                approvals[call.tool_call_id] = ToolDenied(refusal_for_model(call.tool_name, outcome))
        return requests.build_results(approvals=approvals, metadata=metadata)

    async def _ask(self, ctx: RunContext[Any], call: ToolCallPart, requests: DeferredToolRequests) -> ApprovalOutcome:
        # The validated arguments we deferred with. A call deferred by anything else (the tool's
        # requires_approval=True, which PydanticAI applies before our hook; an ApprovalRequired of
        # the tool's own) carries the model's raw arguments, without defaults or coercion: the
        # human would approve a digest the tool never matches. A configuration error, not a denial.
        deferred = requests.metadata.get(call.tool_call_id)
        arguments = deferred.get(METADATA_KEY) if isinstance(deferred, dict) else None
        if not isinstance(arguments, dict):
            raise UserError(
                f"CibaToolApprovals gates the tool {call.tool_name!r} itself: declare it without "
                "requires_approval=True and raise no ApprovalRequired in it"
            )
        tool_arguments = ToolArguments(arguments, tool_name=call.tool_name, call_id=call.tool_call_id, context=ctx)
        return await ask_for_tool_call(self.tools[call.tool_name], tool_arguments)


def approval_outcome(ctx: RunContext[Any]) -> ApprovalOutcome | None:
    """The validated outcome this tool call was approved with, or None.

    None when approval was not asked, or the call was approved by something other than
    CibaToolApprovals."""
    metadata = ctx.tool_call_metadata if ctx.tool_call_approved else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        return None
    return ApprovalOutcome.model_validate(metadata[METADATA_KEY])


def approved_call(ctx: RunContext[Any], **arguments: Any) -> ApprovedToolCall:
    """The call as it runs now, for the gated tool to hand to the activity that acts.

    Pass every argument of the tool (defaults included), as the tool received it: the activity's
    `open_tool_call` recomputes the action digest from them, and any difference from what the
    human approved (a missing argument included) refuses the call."""
    if ctx.tool_name is None or ctx.tool_call_id is None:
        raise ValueError("approved_call: call it from inside a tool (the RunContext names no tool call)")
    return ApprovedToolCall(
        tool_name=ctx.tool_name,
        call_id=ctx.tool_call_id,
        arguments=tool_arguments_json(arguments),
        outcome=approval_outcome(ctx),
    )


__all__ = [
    "METADATA_KEY",
    "CibaToolApprovals",
    "approval_outcome",
    "approved_call",
    "tool_arguments_json",
]

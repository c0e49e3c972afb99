"""The workflow of one gated MCP tool call: ask, then call the tool once with the approved arguments.

    McpToolCallWorkflow(input)
      ├─ require_approval(input.request, policy=input.policy)   a child CibaApprovalWorkflow
      ├─ not approved ──▶ McpToolCallResult(refusal=refusal_for_model(...)); the tool never runs
      └─ approved ──▶ activity input.activity(ApprovedToolCall), one attempt, exactly these arguments

Cancelling the workflow (the MCP client cancelled its request) cancels the approval: its
outcome is `cancelled`, and the tool never runs. The activity runs at most once: a tool call
is not known to be idempotent, so a failure ends the call with an error result instead of a
second call.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._models import ApprovalOutcome
    from temporal_ciba._workflow import require_approval
    from temporal_ciba.agents import ApprovedToolCall, refusal_for_model
    from temporal_ciba.mcp._calls import (
        STATUS_QUERY,
        McpCallState,
        McpToolCallInput,
        McpToolCallResult,
        approval_id_of,
    )


@workflow.defn(name="temporal-ciba.mcp.ToolCall")
class McpToolCallWorkflow:
    """One gated MCP tool call: its approval, then the tool, once."""

    @workflow.init
    def __init__(self, input: McpToolCallInput) -> None:
        self._phase = "approving"

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> McpCallState:
        return McpCallState(phase=self._phase, approval_workflow_id=approval_id_of(workflow.info().workflow_id))

    @workflow.run
    async def run(self, input: McpToolCallInput) -> McpToolCallResult:
        workflow.set_current_details(f"MCP tool call **{input.tool_name}**, waiting for its approval")
        outcome: ApprovalOutcome | None = None
        try:
            if input.ask:
                outcome = await require_approval(
                    input.request,
                    id=approval_id_of(workflow.info().workflow_id),
                    policy=input.policy,
                    action=input.action,
                )
        except asyncio.CancelledError:
            # The MCP client cancelled the call; the approval itself was cancelled with it.
            outcome = ApprovalOutcome(
                status="cancelled",
                workflow_id=approval_id_of(workflow.info().workflow_id),
                reason="the MCP client cancelled the call",
                action_digest=input.request.action_digest,
                decided_at=workflow.now(),
            )
        if outcome is not None and not outcome.approved:
            self._phase = "done"
            return McpToolCallResult(outcome=outcome, refusal=refusal_for_model(input.tool_name, outcome))
        self._phase = "calling"
        call = ApprovedToolCall(
            tool_name=input.tool_name, call_id=input.call_id, arguments=input.arguments, outcome=outcome
        )
        try:
            result: Any = await workflow.execute_activity(
                input.activity,
                call,
                task_queue=input.task_queue,
                start_to_close_timeout=timedelta(seconds=input.activity_timeout_seconds),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=f"{input.tool_name} {input.call_id}",
            )
        except ActivityError as exc:
            self._phase = "done"
            cause = exc.cause or exc
            message = getattr(cause, "message", None) or str(cause)
            text = f"The {input.tool_name} call was approved but failed: {message}"
            return McpToolCallResult(
                outcome=outcome, result={"content": [{"type": "text", "text": text}], "isError": True}
            )
        self._phase = "done"
        return McpToolCallResult(outcome=outcome, result=as_call_tool_result(result))


def as_call_tool_result(value: Any) -> dict[str, Any]:
    """An activity's return value as an MCP CallToolResult (JSON): a CallToolResult as it is,
    text as one text block, anything else as structured content with its JSON as text."""

    if isinstance(value, dict) and isinstance(value.get("content"), list):
        return value
    if isinstance(value, str):
        return {"content": [{"type": "text", "text": value}], "isError": False}
    text = json.dumps(value, sort_keys=True, default=str)
    structured = value if isinstance(value, dict) else {"result": value}
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": False}

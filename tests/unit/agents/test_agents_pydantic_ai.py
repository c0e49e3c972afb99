"""CibaToolApprovals in a plain PydanticAI run (no Temporal).

What the end-to-end tests cannot vary cheaply. The arguments the gate defers with (and the
approval's digest is computed over) and the arguments the tool hands its activity (`approved_call`)
must give the same digest for any argument types, defaults included; and `when` lets a call through
unasked, with nothing to open."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved

from temporal_ciba._grant import GrantRefused
from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents import ApprovedToolCall, ToolApproval, open_tool_call, tool_action_digest
from temporal_ciba.agents.pydantic_ai import METADATA_KEY, CibaToolApprovals, approved_call
from temporal_ciba.crypto import TokenSealer

SEALER = TokenSealer(b"k" * 32)
NOW = datetime(2026, 11, 28, tzinfo=UTC)


class Invoice(BaseModel):
    amount: Decimal
    due: date
    tags: list[str] = []


class RecordingApprovals(CibaToolApprovals):
    """Approves every gated call as if the human said yes, bound to the digest of the arguments
    the gate deferred with (what ask_for_tool_call binds the real approval to)."""

    def __init__(self, tools: dict[str, ToolApproval]) -> None:
        super().__init__(tools)
        self.deferred: list[DeferredToolRequests] = []

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        self.deferred.append(requests)
        metadata = {}
        for call in requests.approvals:
            digest = tool_action_digest(call.tool_name, requests.metadata[call.tool_call_id][METADATA_KEY])
            outcome = ApprovalOutcome(
                status="approved", workflow_id="w", reason="approved", action_digest=digest, decided_at=NOW
            )
            metadata[call.tool_call_id] = {METADATA_KEY: outcome.model_dump(mode="json")}
        approvals = {call.tool_call_id: ToolApproved() for call in requests.approvals}
        return requests.build_results(approvals=approvals, metadata=metadata)


def model_calling(arguments: dict[str, Any]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts):
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart("settle", arguments, tool_call_id="call-1")])

    return FunctionModel(respond)


def agent_with(approvals: CibaToolApprovals, arguments: dict[str, Any], seen: list[ApprovedToolCall]) -> Agent:
    agent = Agent(model_calling(arguments), capabilities=[approvals])

    @agent.tool
    async def settle(ctx: RunContext[None], invoice: Invoice, note: str = "none", urgent: bool = False) -> str:
        seen.append(approved_call(ctx, invoice=invoice, note=note, urgent=urgent))
        return "settled"

    return agent


@pytest.mark.parametrize(
    "arguments",
    [
        {"invoice": {"amount": "12.50", "due": "2026-12-01"}},
        {"invoice": {"amount": 12.5, "due": "2026-12-01", "tags": ["a", "ü"]}, "note": "x", "urgent": True},
    ],
    ids=["defaults left out by the model", "every argument given"],
)
async def test_the_tool_sees_the_digest_the_approval_was_bound_to(arguments: dict[str, Any]) -> None:
    approvals = RecordingApprovals({"settle": ToolApproval(login_hint="alice")})
    seen: list[ApprovedToolCall] = []

    result = await agent_with(approvals, arguments, seen).run("settle it")

    assert result.output == "done"
    [requests] = approvals.deferred
    deferred = requests.metadata["call-1"][METADATA_KEY]
    assert set(deferred) == {"invoice", "note", "urgent"}  # validated, defaults included, as JSON
    [call] = seen
    assert call.arguments == deferred and call.call_id == "call-1" and call.tool_name == "settle"
    assert call.outcome is not None
    assert tool_action_digest(call.tool_name, call.arguments) == call.outcome.action_digest


async def test_when_lets_a_call_through_unasked_with_nothing_to_open() -> None:
    approvals = RecordingApprovals({"settle": ToolApproval(login_hint="alice", when=lambda a: a["urgent"])})
    seen: list[ApprovedToolCall] = []

    await agent_with(approvals, {"invoice": {"amount": "1.00", "due": "2026-12-01"}}, seen).run("settle it")

    assert approvals.deferred == []
    [call] = seen
    assert call.outcome is None
    with pytest.raises(GrantRefused, match="has no approval"):
        open_tool_call(SEALER, call)
    assert open_tool_call(SEALER, call, required=False) is None


async def test_approved_call_outside_a_tool_is_a_one_line_error() -> None:
    ctx = RunContext[None](deps=None, model=model_calling({}), usage=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call it from inside a tool") as raised:
        approved_call(ctx)
    assert "\n" not in str(raised.value)


async def test_a_gated_tool_declared_requires_approval_is_a_configuration_error() -> None:
    """PydanticAI defers such a call before the gate sees its validated arguments.

    Asking a human for the model's raw ones would bind the approval to a digest the tool never
    matches."""
    approvals = CibaToolApprovals({"settle": ToolApproval(login_hint="alice")})
    agent = Agent(model_calling({"invoice": {"amount": "1.00", "due": "2026-12-01"}}), capabilities=[approvals])

    @agent.tool(requires_approval=True)
    async def settle(ctx: RunContext[None], invoice: Invoice) -> str:
        raise AssertionError("a gated call ran unapproved")

    with pytest.raises(UserError, match="declare it without requires_approval=True") as raised:
        await agent.run("settle it")
    assert "\n" not in str(raised.value)

"""Gate an agent's tool calls behind a validated CIBA approval.

    temporal_ciba.agents               the framework-neutral part (this module)
    temporal_ciba.agents.openai        OpenAI Agents SDK on Temporal   (extra: openai-agents)
    temporal_ciba.agents.pydantic_ai   PydanticAI on Temporal          (extra: pydantic-ai)
    temporal_ciba.agents.both_frameworks  both in one worker: the payload converter (both extras)

The framework modules import their framework; this one does not.
"""

from temporal_ciba._models import short_code
from temporal_ciba.agents._tool_approval import (
    ApprovedToolCall,
    ToolApproval,
    ToolArguments,
    approval_workflow_id,
    ask_for_tool_call,
    open_tool_call,
    refusal_for_model,
    tool_action_digest,
    tool_approval_id,
)

__all__ = [
    "ApprovedToolCall",
    "ToolApproval",
    "ToolArguments",
    "approval_workflow_id",
    "ask_for_tool_call",
    "open_tool_call",
    "refusal_for_model",
    "short_code",
    "tool_action_digest",
    "tool_approval_id",
]

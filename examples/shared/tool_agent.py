"""What the example tool agents (maintenance bot, support assistant) take and return."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from temporal_ciba import ApprovalOutcome
from temporal_ciba_examples.shared.scripted_model import Script, ScriptedCall


class ToolAgentInput(BaseModel):
    """The user's request and, for the offline model, the tool calls it is to make."""

    request: str = Field(min_length=1)
    tool_calls: list[ScriptedCall] = Field(default_factory=list)

    def prompt(self) -> str:
        return json.dumps(Script(request=self.request, tool_calls=self.tool_calls).model_dump(mode="json"))


class ToolAgentResult(BaseModel):
    """What the model finally said, and each gated call's approval outcome by tool call id."""

    reply: str
    outcomes: dict[str, ApprovalOutcome] = Field(default_factory=dict)

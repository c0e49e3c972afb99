"""The example agents' model, offline: it makes the tool calls its prompt scripts, then relays
what the tools answered. No network and no API key, so the examples and their tests run anywhere.

The prompt is JSON: `{"request": "...", "tool_calls": [{"name": "...", "arguments": {...}}]}`.
A real model reads the request and decides the calls itself; this one is told them.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from agents import ModelResponse, Usage
from openai.types.responses import ResponseFunctionToolCall
from pydantic import BaseModel, Field
from temporalio.openai_agents.testing import ResponseBuilders, TestModel


class ScriptedCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Script(BaseModel):
    request: str
    tool_calls: list[ScriptedCall] = Field(default_factory=list)


class ScriptedModel(TestModel):
    """First turn: every scripted call at once (each with a fresh call id, as a real model does).
    Later turns: one message relaying the tool outputs it was given. `inputs` keeps every turn's
    input, for tests that check what the model read."""

    def __init__(self) -> None:
        super().__init__(lambda: ResponseBuilders.output_message(""))
        self.inputs: list[list[dict[str, Any]]] = []

    async def get_response(self, system_instructions: str | None, input: Any, *args: Any, **kwargs: Any) -> Any:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else [_as_dict(i) for i in input]
        self.inputs.append(items)
        outputs = [str(item.get("output", "")) for item in items if item.get("type") == "function_call_output"]
        if outputs:
            return ResponseBuilders.output_message(" ".join(outputs))
        script = Script.model_validate_json(_first_user_text(items))
        calls = [
            ResponseFunctionToolCall(
                arguments=json.dumps(call.arguments),
                call_id=f"call_{secrets.token_hex(8)}",
                name=call.name,
                type="function_call",
                id=f"fc_{secrets.token_hex(8)}",
                status="completed",
            )
            for call in script.tool_calls
        ]
        if not calls:
            return ResponseBuilders.output_message(f"Nothing to do for: {script.request}")
        return ModelResponse(output=list(calls), usage=Usage(), response_id=None)


def _as_dict(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.model_dump()


def _first_user_text(items: list[dict[str, Any]]) -> str:
    content = next(item["content"] for item in items if item.get("role") == "user")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)

"""The gated tool's arguments.

The SDK hands them over in two forms (a parsed dict to `needs_approval`, the raw JSON to the
approval and the invocation), and all three must digest the same, or an approved call would find no
token. The end-to-end tests cover the rest."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from temporal_ciba.agents import ApprovedToolCall, ToolApproval, tool_action_digest
from temporal_ciba.agents.openai import gated_activity_as_tool


class Restart(BaseModel):
    """Restart a service."""

    service: str
    grace_seconds: int = 30


@activity.defn(name="restart_service")
async def restart_service(call: ApprovedToolCall) -> str:
    return "restarted"


TOOL = gated_activity_as_tool(restart_service, ToolApproval(login_hint="alice"), parameters=Restart)


def test_both_forms_of_the_arguments_digest_alike_with_defaults_filled_in() -> None:
    from_json = TOOL.arguments('{"service": "api"}', call_id="call_1")
    from_dict = TOOL.arguments({"grace_seconds": 30, "service": "api"}, call_id="call_1")
    assert dict(from_json) == dict(from_dict) == {"service": "api", "grace_seconds": 30}
    assert tool_action_digest(TOOL.name, from_json) == tool_action_digest(TOOL.name, from_dict)
    assert tool_action_digest(TOOL.name, from_json) != tool_action_digest(
        TOOL.name, TOOL.arguments('{"service": "api", "grace_seconds": 0}', call_id="call_1")
    )


def test_the_tool_is_named_and_described_from_the_activity_and_the_model() -> None:
    assert TOOL.name == "restart_service" and TOOL.description == "Restart a service."
    # Strict mode (the SDK's default): every property required, nothing else accepted.
    assert TOOL.params_json_schema["required"] == ["service", "grace_seconds"]
    assert TOOL.params_json_schema["additionalProperties"] is False

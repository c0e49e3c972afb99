"""BothFrameworksConverter: OpenAI Agents SDK and PydanticAI agents in one worker.

PydanticAIPayloadConverter writes a model's unset fields as JSON null. An OpenAI model's tool
call comes back from history with them (`namespace: None`, ...), goes into the next model turn's
input, and that input (openai's typed dicts) no longer decodes in the model activity: the
OpenAI agent's run never gets past its first tool call. BothFrameworksPayloadConverter writes
JSON as OpenAIPayloadConverter does and is a PydanticAIPayloadConverter, which PydanticAIPlugin
keeps."""

from __future__ import annotations

import warnings

import pytest
from agents import ModelResponse, Usage
from agents.items import TResponseInputItem
from openai.types.responses import ResponseFunctionToolCall
from pydantic import ValidationError
from pydantic_ai.durable_exec.temporal import PydanticAIPayloadConverter, PydanticAIPlugin
from pydantic_ai.messages import ModelRequest, ToolReturnPart
from temporalio.converter import PayloadConverter
from temporalio.openai_agents import OpenAIAgentsPlugin, OpenAIPayloadConverter

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba.agents.both_frameworks import BothFrameworksConverter, BothFrameworksPayloadConverter
from tests.support.converters import KEY, approval_request, assert_sealed_round_trip, configured


def next_turn_input(converter: PayloadConverter) -> list[TResponseInputItem]:
    """A model's tool call through history (the model activity's result) and into the next
    turn's input (the model activity's argument), each way through `converter`."""
    call = ResponseFunctionToolCall(
        arguments='{"account_id": "42"}', call_id="call_1", name="reset", type="function_call", status="completed"
    )
    [result] = converter.to_payloads([ModelResponse(output=[call], usage=Usage(), response_id=None)])
    [response] = converter.from_payloads([result], [ModelResponse])
    [argument] = converter.to_payloads([response.to_input_items()])
    [items] = converter.from_payloads([argument], [list[TResponseInputItem]])
    return items  # type: ignore[no-any-return]


def test_pydantic_ai_converter_breaks_the_next_model_turn() -> None:
    with pytest.raises(ValidationError):
        next_turn_input(PydanticAIPayloadConverter())


@pytest.mark.parametrize("converter_class", [OpenAIPayloadConverter, BothFrameworksPayloadConverter])
def test_the_next_model_turn_holds_the_call_as_made(converter_class: type[PayloadConverter]) -> None:
    [item] = next_turn_input(converter_class())
    assert item == {
        "arguments": '{"account_id": "42"}',
        "call_id": "call_1",
        "name": "reset",
        "type": "function_call",
        "status": "completed",
    }


def test_pydantic_ai_messages_round_trip() -> None:
    converter = BothFrameworksPayloadConverter()
    message = ModelRequest(parts=[ToolReturnPart(tool_name="pay", content="paid", tool_call_id="pay-1")])
    [payload] = converter.to_payloads([message])
    assert converter.from_payloads([payload], [ModelRequest]) == [message]


async def test_the_documented_order_keeps_it_silently_and_seals() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PydanticAIPlugin would warn if it replaced a converter
        plugins = [OpenAIAgentsPlugin(), BothFrameworksConverter(), PydanticAIPlugin(), CibaPlugin(payload_key=KEY)]
        converter = configured(plugins)
    assert issubclass(converter.payload_converter_class, BothFrameworksPayloadConverter)
    await assert_sealed_round_trip(converter, approval_request(), BothFrameworksPayloadConverter)


@pytest.mark.parametrize(
    "plugins",
    [
        [BothFrameworksConverter(), OpenAIAgentsPlugin()],
        [OpenAIAgentsPlugin(), PydanticAIPlugin(), BothFrameworksConverter()],
    ],
    ids=["before openai", "after pydantic-ai"],
)
def test_another_order_is_refused(plugins: list[object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="right after OpenAIAgentsPlugin"):
            configured(plugins)  # type: ignore[arg-type]

"""OpenAI Agents SDK and PydanticAI agents in one Temporal worker: one payload converter for both.

    plugins = [OpenAIAgentsPlugin(...), BothFrameworksConverter(), PydanticAIPlugin(), CibaPlugin(...)]

Each framework's plugin sets its own payload converter. OpenAIAgentsPlugin accepts only the SDK
default (which it replaces by OpenAIPayloadConverter), so it goes first; PydanticAIPlugin replaces
any converter that is not a PydanticAIPayloadConverter subclass by PydanticAIPayloadConverter,
which writes every field of a model, also the ones left unset, as JSON null. The OpenAI agent's
run then breaks on its second model turn: a tool call the model made comes back from history
with `namespace: null`, and the model activity's input (openai's typed dicts, which do not allow
that null) fails to decode, retried for ever.

`BothFrameworksConverter`, right after OpenAIAgentsPlugin, swaps in `BothFrameworksPayloadConverter`:
PydanticAI's converter (so PydanticAIPlugin keeps it, silently) writing JSON as OpenAI's does,
unset fields left out. CibaPlugin, last, seals its payloads as it does any converter's.
Needs both extras (`temporal-ciba[openai-agents,pydantic-ai]`).
"""

from __future__ import annotations

import dataclasses

from pydantic_ai.durable_exec.temporal import PydanticAIPayloadConverter
from temporalio.contrib.pydantic import ToJsonOptions
from temporalio.converter import DataConverter
from temporalio.openai_agents import OpenAIPayloadConverter
from temporalio.plugin import SimplePlugin

__all__ = ["BothFrameworksConverter", "BothFrameworksPayloadConverter"]

PLUGIN_NAME = "temporal_ciba.BothFrameworksConverter"


class BothFrameworksPayloadConverter(PydanticAIPayloadConverter):
    """PydanticAIPayloadConverter whose JSON leaves out unset fields.

    It writes with `exclude_unset`, as OpenAIPayloadConverter does."""

    def __init__(self) -> None:
        super().__init__(ToJsonOptions(exclude_unset=True))


def _both(converter: DataConverter | None) -> DataConverter:
    current = converter.payload_converter_class if converter is not None else None
    if converter is not None and current is BothFrameworksPayloadConverter:
        return converter
    if converter is None or current is not OpenAIPayloadConverter:
        name = getattr(current, "__name__", current)
        raise ValueError(
            "BothFrameworksConverter goes right after OpenAIAgentsPlugin (before PydanticAIPlugin "
            f"and CibaPlugin); it found the payload converter {name}"
        )
    return dataclasses.replace(converter, payload_converter_class=BothFrameworksPayloadConverter)


class BothFrameworksConverter(SimplePlugin):
    """The plugin that swaps OpenAIPayloadConverter for BothFrameworksPayloadConverter."""

    def __init__(self) -> None:
        super().__init__(PLUGIN_NAME, data_converter=_both)

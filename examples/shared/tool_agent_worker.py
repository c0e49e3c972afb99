"""A client and worker for the example tool agents: Temporal's OpenAI Agents plugin (with the
offline scripted model), then CibaPlugin (which must come after it), on one task queue that
runs the agent's workflow, its tool's activity and the approvals it asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from agents import Model
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.openai_agents import OpenAIAgentsPlugin
from temporalio.openai_agents.testing import TestModelProvider
from temporalio.worker import Worker

from temporal_ciba import CibaPlugin, OPSettings, TokenKeySettings, ensure_search_attributes


async def connect_agents(keys: TokenKeySettings, op: OPSettings, model: Model, **overrides: Any) -> Client:
    """A client from the SDK's environment configuration (TEMPORAL_ADDRESS, ...) with both plugins."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    config.update(overrides)
    plugins = [
        OpenAIAgentsPlugin(model_provider=TestModelProvider(model)),
        CibaPlugin(payload_key=keys.payload_key_bytes, token_key=keys.token_key_bytes, op=op),
    ]
    client = await Client.connect(**config, plugins=plugins)
    await ensure_search_attributes(client)
    return client


@asynccontextmanager
async def tool_agent_worker(
    client: Client, task_queue: str, workflows: Sequence[type], activities: Sequence[Callable[..., Any]]
) -> AsyncIterator[Worker]:
    """The agent's workflow and tool activities; the client's plugins add the model activity and
    the approval workflow with its activities."""
    worker = Worker(client, task_queue=task_queue, workflows=list(workflows), activities=list(activities))
    async with worker:
        yield worker

"""The chaos run's worker for the agent frameworks' gated tools, as a process it can SIGKILL.

    python -m tests.support.chaos_agents        (CIBA_* settings, TEMPORAL_ADDRESS, CHAOS_TOOL_LEDGER)

One worker, one task queue, both frameworks as tests/e2e/test_agents_mixed_worker.py runs them:
the OpenAI Agents SDK maintenance bot (its tool writes the tool ledger at CHAOS_TOOL_LEDGER,
once per approval) and the PydanticAI payment agent (its tool pays at CIBA_PAYMENT_API_URL),
each with its offline scripted model; the plugins `OpenAIAgentsPlugin`, `BothFrameworksConverter`,
`PydanticAIPlugin`, then `CibaPlugin` from the CIBA_* settings (the record store, the OP).
Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client, Plugin
from temporalio.openai_agents import OpenAIAgentsPlugin
from temporalio.openai_agents.testing import TestModelProvider
from temporalio.worker import Worker

from temporal_ciba import CibaPlugin, WorkerSettings, ensure_search_attributes, load_settings
from temporal_ciba.agents.both_frameworks import BothFrameworksConverter
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.openai_agents.maintenance import MaintenanceActivities, MaintenanceBotWorkflow
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.pydantic_ai_payment.workflows import PydanticAIPaymentAgentWorkflow
from temporal_ciba_examples.shared.scripted_model import ScriptedModel
from temporal_ciba_examples.shared.tool_ledger import ToolLedger


def agent_plugins(ciba: CibaPlugin) -> list[Plugin]:
    """Both frameworks' plugins and `ciba`, in the one order that works (docs/guides/pydantic-ai.md)."""
    openai = OpenAIAgentsPlugin(model_provider=TestModelProvider(ScriptedModel()))
    return [openai, BothFrameworksConverter(), PydanticAIPlugin(), ciba]


async def main() -> None:
    settings = load_settings(WorkerSettings)
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], plugins=agent_plugins(CibaPlugin.from_env()))
    await ensure_search_attributes(client)
    sealer = TokenSealer(settings.token_key_bytes)
    ledger = ToolLedger(Path(os.environ["CHAOS_TOOL_LEDGER"]))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with httpx.AsyncClient(timeout=15.0) as http:
        pay = PaymentActivities(http, os.environ["CIBA_PAYMENT_API_URL"], sealer)
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[MaintenanceBotWorkflow, PydanticAIPaymentAgentWorkflow],
            activities=[MaintenanceActivities(sealer, ledger).apply_production_change, pay.pay_tool_call],
        )
        async with worker:
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())

"""Both frameworks' Temporal plugins and CibaPlugin in one worker.

A gated OpenAI Agents SDK agent (the example maintenance bot, offline scripted model) and a gated
PydanticAI agent (the example payment agent), both waiting at once, approved on the real test OP, on
the real dev server. The worker's plugins: `OpenAIAgentsPlugin`, `BothFrameworksConverter`,
`PydanticAIPlugin`, `CibaPlugin` (docs/guides/pydantic-ai.md; without
BothFrameworksConverter, PydanticAI's converter breaks the OpenAI agent's second model turn,
tests/unit/agents/test_both_frameworks.py)."""

from __future__ import annotations

import base64
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client, Plugin
from temporalio.openai_agents import OpenAIAgentsPlugin
from temporalio.openai_agents.testing import TestModelProvider
from temporalio.worker import Replayer, Worker

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba.agents.both_frameworks import BothFrameworksConverter, BothFrameworksPayloadConverter
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.openai_agents.maintenance import TOOL, MaintenanceActivities, MaintenanceBotWorkflow
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.pydantic_ai_payment.workflows import PydanticAIPaymentAgentWorkflow
from temporal_ciba_examples.shared.scripted_model import ScriptedModel
from temporal_ciba_examples.shared.tool_ledger import ToolLedger
from tests.support.flows import INVOICE, pending_auth_req_id
from tests.support.op import TestOP
from tests.support.openai_agent_flows import Agents, approvals_of, pending, production_change
from tests.support.pydantic_ai_agent_flows import Agents as PydanticAIAgents
from tests.support.pydantic_ai_agent_flows import ciba
from tests.support.stack import PAYLOAD_KEY, SECRET, TOKEN_KEY, payments
from tests.support.temporal import DevServer, raw_history_bytes


def both_frameworks(model: ScriptedModel, ciba_plugin: CibaPlugin) -> list[Plugin]:
    """The plugins in the one order that works (docs/guides/pydantic-ai.md)."""
    openai = OpenAIAgentsPlugin(model_provider=TestModelProvider(model))
    return [openai, BothFrameworksConverter(), PydanticAIPlugin(), ciba_plugin]


@dataclass
class MixedWorker:
    openai: Agents
    pydantic_ai: PydanticAIAgents


@pytest.fixture
async def mixed(temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path) -> AsyncIterator[MixedWorker]:
    """One worker, one task queue.

    Both agents, their tools' activities and (CibaPlugin) the approval workflow. The OpenAI plugin
    is given the offline model: no key, no network."""
    model = ScriptedModel()
    plugins = both_frameworks(model, ciba(op))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PydanticAIPlugin keeps the converter: no warning
        client = await Client.connect(temporal_server.address, plugins=plugins)
    assert issubclass(client.data_converter.payload_converter_class, BothFrameworksPayloadConverter)
    await ensure_search_attributes(client)
    task_queue = f"mixed-{uuid.uuid4().hex[:8]}"
    ledger = ToolLedger(tmp_path / "ledger.jsonl")
    sealer = TokenSealer(base64.b64decode(TOKEN_KEY))
    async with httpx.AsyncClient(timeout=15.0) as http:
        pay = PaymentActivities(http, payment_api, sealer)
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[MaintenanceBotWorkflow, PydanticAIPaymentAgentWorkflow],
            activities=[MaintenanceActivities(sealer, ledger).apply_production_change, pay.pay_tool_call],
        )
        async with worker:
            yield MixedWorker(Agents(client, task_queue, model, ledger), PydanticAIAgents(client, task_queue))


async def raw_histories(server: DevServer, workflow_ids: Sequence[str]) -> bytes:
    """The histories as the server stores them, read by a client without the codec."""
    plain = await Client.connect(server.address)
    raw = b""
    for workflow_id in workflow_ids:
        raw += await raw_history_bytes(plain.get_workflow_handle(workflow_id))
    return raw


def token_texts(op: TestOP, auth_req_ids: Sequence[str]) -> list[str]:
    texts = [SECRET, PAYLOAD_KEY, TOKEN_KEY]
    issued = op.issued()
    for auth_req_id in auth_req_ids:
        tokens = issued[auth_req_id]
        texts += [tokens[name] for name in ("access_token", "id_token", "refresh_token") if name in tokens]
    return texts


async def test_gated_openai_and_pydantic_ai_agents_in_one_worker(
    mixed: MixedWorker, op: TestOP, payment_api: str, temporal_server: DevServer
) -> None:
    change = production_change()
    bot = await mixed.openai.maintenance(change)
    payer = await mixed.pydantic_ai.start(expected_subject="alice")
    # Both wait for their approver at once, in the same worker.
    [request] = await pending(op, f"Change {change['system']} in production, code ")
    payment_approval = mixed.pydantic_ai.approval(payer)
    payment_request = await pending_auth_req_id(payment_approval)
    op.approve(request["auth_req_id"])
    op.approve(payment_request)
    bot_result, payer_result = await bot.result(), await payer.result()

    # The OpenAI agent's tool ran once, with the arguments the human approved.
    [(call_id, outcome)] = bot_result.outcomes.items()
    assert outcome.approved and outcome.sub == "alice" and outcome.auth_req_id == request["auth_req_id"]
    [entry] = mixed.openai.ledger.entries()
    assert entry.arguments == change and entry.call_id == call_id and entry.approved_by == "alice"
    assert bot_result.reply == f"Applied to {change['system']} (production): {change['change']}."
    bot_approvals = await approvals_of(mixed.openai.client, bot.id)
    assert len(bot_approvals) == 1
    # ... scheduled once, run on its first attempt (no retry behind the ledger's deduplication).
    history = (await bot.fetch_history()).events
    scheduled = [(e.event_id, e.activity_task_scheduled_event_attributes.activity_type.name) for e in history]
    [tool_event] = [event_id for event_id, name in scheduled if name == TOOL]
    attempts = {
        e.activity_task_started_event_attributes.scheduled_event_id: e.activity_task_started_event_attributes.attempt
        for e in history
        if e.HasField("activity_task_started_event_attributes")
    }
    assert attempts[tool_event] == 1
    # The PydanticAI agent's tool paid once.
    [payment] = payments(payment_api, payer.id)
    assert payer_result.answer == f"The payment tool answered: paid, payment id {payment['payment_id']}"

    # The model's second turn holds its tool call as it made it: no field it left unset comes
    # back as null (PydanticAI's converter alone writes them, and the model activity then fails
    # to decode its input, tests/unit/agents/test_both_frameworks.py).
    first, second = mixed.openai.model.inputs
    assert second[: len(first)] == first
    [call] = [item for item in second if item.get("type") == "function_call"]
    assert call["call_id"] == call_id and None not in call.values()

    # Nothing of either agent's arguments or of any token is readable without the codec.
    workflow_ids = [bot.id, *bot_approvals, payer.id, payment_approval.id]
    raw = await raw_histories(temporal_server, workflow_ids)
    arguments = [change["system"], change["change"], "max_connections", "2026-11-29T02:00:00Z"]
    arguments += [INVOICE.creditor_name, INVOICE.creditor_iban, INVOICE.reference, "alice"]
    for text in arguments + token_texts(op, [request["auth_req_id"], payment_request]):
        assert text.encode() not in raw, text[:20]

    # Both agents' histories replay deterministically with the same plugins (the codec alone).
    codec = CibaPlugin(payload_key=base64.b64decode(PAYLOAD_KEY))
    replayer = Replayer(
        workflows=[MaintenanceBotWorkflow, PydanticAIPaymentAgentWorkflow],
        plugins=both_frameworks(ScriptedModel(), codec),
    )
    for agent in (bot, payer):
        await replayer.replay_workflow(await agent.fetch_history())

"""OpenAI Agents SDK tools gated by CIBA, end to end: the example maintenance bot and support
assistant on the real dev server, with the real test OP playing the approver's phone, and the
offline scripted model (temporalio.openai_agents.testing) calling the tools."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from temporal_ciba.crypto import TokenSealer
from temporal_ciba.example.maintenance import TOOL, MaintenanceActivities, MaintenanceBotWorkflow, MaintenanceInput
from temporal_ciba.example.scripted_model import ScriptedCall, ScriptedModel
from temporal_ciba.example.tool_agent import ToolAgentResult
from temporal_ciba.example.tool_agent_worker import connect_agents, tool_agent_worker
from temporal_ciba.example.tool_ledger import ToolLedger
from temporal_ciba.settings import TokenKeySettings
from tests.e2e.conftest import PAYLOAD_KEY, TOKEN_KEY, agent_settings
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for

KEYS = TokenKeySettings(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)  # type: ignore[arg-type]
CHANGE = {
    "system": "payments-db",
    "environment": "production",
    "change": "raise max_connections to 400",
    "window_start": "2026-11-29T02:00:00Z",
    "window_end": "2026-11-29T03:00:00Z",
}


@dataclass
class Agents:
    client: Client
    task_queue: str
    model: ScriptedModel
    ledger: ToolLedger

    async def start_maintenance(
        self, *calls: dict[str, Any], approver: str = "alice"
    ) -> WorkflowHandle[Any, ToolAgentResult]:
        agent_input = MaintenanceInput(
            request="apply the change",
            tool_calls=[ScriptedCall(name=TOOL, arguments=arguments) for arguments in calls],
            approver=approver,
        )
        return await self.client.start_workflow(
            MaintenanceBotWorkflow.run, agent_input, id=f"bot-{uuid.uuid4().hex[:10]}", task_queue=self.task_queue
        )


@pytest.fixture
async def agents(temporal_server: DevServer, op: TestOP, tmp_path: Path) -> AsyncIterator[Agents]:
    model = ScriptedModel()
    client = await connect_agents(KEYS, agent_settings(op), model, target_host=temporal_server.address)
    ledger = ToolLedger(tmp_path / "ledger.jsonl")
    sealer = TokenSealer(base64.b64decode(TOKEN_KEY))
    task_queue = f"agents-{uuid.uuid4().hex[:8]}"
    maintenance = MaintenanceActivities(sealer, ledger)
    async with tool_agent_worker(client, task_queue, [MaintenanceBotWorkflow], [maintenance.apply_production_change]):
        yield Agents(client, task_queue, model, ledger)


async def approvals_of(client: Client, agent: WorkflowHandle[Any, Any]) -> list[str]:
    """The approval child workflows an agent started (their ids), from Temporal's visibility."""
    return [execution.id async for execution in client.list_workflows(f"WorkflowId STARTS_WITH '{agent.id}.tool-'")]


async def pending(op: TestOP, binding_prefix: str, count: int = 1) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        requests = [r for r in op.requests("pending") if (r["binding_message"] or "").startswith(binding_prefix)]
        return requests if len(requests) >= count else None

    return await wait_for(found, what=f"{count} pending request(s) {binding_prefix!r}")


async def test_approve_runs_the_tool_once_with_the_approved_arguments(agents: Agents, op: TestOP) -> None:
    agent = await agents.start_maintenance(CHANGE)
    [request] = await pending(op, "Change payments-db in production")
    assert request["authorization_details"][0]["type"] == "production_change"
    op.approve(request["auth_req_id"])
    result = await agent.result()
    [outcome] = result.outcomes.values()
    assert outcome.status == "approved" and outcome.sub == "alice"
    [entry] = agents.ledger.entries()
    assert entry.arguments == CHANGE and entry.approved_by == "alice"
    assert "Applied to payments-db (production)" in result.reply

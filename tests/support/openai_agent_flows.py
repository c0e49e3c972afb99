"""The example OpenAI Agents SDK tool agents as the e2e tests drive them, and what they asked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle

from temporal_ciba_examples.openai_agents.maintenance import TOOL, MaintenanceBotWorkflow, MaintenanceInput
from temporal_ciba_examples.shared.scripted_model import ScriptedCall, ScriptedModel
from temporal_ciba_examples.shared.tool_agent import ToolAgentResult
from temporal_ciba_examples.shared.tool_ledger import ToolLedger
from tests.support.op import TestOP
from tests.support.temporal import wait_for


def production_change(**fields: str) -> dict[str, str]:
    """A change to a system of its own name, so its requests at the shared OP are told apart."""
    return {
        "system": f"db-{uuid.uuid4().hex[:8]}",
        "environment": "production",
        "change": "raise max_connections to 400",
        "window_start": "2026-11-29T02:00:00Z",
        "window_end": "2026-11-29T03:00:00Z",
        **fields,
    }


@dataclass
class Agents:
    client: Client
    task_queue: str
    model: ScriptedModel
    ledger: ToolLedger

    async def start(self, workflow_run: Any, agent_input: Any, prefix: str) -> WorkflowHandle[Any, ToolAgentResult]:
        return await self.client.start_workflow(
            workflow_run, agent_input, id=f"{prefix}-{uuid.uuid4().hex[:10]}", task_queue=self.task_queue
        )

    async def maintenance(self, *calls: dict[str, Any], **fields: Any) -> WorkflowHandle[Any, ToolAgentResult]:
        agent_input = MaintenanceInput(
            request="apply the change",
            tool_calls=[ScriptedCall(name=TOOL, arguments=arguments) for arguments in calls],
            approver="alice",
            **fields,
        )
        return await self.start(MaintenanceBotWorkflow.run, agent_input, "bot")


async def approvals_of(client: Client, workflow_id: str) -> list[str]:
    """The approval child workflows an agent started (their ids), from Temporal's visibility."""
    query = f"WorkflowId STARTS_WITH '{workflow_id}.tool-' AND WorkflowType = 'CibaApprovalWorkflow'"
    return sorted([execution.id async for execution in client.list_workflows(query)])


async def pending(op: TestOP, binding_prefix: str, count: int = 1) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        requests = [r for r in op.requests("pending") if (r["binding_message"] or "").startswith(binding_prefix)]
        return requests if len(requests) >= count else None

    return await wait_for(found, what=f"{count} pending request(s) {binding_prefix!r}")

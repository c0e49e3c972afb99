"""PydanticAI tools gated by CIBA, end to end.

The example payment agent (its scripted, offline FunctionModel calls `pay`) on the real dev server,
the real test OP playing the approver's phone, and the example payment API, which introspects the
token and records each payment."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, Plugin, WorkflowHandle
from temporalio.worker import Replayer, Worker

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.payment_agent.models import PaymentAction
from temporal_ciba_examples.pydantic_ai_payment.run import approval_id
from temporal_ciba_examples.pydantic_ai_payment.workflows import (
    PydanticAIPaymentAgentWorkflow,
)
from tests.support.flows import INVOICE, pending_auth_req_id
from tests.support.op import TestOP
from tests.support.pydantic_ai_agent_flows import (
    Agents,
    ExampleProcess,
    ciba,
    example_command,
    example_env,
)
from tests.support.pydantic_ai_agents import TAMPERED_AMOUNT, TamperingPaymentAgentWorkflow, TwicePaymentAgentWorkflow
from tests.support.stack import (
    PAYLOAD_KEY,
    TOKEN_KEY,
    payments,
)
from tests.support.temporal import DevServer


async def running_agents(server: DevServer, plugins: Sequence[Plugin], payment_api: str) -> AsyncIterator[Agents]:
    client = await Client.connect(server.address, plugins=list(plugins))
    await ensure_search_attributes(client)
    task_queue = f"pai-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=15.0) as http:
        payments = PaymentActivities(http, payment_api, TokenSealer(base64.b64decode(TOKEN_KEY)))
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[PydanticAIPaymentAgentWorkflow, TamperingPaymentAgentWorkflow, TwicePaymentAgentWorkflow],
            activities=[payments.pay_tool_call],
        ):
            yield Agents(client, task_queue)


@pytest.fixture
async def agents(temporal_server: DevServer, op: TestOP, payment_api: str) -> AsyncIterator[Agents]:
    async for running in running_agents(temporal_server, [PydanticAIPlugin(), ciba(op)], payment_api):
        yield running


async def approval_children(agent: WorkflowHandle[Any, Any]) -> int:
    """How many approvals the agent asked for: child workflows started in its history."""
    history = await agent.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED for e in history.events)


async def test_approve_runs_the_tool_once_with_the_approved_arguments(
    agents: Agents, op: TestOP, payment_api: str
) -> None:
    agent = await agents.start(expected_subject="alice")
    approval = agents.approval(agent)
    op.approve(await pending_auth_req_id(approval))

    result = await agent.result()
    outcome = await approval.result()
    assert outcome.approved and outcome.sub == "alice"
    [payment] = payments(payment_api, agent.id)
    assert result.answer == f"The payment tool answered: paid, payment id {payment['payment_id']}"
    assert PaymentAction.model_validate(payment["action"]) == INVOICE
    assert await approval_children(agent) == 1

    # The agent's history replays deterministically with the current workflow code.
    codec = CibaPlugin(payload_key=base64.b64decode(PAYLOAD_KEY))
    replayer = Replayer(workflows=[PydanticAIPaymentAgentWorkflow], plugins=[PydanticAIPlugin(), codec])
    await replayer.replay_workflow(await agents.client.get_workflow_handle(agent.id).fetch_history())


async def test_deny_never_runs_the_tool_and_the_model_reads_why(agents: Agents, op: TestOP, payment_api: str) -> None:
    agent = await agents.start()
    op.deny(await pending_auth_req_id(agents.approval(agent)))

    result = await agent.result()
    outcome = await agents.approval(agent).result()
    assert outcome.status == "denied"
    # The model's next request held the one line (the scripted model repeats what it read).
    assert (
        result.answer
        == "The payment tool answered: The pay call was not run: alice denied the request on their device."
    )
    assert "\n" not in result.answer
    assert payments(payment_api, agent.id) == []


async def test_expiry_never_runs_the_tool(agents: Agents, payment_api: str) -> None:
    agent = await agents.start(requested_expiry=2)

    result = await agent.result()
    assert (await agents.approval(agent).result()).status == "expired"
    assert result.answer == (
        "The payment tool answered: The pay call was not run: nobody approved it before the request expired."
    )
    assert payments(payment_api, agent.id) == []


async def test_two_equal_calls_in_one_turn_are_two_approvals(agents: Agents, op: TestOP, payment_api: str) -> None:
    agent = await agents.start(TwicePaymentAgentWorkflow)
    first, second = agents.approval(agent, "pay-1"), agents.approval(agent, "pay-2")
    # Both are asked at once (the second is pending before the first is decided), each its own.
    first_request, second_request = await pending_auth_req_id(first), await pending_auth_req_id(second)
    assert first_request != second_request
    op.approve(first_request)
    op.deny(second_request)

    result = await agent.result()
    [payment] = payments(payment_api, agent.id)
    assert result.answer == (
        f"paid, payment id {payment['payment_id']} | "
        "The pay call was not run: alice denied the request on their device."
    )
    assert await approval_children(agent) == 2


async def test_arguments_changed_after_approval_are_refused(agents: Agents, op: TestOP, payment_api: str) -> None:
    agent = await agents.start(TamperingPaymentAgentWorkflow)
    approval = agents.approval(agent)
    op.approve(await pending_auth_req_id(approval))

    result = await agent.result()
    assert (await approval.result()).approved  # the human approved INVOICE ...
    # ... and the tool, handed override_args with another amount, found no token for them; the
    # model reads the failure (ToolFailed) as PydanticAI shows it.
    assert result.answer == (
        'The payment tool answered: {"error":"The pay call was not run: the action differs from the one approved."}'
    )
    assert payments(payment_api, agent.id) == []
    history = (await agent.fetch_history()).events
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in history
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert [f.application_failure_info.type for f in failed] == ["GrantRefused"]
    assert TAMPERED_AMOUNT != INVOICE.amount


# --- The example's command line, as docs/guides/pydantic-ai.md runs it --------------------------------------


@pytest.fixture
def example(temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path) -> Any:
    """Runs the example's command (poll mode, or ping mode through the callback service)."""
    started: list[ExampleProcess] = []

    def run(workflow_id: str, mode: str = "poll") -> ExampleProcess:
        args = example_command("--workflow-id", workflow_id, "--task-queue", f"pai-cli-{tmp_path.name[-12:]}")
        env = example_env(temporal_server, op, payment_api, mode)
        process = ExampleProcess(args, env, tmp_path / "example.log")
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


@pytest.mark.parametrize("mode", ["poll", "ping"])
async def test_the_readme_command_pays_once_approved(
    example: Any, temporal_client: Client, op: TestOP, payment_api: str, mode: str
) -> None:
    workflow_id = f"pai-cli-{uuid.uuid4().hex[:8]}"
    process = example(workflow_id, mode)
    process.start()
    auth_req_id = await pending_auth_req_id(temporal_client.get_workflow_handle(approval_id(workflow_id, INVOICE)))
    op.approve(auth_req_id)
    assert process.wait() == 0
    if mode == "ping":  # the in-process worker's approval woke on the callback service's signal
        assert op.ping_answers(auth_req_id) == ["delivered"]
    output = process.log.read_text()
    [payment] = payments(payment_api, workflow_id)
    assert "approval: approved: approved by alice" in output
    assert f"model: The payment tool answered: paid, payment id {payment['payment_id']}" in output


async def test_worker_killed_while_the_approval_waits(
    example: Any, temporal_client: Client, op: TestOP, payment_api: str
) -> None:
    workflow_id = f"pai-crash-{uuid.uuid4().hex[:8]}"
    process = example(workflow_id)
    process.start()
    approval = temporal_client.get_workflow_handle(approval_id(workflow_id, INVOICE))
    auth_req_id = await pending_auth_req_id(approval)
    process.kill()  # the agent's only worker, SIGKILLed while the approval waits
    op.approve(auth_req_id)
    process.start()  # the same command: it attaches to the running workflow

    assert process.wait() == 0
    assert "approval: approved: approved by alice" in process.log.read_text()
    agent = temporal_client.get_workflow_handle(workflow_id)
    assert await approval_children(agent) == 1
    assert len(payments(payment_api, workflow_id)) == 1

"""The example PydanticAI payment agent as the e2e tests drive it.

In a worker of the test's own, or through the example's command line as its README runs it."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba.agents._tool_approval import approval_workflow_id
from temporal_ciba_examples.payment_agent.models import action_digest
from temporal_ciba_examples.pydantic_ai_payment.run import approval_id
from temporal_ciba_examples.pydantic_ai_payment.workflows import (
    PayerDeps,
    PydanticAIPaymentAgentWorkflow,
    PydanticAIPaymentInput,
    PydanticAIPaymentResult,
)
from tests.support.flows import INVOICE, pending_auth_req_id
from tests.support.op import TestOP
from tests.support.pydantic_ai_agents import TamperingPaymentAgentWorkflow, TwicePaymentAgentWorkflow
from tests.support.stack import (
    AGENT_CLIENT,
    PAYLOAD_KEY,
    PING_CLIENT,
    SECRET,
    TOKEN_KEY,
    agent_settings,
    clean_env,
    payments,
)
from tests.support.temporal import DevServer

Workflow = type[PydanticAIPaymentAgentWorkflow] | type[TamperingPaymentAgentWorkflow] | type[TwicePaymentAgentWorkflow]


class Agents:
    """A worker with the PydanticAI agents, and the client that starts them."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(
        self, workflow: Workflow = PydanticAIPaymentAgentWorkflow, **deps: Any
    ) -> WorkflowHandle[Any, PydanticAIPaymentResult]:
        agent_input = PydanticAIPaymentInput(action=INVOICE, deps=PayerDeps(approver="alice", **deps))
        return await self.client.start_workflow(
            workflow.run,
            agent_input,
            id=f"pai-{uuid.uuid4().hex[:10]}",
            task_queue=self.task_queue,
        )

    def approval(self, agent: WorkflowHandle[Any, Any], call_id: str = "pay-1") -> WorkflowHandle[Any, ApprovalOutcome]:
        workflow_id = approval_workflow_id(agent.id, call_id, action_digest(INVOICE))
        return self.client.get_workflow_handle(workflow_id, result_type=ApprovalOutcome)


def ciba(op: TestOP) -> CibaPlugin:
    return CibaPlugin(
        payload_key=base64.b64decode(PAYLOAD_KEY),
        token_key=base64.b64decode(TOKEN_KEY),
        op=agent_settings(op),
    )


def example_command(*args: str) -> list[str]:
    module = "temporal_ciba_examples.pydantic_ai_payment.run"
    return [sys.executable, "-m", module, "--approver", "alice", "--reference", INVOICE.reference, *args]


def example_env(server: DevServer, op: TestOP, payment_api: str, mode: str) -> dict[str, str]:
    return clean_env(
        TEMPORAL_ADDRESS=server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT if mode == "poll" else PING_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_DELIVERY_MODE=mode,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_PAYMENT_API_URL=payment_api,
    )


class ExampleProcess:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait(timeout=120)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


async def pay_with_the_example(
    client: Client, server: DevServer, op: TestOP, payment_api: str, log: Path, **settings: str
) -> dict[str, Any]:
    """Runs the command of docs/guides/pydantic-ai.md (poll mode, `settings` over the defaults) for an invoice of its
    own, approves, and returns the one payment once it has exited 0."""
    # Not INVOICE: the API pays each action once per client, and other tests paid that one.
    action = INVOICE.model_copy(update={"reference": f"INV-{uuid.uuid4().hex[:8]}"})
    workflow_id = f"pai-{uuid.uuid4().hex[:8]}"
    args = example_command("--workflow-id", workflow_id, "--task-queue", workflow_id, "--reference", action.reference)
    process = ExampleProcess(args, {**example_env(server, op, payment_api, "poll"), **settings}, log)
    process.start()
    try:
        op.approve(await pending_auth_req_id(client.get_workflow_handle(approval_id(workflow_id, action))))
        assert process.wait() == 0, log.read_text()
    finally:
        process.stop()
    [payment] = payments(payment_api, workflow_id)
    assert f"paid, payment id {payment['payment_id']}" in log.read_text()
    return payment

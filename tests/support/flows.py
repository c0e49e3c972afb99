"""The approval flows the e2e and security tests share.

The invoice the example agent pays, starting an agent or a bare approval, and waiting for an
approval to be pending at the OP."""

from __future__ import annotations

import uuid

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, ApprovalWorkflowInput
from temporal_ciba._settings import OPSettings, WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba_examples.payment_agent.models import PaymentAction, PaymentAgentInput, action_digest
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.support.op import TestOP
from tests.support.stack import running_worker
from tests.support.temporal import DevServer, wait_for

INVOICE = PaymentAction(
    amount="120.00",
    currency="EUR",
    creditor_name="ACME GmbH",
    creditor_iban="DE02 1001 0010 9307 1186 03",
    reference="INV-2026-118",
)


async def start_agent(client: Client, settings: WorkerSettings, **fields: object) -> WorkflowHandle:
    agent_input = PaymentAgentInput(action=INVOICE, approver="alice", **fields)  # type: ignore[arg-type]
    return await client.start_workflow(
        PaymentAgentWorkflow.run, agent_input, id=f"agent-{uuid.uuid4().hex[:10]}", task_queue=settings.task_queue
    )


# A plain request (no action, no payment) for alice.
ROTATE_KEYS = ApprovalRequest(login_hint="alice", binding_message="Rotate prod keys")


async def start_approval(client: Client, task_queue: str, request: ApprovalRequest) -> WorkflowHandle:
    """A bare approval (no agent), on a workflow id of its own."""
    return await client.start_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=request),
        id=f"approval-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


def approval_handle(client: Client, agent: WorkflowHandle) -> WorkflowHandle:
    return client.get_workflow_handle(f"{agent.id}.approval-{action_digest(INVOICE)[:16]}")


async def pending_auth_req_id(approval: WorkflowHandle) -> str:
    async def pending() -> str | None:
        try:
            state = await approval.query(CibaApprovalWorkflow.status)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # the agent has not started it yet
                return None
            raise
        return state.auth_req_id if state.status == "pending" else None

    return await wait_for(pending, what="the approval to be pending")


async def approve_one(
    client: Client, server: DevServer, op: TestOP, settings: OPSettings
) -> tuple[str, ApprovalOutcome]:
    """One approval of a plain request through a worker with `settings`, approved at `op` once pending.

    Its auth_req_id and outcome."""
    async with running_worker(server, settings, "http://127.0.0.1:9") as worker:
        handle = await start_approval(client, worker.task_queue, ROTATE_KEYS)
        auth_req_id = await pending_auth_req_id(handle)
        op.approve(auth_req_id)
        return auth_req_id, await handle.result()

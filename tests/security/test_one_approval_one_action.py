"""One approval opens one action, once.

Through the real worker, dev server, OP, callback and payment API:

- An operator who can read a finished agent's history (the payload key) schedules the payment
  activity on the worker's task queue from a workflow of their own, with the approved outcome
  and any idempotency key they like. The worker refuses: the token is sealed to the agent's run
  and action, and the key is derived from the caller's own context.
- A captured ping replayed 40 times (about 6 a second) makes the workflow ask the token
  endpoint no faster than the OP's interval (1 s in the test OP's acknowledgement).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba_examples.payment_agent.models import (
    ExecutePaymentInput,
    PaymentAction,
    PaymentAgentInput,
    PaymentAgentResult,
    action_digest,
)
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.support.callback import TOKENS, bearer, post
from tests.support.flows import INVOICE, pending_auth_req_id, start_approval
from tests.support.op import TestOP
from tests.support.stack import TlsFiles, payments
from tests.support.temporal import wait_for


class Replay(BaseModel):
    action: PaymentAction
    outcome: ApprovalOutcome
    victim_task_queue: str


@workflow.defn(sandboxed=False)
class AttackerWorkflow:
    """The attacker's own workflow, on their own task queue, calling the victim worker's activity."""

    @workflow.run
    async def run(self, replay: Replay) -> str:
        try:
            await workflow.execute_activity(
                "payments.execute_payment",
                ExecutePaymentInput(action=replay.action, outcome=replay.outcome),
                task_queue=replay.victim_task_queue,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as exc:
            cause = exc.cause
            return cause.type or "?" if isinstance(cause, ApplicationError) else repr(cause)
        return "paid"


async def approved_agent(
    client: Client, worker: WorkerSettings, op: TestOP, reference: str
) -> tuple[WorkflowHandle, PaymentAction, ApprovalOutcome]:
    action = INVOICE.model_copy(update={"reference": reference})
    agent = await client.start_workflow(
        PaymentAgentWorkflow.run,
        PaymentAgentInput(action=action, approver="alice"),
        id=f"agent-{uuid.uuid4().hex[:10]}",
        task_queue=worker.task_queue,
    )
    approval = client.get_workflow_handle(f"{agent.id}.approval-{action_digest(action)[:16]}")
    op.approve(await pending_auth_req_id(approval))
    result = await agent.result()
    assert isinstance(result, PaymentAgentResult) and result.receipt is not None
    return agent, action, result.outcome


async def test_an_approval_cannot_pay_again_from_another_workflow(
    temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    reference = f"INV-{uuid.uuid4().hex[:8]}"
    agent, action, outcome = await approved_agent(temporal_client, worker, op, reference)
    queue = f"attacker-{uuid.uuid4().hex[:6]}"
    replay = Replay(action=action, outcome=outcome, victim_task_queue=worker.task_queue)
    async with Worker(
        temporal_client, task_queue=queue, workflows=[AttackerWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        # From a workflow of their own, and from a new run under the agent's own (reused) id.
        for workflow_id in (f"attacker-{uuid.uuid4().hex[:6]}", agent.id):
            verdict = await temporal_client.execute_workflow(
                AttackerWorkflow.run, replay, id=workflow_id, task_queue=queue
            )
            assert verdict == "GrantRefused", workflow_id
    paid = [p for p in payments(payment_api, "") if reference in str(p["action"])]
    assert len(paid) == 1  # the agent's own payment, and no other


def no_activity_running(handle: WorkflowHandle) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not (await handle.describe()).raw_description.pending_activities

    return check


async def test_a_replayed_ping_cannot_outpace_the_interval(
    callback: str, tls: TlsFiles, temporal_client: Client, ping_worker: WorkerSettings, op: TestOP
) -> None:
    request = ApprovalRequest(login_hint="bob", binding_message="Rotate the prod keys")
    handle = await start_approval(temporal_client, ping_worker.task_queue, request)
    auth_req_id = await pending_auth_req_id(handle)
    assert handle.first_execution_run_id is not None
    ping = {"auth_req_id": auth_req_id}
    headers = bearer(TOKENS.issue(handle.id, handle.first_execution_run_id))
    try:
        started = time.monotonic()
        for _ in range(40):
            assert (await post(callback, tls, body=ping, headers=headers)).status_code == 204
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        # Every token request started so far has reached the OP once no activity is running.
        await wait_for(no_activity_running(handle), what="the last token request to finish")
        polls = op.token_requests(auth_req_id)
        times = sorted(float(p["at"]) for p in polls)
        # At most one request at once and one per interval after it, whatever 40 pings asked for.
        interval = (await handle.query(CibaApprovalWorkflow.status)).interval_seconds
        assert interval is not None
        gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(times)]
        assert 1 <= len(polls) <= 2 + int((elapsed + 1) / interval), gaps
        assert all(gap >= interval * 0.9 for gap in gaps), (interval, gaps)
    finally:
        await handle.cancel()

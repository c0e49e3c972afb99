"""Ping and push delivery end to end.

The OP notifies the callback service over HTTPS, the callback signals the waiting workflow, and the
approval resumes at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from temporal_ciba._models import ApprovalRequest, PingNotice, PollingPolicy, PushDelivery
from temporal_ciba._search_attributes import CIBA_STATUS
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from tests.support.flows import approval_handle, pending_auth_req_id, start_agent, start_approval
from tests.support.op import TestOP
from tests.support.push_op import PushOP
from tests.support.stack import SECRET, TlsFiles, agent_settings, payments, running_worker
from tests.support.temporal import DevServer, wait_for


async def test_ping_resumes_without_waiting_for_the_poll(
    temporal_client: Client, ping_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    agent = await start_agent(temporal_client, ping_worker)
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    decided_at = time.time()
    op.approve(auth_req_id)  # returns once the OP's ping has been answered
    result = await agent.result()
    assert result.outcome.status == "approved" and result.receipt is not None
    assert len(payments(payment_api, agent.id)) == 1
    assert op.ping_answers(auth_req_id) == ["delivered"]
    # The one token request followed the ping; the fallback poll (60 s) never ran.
    [token_request] = op.token_requests(auth_req_id)
    assert decided_at <= token_request["at"] < decided_at + 5


async def test_an_inline_approval_resumes_the_agent_in_its_own_workflow(
    temporal_client: Client, ping_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    agent = await start_agent(temporal_client, ping_worker, inline=True)
    auth_req_id = await pending_auth_req_id(agent)  # the agent answers the status query itself
    decided_at = time.time()
    op.approve(auth_req_id)
    result = await agent.result()
    assert result.outcome.status == "approved" and result.outcome.workflow_id == agent.id
    assert result.receipt is not None and len(payments(payment_api, agent.id)) == 1
    assert op.ping_answers(auth_req_id) == ["delivered"]
    [token_request] = op.token_requests(auth_req_id)
    assert decided_at <= token_request["at"] < decided_at + 5
    events = [event.event_type async for event in agent.fetch_history_events()]
    assert EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in events
    description = await agent.describe()
    assert description.typed_search_attributes.get(CIBA_STATUS) == "approved"


async def test_ping_deny(temporal_client: Client, ping_worker: WorkerSettings, op: TestOP, payment_api: str) -> None:
    agent = await start_agent(temporal_client, ping_worker)
    op.deny(await pending_auth_req_id(approval_handle(temporal_client, agent)))
    result = await agent.result()
    assert result.outcome.status == "denied" and result.receipt is None
    assert payments(payment_api, agent.id) == []


async def test_dropped_ping_falls_back_to_polling(
    temporal_client: Client, ping_worker: WorkerSettings, op: TestOP
) -> None:
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Scale the cluster to 40 nodes",
        polling=PollingPolicy(notification_fallback_interval_seconds=3),
    )
    handle = await start_approval(temporal_client, ping_worker.task_queue, request)
    auth_req_id = await pending_auth_req_id(handle)
    op.set_faults({"type": "drop_ping", "auth_req_id": auth_req_id})
    op.approve(auth_req_id)
    outcome = await handle.result()
    assert outcome.status == "approved"
    assert op.ping_answers(auth_req_id) == ["dropped"]
    assert len(op.token_requests(auth_req_id)) >= 1


# Push mode, against an OP of our own (oidc-provider has no push) ------------------------------

PUSH_CLIENT = "push-client"


@pytest.fixture(scope="module")
async def push_op(callback: str, tls: TlsFiles) -> AsyncIterator[PushOP]:
    op = PushOP(client_id=PUSH_CLIENT, client_secret=SECRET, notification_endpoint=callback, ca_path=str(tls.ca))
    await op.start()
    yield op
    await op.stop()


@pytest.fixture
async def push_worker(temporal_server: DevServer, push_op: PushOP, payment_api: str) -> AsyncIterator[WorkerSettings]:
    settings = agent_settings(push_op, client_id=PUSH_CLIENT, delivery_mode="push")  # type: ignore[arg-type]
    async with running_worker(temporal_server, settings, payment_api) as worker:
        yield worker


async def start_push_approval(client: Client, worker: WorkerSettings):  # type: ignore[no-untyped-def]
    request = ApprovalRequest(
        login_hint="alice", binding_message="Wire EUR 9,000 to supplier", expected_subject="alice"
    )
    handle = await start_approval(client, worker.task_queue, request)
    return handle, await pending_auth_req_id(handle)


async def test_push_approved(temporal_client: Client, push_worker: WorkerSettings, push_op: PushOP) -> None:
    handle, auth_req_id = await start_push_approval(temporal_client, push_worker)
    assert await push_op.push(auth_req_id) == 204
    outcome = await handle.result()
    assert outcome.status == "approved" and outcome.sub == "alice" and outcome.auth_time is not None
    assert push_op.token_endpoint_calls == 0  # push mode never polls


async def test_push_error_is_the_outcome(temporal_client: Client, push_worker: WorkerSettings, push_op: PushOP) -> None:
    handle, auth_req_id = await start_push_approval(temporal_client, push_worker)
    assert await push_op.push(auth_req_id, deny=True) == 204
    outcome = await handle.result()
    assert outcome.status == "denied" and outcome.error == "access_denied"


@pytest.mark.parametrize(
    "tamper,code",
    [
        ("auth_req_id_of_another_request", "auth_req_id_mismatch"),
        ("no_auth_req_id_claim", "auth_req_id_missing"),
        ("bad_at_hash", "at_hash_mismatch"),
        ("bad_rt_hash", "rt_hash_mismatch"),
    ],
)
async def test_push_with_tampered_tokens_is_rejected(
    temporal_client: Client, push_worker: WorkerSettings, push_op: PushOP, tamper: str, code: str
) -> None:
    handle, auth_req_id = await start_push_approval(temporal_client, push_worker)
    assert await push_op.push(auth_req_id, tamper=tamper) == 204  # the callback does not validate; the activity does
    outcome = await handle.result()
    assert outcome.status == "rejected" and outcome.error == code and outcome.sealed_access_token is None


async def test_push_with_the_wrong_bearer_changes_nothing(
    temporal_client: Client, push_worker: WorkerSettings, push_op: PushOP
) -> None:
    handle, auth_req_id = await start_push_approval(temporal_client, push_worker)
    events = len((await handle.fetch_history()).events)
    assert await push_op.push(auth_req_id, tamper="wrong_bearer") == 401
    assert len((await handle.fetch_history()).events) == events
    assert (await handle.query(CibaApprovalWorkflow.status)).status == "pending"
    assert await push_op.push(auth_req_id) == 204  # the real push still works afterwards
    assert (await handle.result()).status == "approved"


async def test_a_decision_racing_the_acknowledgement_still_pings(
    temporal_client: Client, ping_worker: WorkerSettings, op: TestOP
) -> None:
    # An automated approver can decide before the workflow has even recorded its auth_req_id;
    # the ping must still be accepted, not left to the 60 s fallback poll.
    op.set_faults({"type": "approve_at_once"})
    handle = await start_approval(
        temporal_client, ping_worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Approved at once")
    )
    outcome = await asyncio.wait_for(handle.result(), timeout=20)
    assert outcome.status == "approved"
    assert outcome.auth_req_id is not None
    assert op.ping_answers(outcome.auth_req_id) == ["delivered"]


async def test_a_denial_forged_with_only_the_payload_key_is_dropped_and_the_op_decides(
    temporal_client: Client, push_worker: WorkerSettings, push_op: PushOP
) -> None:
    """Whoever holds CIBA_PAYLOAD_KEY and may signal writes a PushDelivery that names the pending
    request, with or without a run chain or a made-up proof: each is dropped unproven, and the
    OP's real push decides."""
    handle, auth_req_id = await start_push_approval(temporal_client, push_worker)
    forged = [
        PushDelivery(auth_req_id=auth_req_id, error="access_denied"),  # as from an older callback
        PushDelivery(auth_req_id=auth_req_id, error="access_denied", first_run_id=handle.first_execution_run_id),
        PushDelivery(
            auth_req_id=auth_req_id,
            error="access_denied",
            first_run_id=handle.first_execution_run_id,
            proof="A" * 43,
        ),
    ]
    for delivery in forged:
        await handle.signal(CibaApprovalWorkflow.ciba_deliver, delivery)

    async def all_dropped() -> bool:
        return (await handle.query(CibaApprovalWorkflow.status)).dropped_notifications == len(forged)

    await wait_for(all_dropped, timeout=30, what="the forged pushes to be dropped")
    assert (await handle.query(CibaApprovalWorkflow.status)).status == "pending"
    assert await push_op.push(auth_req_id) == 204
    outcome = await handle.result()
    assert outcome.status == "approved" and outcome.sub == "alice", outcome.reason


async def test_a_ping_forged_with_only_the_payload_key_asks_the_op_nothing(
    temporal_client: Client, ping_worker: WorkerSettings, op: TestOP
) -> None:
    handle = await start_approval(
        temporal_client, ping_worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Forged ping")
    )
    auth_req_id = await pending_auth_req_id(handle)
    notice = PingNotice(auth_req_id=auth_req_id, first_run_id=handle.first_execution_run_id, proof="A" * 43)
    await handle.signal(CibaApprovalWorkflow.ciba_notify, notice)

    async def dropped() -> bool:
        return (await handle.query(CibaApprovalWorkflow.status)).dropped_notifications == 1

    await wait_for(dropped, timeout=30, what="the forged ping to be dropped")
    assert op.token_requests(auth_req_id) == []  # the forged ping made no token request
    op.approve(auth_req_id)
    assert (await handle.result()).status == "approved"
    assert len(op.token_requests(auth_req_id)) == 1  # the real ping's

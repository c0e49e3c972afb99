"""Crash safety with real processes: a worker killed with SIGKILL loses no approval and pays once."""

from __future__ import annotations

import asyncio
import base64
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from temporal_ciba._programs.connect import connect
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba._settings import WorkerSettings
from tests.support.dying_worker import EXIT_STATUS
from tests.support.flows import approval_handle, pending_auth_req_id, start_agent
from tests.support.holding_proxy import HoldingProxy
from tests.support.op import TestOP
from tests.support.records import stored_records
from tests.support.stack import (
    AGENT_CLIENT,
    PAYLOAD_KEY,
    PING_CLIENT,
    SECRET,
    TOKEN_KEY,
    agent_settings,
    clean_env,
    payments,
    running_worker,
)
from tests.support.temporal import DevServer, wait_for
from tests.support.worker_process import WorkerProcess


@pytest.fixture(params=["poll", "ping"])
def worker_process(
    request: pytest.FixtureRequest, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """The payment agent's worker in poll mode, or in ping mode (its pings go through the callback service)."""
    process = WorkerProcess(
        worker_env(temporal_server, op, payment_api, tmp_path, request.param), tmp_path / "worker.log"
    )
    process.start()
    yield process
    process.stop()


def worker_env(server: DevServer, op: TestOP, payment_api: str, directory: Path, mode: str) -> dict[str, str]:
    """The payment agent worker's settings in `mode` (poll, or ping through the callback service)."""
    return clean_env(
        TEMPORAL_ADDRESS=server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT if mode == "poll" else PING_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_DELIVERY_MODE=mode,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=f"crash-{directory.name}",
        CIBA_PAYMENT_API_URL=payment_api,
        CIBA_RECORD_DB=str(directory / "records.sqlite3"),
    )


def settings_of(process: WorkerProcess) -> WorkerSettings:
    return WorkerSettings(task_queue=process.env["CIBA_TASK_QUEUE"], payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)  # type: ignore[arg-type]


async def test_worker_killed_while_pending(
    temporal_client: Client, worker_process: WorkerProcess, op: TestOP, payment_api: str
) -> None:
    agent = await start_agent(temporal_client, settings_of(worker_process))
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    worker_process.kill()
    op.approve(auth_req_id)  # in ping mode the ping arrives now, while no worker runs
    worker_process.start()
    result = await agent.result()
    assert result.outcome.status == "approved" and result.receipt is not None
    # Killed before anything was paid: one payment, made once, by the restarted worker.
    assert len(payments(payment_api, agent.id)) == 1 and result.receipt.duplicate is False
    # ...and one decision record, of the approval that was paid.
    records = stored_records(Path(worker_process.env["CIBA_RECORD_DB"]))
    assert [(record.workflow_id, record.auth_req_id, record.status) for record in records] == [
        (approval_handle(temporal_client, agent).id, auth_req_id, "approved")
    ]
    if worker_process.env["CIBA_DELIVERY_MODE"] == "ping":
        # The ping was kept by Temporal and acted on once a worker was back, not at the fallback poll.
        assert op.ping_answers(auth_req_id) == ["delivered"]
        assert len(op.token_requests(auth_req_id)) == 1


async def test_worker_killed_right_after_paying(
    temporal_client: Client, worker_process: WorkerProcess, op: TestOP, payment_api: str
) -> None:
    # The window: the payment API has recorded the payment, the worker has not heard back. A
    # proxy in front of the API holds back its first answer, so the kill lands there for sure.
    async with HoldingProxy(payment_api) as proxy:
        worker_process.stop()
        worker_process.env["CIBA_PAYMENT_API_URL"] = proxy.url
        worker_process.start()
        agent = await start_agent(temporal_client, settings_of(worker_process))
        op.approve(await pending_auth_req_id(approval_handle(temporal_client, agent)))
        await asyncio.wait_for(proxy.held.wait(), timeout=60)
        assert len(payments(payment_api, agent.id)) == 1  # paid, and the worker does not know
        worker_process.kill()
        worker_process.start()
        result = await agent.result()
    assert result.outcome.status == "approved" and result.receipt is not None
    # The retry after the restart reached the API, which the idempotency key made a duplicate.
    assert [status for path, status in proxy.posts if path == "/payments"] == [201, 200]
    assert result.receipt.duplicate is True
    recorded = payments(payment_api, agent.id)
    assert len(recorded) == 1 and recorded[0]["payment_id"] == result.receipt.payment_id


async def test_dev_server_killed_and_restarted_mid_wait(op: TestOP, payment_api: str, tmp_path: Path) -> None:
    server = DevServer(tmp_path)
    server.start()
    try:
        client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=server.address)
        await ensure_search_attributes(client)
        async with running_worker(server, agent_settings(op), payment_api) as settings:
            agent = await start_agent(client, settings)
            auth_req_id = await pending_auth_req_id(approval_handle(client, agent))
            server.stop(kill=True)  # SIGKILL, then the same database file on the same port
            server.start()
            op.approve(auth_req_id)
            result = await agent.result()
        assert result.outcome.status == "approved" and result.receipt is not None
        assert len(payments(payment_api, agent.id)) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("worker_process", ["poll"], indirect=True)
async def test_a_worker_killed_while_polling_hands_on_its_pacing(
    temporal_client: Client, worker_process: WorkerProcess, op: TestOP
) -> None:
    """Poll mode polls in one activity: killed mid-wait, the next worker's attempt polls no sooner
    than the interval (grown by a slow_down) after the last request, and the approval goes on."""
    agent = await start_agent(temporal_client, settings_of(worker_process))
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    op.set_faults({"type": "slow_down", "auth_req_id": auth_req_id, "remaining": 1})  # interval 1 s -> 6 s

    async def requests_seen(count: int) -> bool:
        return len(op.token_requests(auth_req_id)) >= count

    await wait_for(lambda: requests_seen(2), timeout=60, what="a slow_down and the request after it")
    worker_process.kill()
    before = op.token_requests(auth_req_id)
    worker_process.start()
    await wait_for(lambda: requests_seen(len(before) + 1), timeout=90, what="a request from the restarted worker")
    op.approve(auth_req_id)
    result = await agent.result()
    assert result.outcome.status == "approved" and result.receipt is not None
    requests = op.token_requests(auth_req_id)
    assert [request["status"] for request in requests[:2]] == [400, 400]  # slow_down, then pending
    # The restarted worker's first request: no sooner than the 6 s interval after the last one
    # before the kill (the OP's clock reads their arrival).
    spacing = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(requests[1:])]
    gap = max(spacing)
    assert gap >= 6, spacing
    print(f"next token request {gap:.1f} s after the last one before the kill")


async def test_a_worker_killed_after_recording_a_decision_returns_the_decision_on_record(
    temporal_client: Client, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    """The worker dies after the redeem and the record write, before their workflow task completes.

    The next worker runs that task again. It finds the decision on record and asks the OP
    nothing: a second token request would meet invalid_grant, and oidc-provider then revokes the
    tokens it issued to the dead worker. The approval returns the decision on record: record and
    outcome agree, and the payment is made once, with the access token the first request got."""
    env = worker_env(temporal_server, op, payment_api, tmp_path, "ping")
    records = Path(env["CIBA_RECORD_DB"])
    dying = WorkerProcess(env, tmp_path / "dying.log", [sys.executable, "-m", "tests.support.dying_worker"])
    dying.start()
    try:
        agent = await start_agent(temporal_client, settings_of(dying))
        approval = approval_handle(temporal_client, agent)
        auth_req_id = await pending_auth_req_id(approval)
        op.approve(auth_req_id)
        assert dying.process is not None
        assert await asyncio.to_thread(dying.process.wait, 60) == EXIT_STATUS
    finally:
        dying.stop()
    on_record = [(record.workflow_id, record.auth_req_id, record.status) for record in stored_records(records)]
    assert on_record == [(approval.id, auth_req_id, "approved")]
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        result = await agent.result()
    finally:
        worker.stop()
    assert [request["status"] for request in op.token_requests(auth_req_id)] == [200]  # the dead worker's
    assert result.outcome.status == "approved" and result.outcome.auth_req_id == auth_req_id
    assert result.receipt is not None and len(payments(payment_api, agent.id)) == 1
    assert [(record.auth_req_id, record.status) for record in stored_records(records)] == [(auth_req_id, "approved")]

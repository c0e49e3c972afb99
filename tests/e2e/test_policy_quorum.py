"""The approval policy and the two-person rule end to end.

The real worker reading a policy file, the Temporal dev server, the oidc-provider OP playing alice's
and bob's phones, and the payment API introspecting tokens at the OP."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Replayer

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._settings import WorkerSettings
from temporal_ciba.ciba import CibaClient, ClientSecretBasic
from temporal_ciba_examples.payment_agent.models import (
    PaymentAction,
    PaymentAgentInput,
    PaymentAgentResult,
    action_digest,
)
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.support.cli import one_line
from tests.support.op import TestOP
from tests.support.records import stored_records
from tests.support.stack import (
    AGENT_CLIENT,
    PAYLOAD_KEY,
    PAYMENT_API_CLIENT,
    PING_CLIENT,
    SECRET,
    TOKEN_KEY,
    agent_settings,
    clean_env,
    cli_command,
    payments,
    running_worker,
)
from tests.support.temporal import DevServer, wait_for
from tests.support.worker_process import WorkerProcess

MFA = "urn:example:acr:mfa"
POLICY = f"""
[roles]
treasury = "bob"

[[rules]]
name = "small-payment"
action = "payment_initiation"
match = {{ "instructedAmount.amount" = {{ below = 100 }} }}
approval = "none"
reason = "payments under 100 need no approval"

[[rules]]
name = "medium-payment"
action = "payment_initiation"
match = {{ "instructedAmount.amount" = {{ at_most = 10000 }} }}
approval = "one"
approvers = ["owner"]
acr_values = "{MFA}"
binding_message = "Pay {{instructedAmount.currency}} {{instructedAmount.amount}}, code {{code}}"

[[rules]]
name = "large-payment"
action = "payment_initiation"
approval = "quorum"
approvers = ["owner", "treasury"]
requested_expiry = 300
"""


def write_policy(directory: Path) -> Path:
    path = directory / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def policy_worker(
    temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> AsyncIterator[WorkerSettings]:
    """A poll-mode worker with the policy file above."""
    async with running_worker(
        temporal_server, agent_settings(op), payment_api, policy_file=write_policy(tmp_path)
    ) as settings:
        yield settings


def invoice(amount: str) -> PaymentAction:
    return PaymentAction(
        amount=amount,
        currency="EUR",
        creditor_name="ACME GmbH",
        creditor_iban="DE02 1001 0010 9307 1186 03",
        reference=f"T-{uuid.uuid4().hex[:12]}",
    )


async def start(client: Client, task_queue: str, action: PaymentAction, **fields: Any) -> WorkflowHandle:
    agent_input = PaymentAgentInput(action=action, approver="alice", use_policy=True, **fields)
    return await client.start_workflow(
        PaymentAgentWorkflow.run, agent_input, id=f"policy-agent-{uuid.uuid4().hex[:10]}", task_queue=task_queue
    )


def requests_for(op: TestOP, action: PaymentAction) -> list[dict[str, Any]]:
    """The OP's backchannel requests for this payment (by its unique reference)."""
    return [
        r
        for r in op.requests()
        if r["authorization_details"]
        and r["authorization_details"][0].get("remittanceInformationUnstructured") == action.reference
    ]


async def pending_requests(op: TestOP, action: PaymentAction, count: int) -> dict[str, str]:
    """account -> auth_req_id, once `count` requests for this payment are pending."""

    def pending() -> dict[str, str] | None:
        found = [r for r in requests_for(op, action) if r["status"] == "pending"]
        return {r["account"]: r["auth_req_id"] for r in found} if len(found) == count else None

    return await wait_for(pending, what=f"{count} pending requests")


def access_token(op: TestOP, auth_req_id: str) -> str:
    return str(op.issued()[auth_req_id]["access_token"])


async def active_at_op(op: TestOP, token: str) -> bool:
    async with CibaClient(issuer=op.issuer, client_auth=ClientSecretBasic(PAYMENT_API_CLIENT, SECRET)) as rs:
        return (await rs.introspect(token)).get("active") is True


async def child_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(workflow_id).describe()).status


async def completed(client: Client, workflow_id: str) -> bool:
    return await child_status(client, workflow_id) == WorkflowExecutionStatus.COMPLETED


async def test_a_small_payment_passes_without_asking(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("99.99")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    result: PaymentAgentResult = await agent.result()
    outcome = result.outcome
    assert outcome.status == "approved"
    assert outcome.policy is not None and (outcome.policy.rule, outcome.policy.approval) == ("small-payment", "none")
    assert outcome.policy.reason == "payments under 100 need no approval"
    # Nobody was asked, and nothing in the outcome can pass for a person's approval.
    assert requests_for(op, action) == []
    assert (outcome.auth_req_id, outcome.sub, outcome.sealed_access_token, outcome.approvers) == (None,) * 4
    assert result.receipt is None and payments(payment_api, agent.id) == []
    # The decision not to ask is recorded, once, as what it is.
    [record] = [record for record in stored_records(policy_worker.record_db) if record.workflow_id == agent.id]
    assert (record.status, record.sub, record.auth_req_id) == ("approved", None, None)
    assert record.policy is not None and outcome.policy is not None
    assert record.policy.model_dump() == outcome.policy.model_dump()


async def test_a_medium_payment_steps_up_to_a_stronger_acr(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("500.00")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    asked = await pending_requests(op, action, 1)
    [request] = requests_for(op, action)
    # The rule's acr and binding message template, not the agent's own (it asked for no acr).
    assert request["acr_values"] == MFA and request["account"] == "alice"
    assert request["binding_message"].startswith("Pay EUR 500.00, code ")
    op.approve(asked["alice"])
    result: PaymentAgentResult = await agent.result()
    assert result.outcome.status == "approved" and result.outcome.acr == MFA
    assert result.outcome.policy is not None and result.outcome.policy.rule == "medium-payment"
    assert result.outcome.policy.acr_values == MFA
    assert result.receipt is not None and len(payments(payment_api, agent.id)) == 1
    # The approver's decision record says which rule asked, and why.
    [record] = [r for r in stored_records(policy_worker.record_db) if r.auth_req_id == asked["alice"]]
    assert record.policy is not None and result.outcome.policy is not None and record.status == "approved"
    assert record.policy.model_dump() == result.outcome.policy.model_dump()


async def test_a_weaker_acr_than_the_policy_asks_is_rejected(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("800.00")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    asked = await pending_requests(op, action, 1)
    op.approve(asked["alice"], acr="urn:example:acr:basic")
    result: PaymentAgentResult = await agent.result()
    assert result.outcome.status == "rejected" and result.receipt is None
    assert payments(payment_api, agent.id) == []


async def test_a_large_payment_needs_two_people(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("25000.00")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    asked = await pending_requests(op, action, 2)
    assert set(asked) == {"alice", "bob"}
    op.approve(asked["bob"])
    op.approve(asked["alice"])
    result: PaymentAgentResult = await agent.result()
    outcome = result.outcome
    assert outcome.status == "approved", outcome.reason
    assert outcome.policy is not None and (outcome.policy.approval, outcome.policy.quorum) == ("quorum", 2)
    assert outcome.policy.approvers == ["alice", "bob"]
    claims = {a.login_hint: a for a in outcome.approvers or []}
    assert {hint: (a.sub, a.status, a.counted) for hint, a in claims.items()} == {
        "alice": ("alice", "approved", True),
        "bob": ("bob", "approved", True),
    }
    # The outcome carries the owner's access token (the first approver in the policy's order);
    # bob's, which nobody will use, was revoked. One payment, made with alice's approval.
    assert outcome.auth_req_id == asked["alice"] and outcome.sub == "alice"
    assert result.receipt is not None and len(payments(payment_api, agent.id)) == 1
    assert not await active_at_op(op, access_token(op, asked["bob"]))
    # One deadline for both.
    deadlines = {r["expires_at"] // 10 for r in requests_for(op, action)}
    assert len(deadlines) == 1
    # The agent's history (the policy's local activity, both children) replays deterministically.
    replayer = Replayer(
        workflows=[PaymentAgentWorkflow], plugins=[CibaPlugin(payload_key=base64.b64decode(PAYLOAD_KEY))]
    )
    await replayer.replay_workflow(await agent.fetch_history())


async def test_cancelling_the_agent_cancels_every_approver(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("60000.00")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    await pending_requests(op, action, 2)
    run_id = agent.first_execution_run_id or agent.result_run_id
    children = [
        f"{agent.id}.approval-{action_digest(action)[:16]}.q-{run_id}.{index}-{hint}"
        for index, hint in enumerate(["alice", "bob"])
    ]
    await agent.cancel()
    result: PaymentAgentResult = await agent.result()
    assert result.outcome.status == "cancelled" and result.receipt is None
    assert [a.status for a in result.outcome.approvers or []] == ["cancelled", "cancelled"]
    for child in children:
        outcome = await temporal_client.get_workflow_handle(child, result_type=ApprovalOutcome).result()
        assert outcome.status == "cancelled"


async def test_the_same_person_approving_twice_is_not_a_quorum(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    """Treasury is alice too, under her e-mail address: two login hints, one `sub`."""
    action = invoice("30000.00")
    agent = await start(temporal_client, policy_worker.task_queue, action, parties={"treasury": "alice@example.com"})
    await wait_for(lambda: len([r for r in requests_for(op, action) if r["status"] == "pending"]) == 2)
    requests = requests_for(op, action)
    assert [r["account"] for r in requests] == ["alice", "alice"]
    for request in requests:
        op.approve(request["auth_req_id"])
    result: PaymentAgentResult = await agent.result()
    outcome = result.outcome
    assert (outcome.status, outcome.error) == ("rejected", "quorum_not_met"), outcome.reason
    assert [(a.sub, a.status, a.counted) for a in outcome.approvers or []] == [
        ("alice", "approved", True),
        ("alice", "approved", False),
    ]
    assert outcome.sealed_access_token is None and result.receipt is None
    assert payments(payment_api, agent.id) == []
    # Neither approval may be used: both access tokens were revoked.
    for request in requests:
        assert not await active_at_op(op, access_token(op, request["auth_req_id"]))


async def test_a_denial_ends_the_quorum_and_revokes_the_others_tokens(
    temporal_client: Client, policy_worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("40000.00")
    agent = await start(temporal_client, policy_worker.task_queue, action)
    asked = await pending_requests(op, action, 2)
    run_id = agent.first_execution_run_id or agent.result_run_id
    alice_child = f"{agent.id}.approval-{action_digest(action)[:16]}.q-{run_id}.0-alice"
    bob_child = f"{agent.id}.approval-{action_digest(action)[:16]}.q-{run_id}.1-bob"
    op.approve(asked["alice"])
    # Alice's approval has come back validated, with her access token, before bob decides.
    await wait_for(lambda: completed(temporal_client, alice_child), what="alice's approval to complete", timeout=60)
    assert await child_status(temporal_client, bob_child) == WorkflowExecutionStatus.RUNNING
    assert await active_at_op(op, access_token(op, asked["alice"]))
    op.deny(asked["bob"])
    result: PaymentAgentResult = await agent.result()
    outcome = result.outcome
    assert (outcome.status, outcome.error) == ("denied", "access_denied")
    assert outcome.reason == "bob denied the request on their device (quorum 2 of 2 not met)"
    assert result.receipt is None and payments(payment_api, agent.id) == []
    assert not await active_at_op(op, access_token(op, asked["alice"]))


async def test_a_worker_killed_mid_quorum_loses_and_duplicates_nothing(
    temporal_client: Client, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    """SIGKILL after alice's approval came back and while bob's is pending.

    Bob approves while no worker runs. The restarted worker finishes the quorum: no one asked twice,
    no token request repeated, one payment."""
    env = clean_env(
        TEMPORAL_ADDRESS=temporal_server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=f"quorum-crash-{tmp_path.name}",
        CIBA_PAYMENT_API_URL=payment_api,
        CIBA_POLICY_FILE=str(write_policy(tmp_path)),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        action = invoice("50000.00")
        agent = await start(temporal_client, env["CIBA_TASK_QUEUE"], action)
        asked = await pending_requests(op, action, 2)
        run_id = agent.first_execution_run_id or agent.result_run_id
        alice_child = f"{agent.id}.approval-{action_digest(action)[:16]}.q-{run_id}.0-alice"
        op.approve(asked["alice"])
        await wait_for(lambda: completed(temporal_client, alice_child), what="alice's approval", timeout=60)
        # The window: one approver's approval done, the quorum still waiting for the other.
        assert [r["status"] for r in requests_for(op, action) if r["account"] == "bob"] == ["pending"]
        worker.kill()
        op.approve(asked["bob"])
        worker.start()
        result: PaymentAgentResult = await agent.result()
    finally:
        worker.stop()
    assert result.outcome.status == "approved", result.outcome.reason
    assert {a.sub for a in result.outcome.approvers or [] if a.counted} == {"alice", "bob"}
    # Nothing lost, nothing duplicated: two requests in all, each redeemed once, one payment.
    assert sorted(r["account"] for r in requests_for(op, action)) == ["alice", "bob"]
    for auth_req_id in asked.values():
        assert [t["status"] for t in op.token_requests(auth_req_id)].count(200) == 1
    recorded = payments(payment_api, agent.id)
    assert len(recorded) == 1 and result.receipt is not None and recorded[0]["payment_id"] == result.receipt.payment_id


async def test_an_operators_edit_applies_to_the_next_decision(
    temporal_client: Client, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    """The worker reads the policy file again when it changed, without a restart.

    A decision taken before the edit stays as its workflow's history recorded it."""
    path = write_policy(tmp_path)
    async with running_worker(temporal_server, agent_settings(op), payment_api, policy_file=path) as settings:
        before = invoice("150.00")
        first = await start(temporal_client, settings.task_queue, before)
        asked = await pending_requests(op, before, 1)
        path.write_text(POLICY.replace("below = 100 }", "below = 1000 }"))
        os.utime(path, ns=(1, 1))  # a new stamp even within the file system's clock resolution
        after = invoice("150.00")
        second: PaymentAgentResult = await (await start(temporal_client, settings.task_queue, after)).result()
        op.approve(asked["alice"])
        first_result: PaymentAgentResult = await first.result()
    assert second.outcome.policy is not None and second.outcome.policy.rule == "small-payment"
    assert requests_for(op, after) == []
    assert first_result.outcome.status == "approved"
    assert first_result.outcome.policy is not None and first_result.outcome.policy.rule == "medium-payment"


async def test_a_worker_without_a_policy_file_asks_nobody(
    temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    action = invoice("20.00")
    result: PaymentAgentResult = await (await start(temporal_client, worker.task_queue, action)).result()
    assert (result.outcome.status, result.outcome.error) == ("error", "policy_error")
    assert result.outcome.reason == "the worker has no approval policy (CIBA_POLICY_FILE)"
    assert requests_for(op, action) == [] and result.receipt is None


def test_a_malformed_policy_file_stops_the_worker_at_start(temporal_server: DevServer, tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.replace('approvers = ["owner", "treasury"]', 'approvers = ["owner"]'))
    env = clean_env(
        TEMPORAL_ADDRESS=temporal_server.address,
        CIBA_ISSUER="http://127.0.0.1:9",
        CIBA_CLIENT_ID="agent",
        CIBA_CLIENT_SECRET="unused-secret",
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_POLICY_FILE=str(path),
    )
    done = subprocess.run(cli_command("worker"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"temporal-ciba worker: policy file {path}: rules[2] (large-payment): "
        "approval 'quorum' takes at least two different approvers"
    )


async def test_a_quorum_in_ping_mode_pins_only_the_person_the_caller_named(
    temporal_client: Client, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    """Each approver's child is woken by its own ping.

    The agent's expected_subject (alice) pins alice's approval, not bob's, who is the policy's
    choice."""
    ping = agent_settings(op, client_id=PING_CLIENT, delivery_mode="ping")
    async with running_worker(temporal_server, ping, payment_api, policy_file=write_policy(tmp_path)) as settings:
        action = invoice("70000.00")
        agent = await start(temporal_client, settings.task_queue, action, expected_subject="alice")
        asked = await pending_requests(op, action, 2)
        op.approve(asked["alice"])
        op.approve(asked["bob"])
        result: PaymentAgentResult = await agent.result()
    assert result.outcome.status == "approved", result.outcome.reason
    assert result.receipt is not None and len(payments(payment_api, agent.id)) == 1
    for account, auth_req_id in asked.items():
        assert [p["status"] for p in op.pings(auth_req_id)] == ["delivered"], account
    run_id = agent.first_execution_run_id or agent.result_run_id
    pinned = {}
    for index, hint in enumerate(["alice", "bob"]):
        child_id = f"{agent.id}.approval-{action_digest(action)[:16]}.q-{run_id}.{index}-{hint}"
        child = await temporal_client.get_workflow_handle(child_id, result_type=ApprovalOutcome).result()
        pinned[hint] = child.subject_pinned
    assert pinned == {"alice": True, "bob": False}
    assert result.outcome.subject_pinned is False  # not every counted approver was pinned

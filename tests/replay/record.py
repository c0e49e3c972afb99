"""Record the histories the replay tests replay: `.venv/bin/python -m tests.replay.record`.

Each path runs on the time-skipping test server with scripted activities registered under the
real activity names (tests.support.scripted_op, as the workflow tests use them), so recording
takes seconds and needs no OP. Payloads are encrypted with the codec under the committed
test-only KEY. Every history named in cases.RECORDED is rewritten (those in cases.KEPT are left
alone), and files named in neither are deleted; re-record only on purpose (see test_replay.py).
Names given as arguments (`python -m tests.replay.record NAME ...`) rewrite only those histories.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.service import ServiceClient
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    ApprovalWorkflowInput,
    PingNotice,
    PollingPolicy,
    PushDelivery,
    TokenRequestResult,
)
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._workflow import NOTIFY_SIGNAL, CibaApprovalWorkflow
from temporal_ciba.agents import ApprovedToolCall, ToolApproval, ToolArguments
from temporal_ciba.mcp import CALL_UPSTREAM, McpClient, McpToolCallInput, McpToolCallWorkflow
from temporal_ciba_examples.payment_agent.models import ExecutePaymentInput, PaymentAgentInput, PaymentReceipt
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.replay.cases import (
    ACTION,
    CONTINUE_AS_NEW_ID,
    HISTORIES,
    HISTORY_DIR,
    KEY,
    MCP_TOOL_CALL_ID,
    PAYMENT_AGENT_ID,
    PAYMENT_AGENT_INLINE_ID,
    PAYMENT_APPROVAL_ID,
    RECORDED,
    WORKFLOWS,
)
from tests.support.scripted_op import FORGED_PROOF, ScriptedOP, wait_for_event, wait_pending
from tests.support.temporal import time_skipping_environment

IDENTITY = "replay-recorder"
AUTH_REQ_ID = "req-1"
PENDING = TokenRequestResult(kind="pending")
GRANTED = TokenRequestResult(kind="granted", sealed_tokens="sealed-tokens")
FORGED = TokenRequestResult(kind="granted", sealed_tokens="forged")
UPSERT = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES


@activity.defn(name="payments.execute_payment")
async def execute_payment(input: ExecutePaymentInput) -> PaymentReceipt:
    """The example agent's payment, answered without a payment API."""
    return PaymentReceipt(payment_id="pay_1", idempotency_key="recorded-key")


Scenario = Callable[[Client, ScriptedOP, str], Awaitable[list[tuple[str, WorkflowHandle[Any, Any]]]]]


def request(**options: Any) -> ApprovalWorkflowInput:
    return ApprovalWorkflowInput(request=ApprovalRequest(login_hint="alice", binding_message="Approve it", **options))


async def start(client: Client, name: str, task_queue: str, **options: Any) -> WorkflowHandle[Any, ApprovalOutcome]:
    return await client.start_workflow(
        CibaApprovalWorkflow.run, request(**options), id=HISTORIES[name], task_queue=task_queue
    )


def expect(outcome: ApprovalOutcome, status: str) -> None:
    if outcome.status != status:
        raise AssertionError(f"{outcome.workflow_id}: {outcome.status} ({outcome.reason}), expected {status}")


# The paths -------------------------------------------------------------------------------------


async def simple(name: str, status: str, client: Client, task_queue: str, **options: Any) -> list[tuple[str, Any]]:
    handle = await start(client, name, task_queue, **options)
    expect(await handle.result(), status)
    return [(name, handle)]


async def poll_approved(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers = [PENDING, TokenRequestResult(kind="slow_down"), PENDING, GRANTED]
    return await simple("poll_approved", "approved", client, task_queue)


async def poll_activity_approved(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.poll_activity = True  # the send says so: the token requests run in one activity, ciba.poll
    op.answers = [PENDING, TokenRequestResult(kind="slow_down"), PENDING, GRANTED]
    return await simple("poll_activity_approved", "approved", client, task_queue)


async def rejected(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers = [PENDING, FORGED]
    found = await simple("rejected", "rejected", client, task_queue)
    assert op.revoked == ["forged"], op.revoked
    return found


async def denied(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers = [PENDING, TokenRequestResult(kind="failed", error="access_denied", reason="the user said no")]
    return await simple("denied", "denied", client, task_queue)


async def refused(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.send_error = "unknown_user_id"
    return await simple("refused", "error", client, task_queue)


async def push_expired(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.mode = "push"
    return await simple("push_expired", "expired", client, task_queue)


async def ping_approved(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.mode, op.answers = "ping", [GRANTED]
    handle = await start(client, "ping_approved", task_queue)
    await wait_pending(handle)
    await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id="another-request"))
    await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id=AUTH_REQ_ID))
    expect(await handle.result(), "approved")
    return [("ping_approved", handle)]


async def ping_retry_after(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    come_back = TokenRequestResult(kind="retry_later", retry_after_seconds=8)
    op.mode, op.answers = "ping", [come_back, come_back, GRANTED]
    handle = await start(client, "ping_retry_after", task_queue)
    await wait_pending(handle)
    await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id=AUTH_REQ_ID))
    expect(await handle.result(), "approved")
    return [("ping_retry_after", handle)]


async def push_delivered(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.mode = "push"
    handle = await start(client, "push_delivered", task_queue)
    await wait_pending(handle)
    await handle.signal(CibaApprovalWorkflow.deliver, PushDelivery(auth_req_id="another", error="access_denied"))
    await handle.signal(CibaApprovalWorkflow.deliver, PushDelivery(auth_req_id=AUTH_REQ_ID, sealed_tokens="pushed"))
    expect(await handle.result(), "approved")
    return [("push_delivered", handle)]


async def cancelled_pending(
    client: Client, op: ScriptedOP, task_queue: str, env: WorkflowEnvironment
) -> list[tuple[str, Any]]:
    handle = await start(client, "cancelled_pending", task_queue)
    await wait_pending(handle)
    await env.sleep(timedelta(seconds=7))  # one pending poll at 5 s; now waiting for the next
    await asyncio.wait_for(op.poll_started.wait(), timeout=30)
    await asyncio.sleep(0.5)  # let the poll's result reach the workflow
    await handle.cancel()
    expect(await handle.result(), "cancelled")
    return [("cancelled_pending", handle)]


async def cancelled_token_in_flight(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers, op.blocking = [GRANTED], True
    handle = await start(client, "cancelled_token_in_flight", task_queue)
    await asyncio.wait_for(op.poll_started.wait(), timeout=30)
    await handle.cancel()
    await asyncio.sleep(0.5)
    op.block_next_poll.set()  # the token request in flight brings tokens after the cancellation
    expect(await handle.result(), "cancelled")
    return [("cancelled_token_in_flight", handle)]


async def continue_as_new(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    # A long wait: 5 s polls, slowed by a slow_down, 30 s after the first 30 s; a new run every
    # 10 polls (the least PollingPolicy allows), so run 1 ends in continue-as-new after 10 polls
    # and run 2 resumes the pending request and is approved on its second poll.
    op.answers = [PENDING, TokenRequestResult(kind="slow_down")] + [PENDING] * 9 + [GRANTED]
    polling = PollingPolicy(long_wait_after_seconds=30, long_wait_interval_seconds=30, polls_per_run=10)
    handle = await start(client, "continue_as_new.run1", task_queue, polling=polling)
    expect(await handle.result(), "approved")
    assert handle.first_execution_run_id is not None
    runs: list[tuple[str, Any]] = []
    run_id: str | None = handle.first_execution_run_id
    while run_id is not None:
        run = client.get_workflow_handle(CONTINUE_AS_NEW_ID, run_id=run_id)
        runs.append((f"continue_as_new.run{len(runs) + 1}", run))
        last = (await run.fetch_history()).events[-1]
        run_id = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    assert len(runs) == 2, f"{len(runs)} runs, expected 2"
    return runs


async def undecodable_ping_dropped(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    """A plaintext ciba.notify (what `temporal workflow signal` sends without the key), dropped; then the ping."""
    op.mode, op.answers = "ping", [GRANTED]
    handle = await start(client, "undecodable_ping_dropped", task_queue)
    await wait_pending(handle)
    plain = Client(**{**client.config(), "data_converter": DataConverter.default})
    await plain.get_workflow_handle(handle.id).signal(NOTIFY_SIGNAL, {"auth_req_id": AUTH_REQ_ID})
    await handle.signal(CibaApprovalWorkflow.notify, PingNotice(auth_req_id=AUTH_REQ_ID))
    expect(await handle.result(), "approved")
    return [("undecodable_ping_dropped", handle)]


async def push_unproven_dropped(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    """A denial without the callback's proof (what the payload key alone can signal), dropped; then the push."""
    op.mode = "push"
    handle = await start(client, "push_unproven_dropped", task_queue)
    await wait_pending(handle)
    forged = PushDelivery(auth_req_id=AUTH_REQ_ID, error="access_denied", proof=FORGED_PROOF)
    await handle.signal(CibaApprovalWorkflow.ciba_deliver, forged)
    await handle.signal(
        CibaApprovalWorkflow.ciba_deliver, PushDelivery(auth_req_id=AUTH_REQ_ID, sealed_tokens="pushed")
    )
    expect(await handle.result(), "approved")
    return [("push_unproven_dropped", handle)]


async def payment_agent(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers = [PENDING, GRANTED]
    handle = await client.start_workflow(
        PaymentAgentWorkflow.run,
        PaymentAgentInput(action=ACTION, approver="alice"),
        id=PAYMENT_AGENT_ID,
        task_queue=task_queue,
    )
    result = await handle.result()
    expect(result.outcome, "approved")
    assert result.receipt is not None and result.outcome.workflow_id == PAYMENT_APPROVAL_ID
    return [("payment_agent", handle), ("payment_agent.approval", client.get_workflow_handle(PAYMENT_APPROVAL_ID))]


async def payment_agent_inline(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.mode, op.answers = "ping", [GRANTED]
    handle = await client.start_workflow(
        PaymentAgentWorkflow.run,
        PaymentAgentInput(action=ACTION, approver="alice", inline=True),
        id=PAYMENT_AGENT_INLINE_ID,
        task_queue=task_queue,
    )
    # Pending once the agent has upserted the search attributes (the query handler it
    # registers does not exist before its first task).
    await wait_for_event(handle, UPSERT)
    assert handle.first_execution_run_id is not None
    await handle.signal(NOTIFY_SIGNAL, PingNotice(auth_req_id=AUTH_REQ_ID, first_run_id=handle.first_execution_run_id))
    result = await handle.result()
    expect(result.outcome, "approved")
    assert result.receipt is not None and result.outcome.workflow_id == PAYMENT_AGENT_INLINE_ID
    return [("payment_agent_inline", handle)]


@activity.defn(name=CALL_UPSTREAM)
async def call_upstream(call: ApprovedToolCall) -> dict[str, Any]:
    """The upstream MCP tool, answered without an upstream server."""
    return {"content": [{"type": "text", "text": f"appended {call.arguments['line']}"}], "isError": False}


async def mcp_tool_call(client: Client, op: ScriptedOP, task_queue: str) -> list[tuple[str, Any]]:
    op.answers = [PENDING, GRANTED]
    arguments = ToolArguments({"line": "hello"}, tool_name="append_line", call_id="call-1")
    call = McpToolCallInput(
        tool_name="append_line",
        call_id="call-1",
        arguments=dict(arguments),
        client=McpClient(subject="alice", client_id="agent-app", issuer="https://login.example"),
        request=ToolApproval(login_hint="alice").request_for(arguments),
    )
    handle = await client.start_workflow(McpToolCallWorkflow.run, call, id=MCP_TOOL_CALL_ID, task_queue=task_queue)
    result = await handle.result()
    assert result.outcome is not None
    expect(result.outcome, "approved")
    assert result.result is not None and result.refusal is None
    return [
        ("mcp_tool_call", handle),
        ("mcp_tool_call.approval", client.get_workflow_handle(f"{MCP_TOOL_CALL_ID}.approval")),
    ]


async def record_all(only: set[str] | None = None) -> dict[str, int]:
    written: dict[str, int] = {}
    async with time_skipping_environment(KEY) as env:
        # The time-skipping client under a fixed identity, so no host name or pid is committed.
        connect = dataclasses.replace(env.client.service_client.config, identity=IDENTITY)
        config = env.client.config()
        config["service_client"] = await ServiceClient.connect(connect)
        client = Client(**config)
        scenarios: list[Scenario] = [
            poll_approved,
            poll_activity_approved,
            ping_approved,
            push_delivered,
            lambda client, op, task_queue: cancelled_pending(client, op, task_queue, env),
            cancelled_token_in_flight,
            rejected,
            denied,
            refused,
            push_expired,
            continue_as_new,
            payment_agent,
            payment_agent_inline,
            mcp_tool_call,
            undecodable_ping_dropped,
            push_unproven_dropped,
            ping_retry_after,
        ]
        for index, scenario in enumerate(scenarios):
            op = ScriptedOP(env, [])
            # The sends say nothing of decision records (SendRequestResult.records' default), as
            # in every committed history.
            op.records = False
            # ...nor of the poll activity (SendRequestResult.poll_activity's default), but where
            # the scenario says so.
            op.poll_activity = False
            task_queue = f"replay-record-{index}"
            worker = Worker(
                client,
                task_queue=task_queue,
                identity=IDENTITY,
                workflows=WORKFLOWS,
                activities=[*op.activities, execute_payment, call_upstream],
                plugins=[CibaPlugin(payload_key=KEY)],  # the sandbox passthrough production uses
                # The poll activity sleeps in skipped time: each heartbeat reaches the server at once.
                max_heartbeat_throttle_interval=timedelta(0),
            )
            async with worker:
                for name, handle in await scenario(client, op, task_queue):
                    if only is not None and name not in only:
                        continue
                    history = await handle.fetch_history()
                    # Compact JSON: the same content as to_json(), a third of the size.
                    text = json.dumps(json.loads(history.to_json()), separators=(",", ":")) + "\n"
                    (HISTORY_DIR / f"{name}.json").write_text(text)
                    written[name] = len(history.events)
    missing = (only if only is not None else set(RECORDED)) - set(written)
    if missing:
        raise AssertionError(f"not recorded: {sorted(missing)}")
    return written


def main() -> None:
    only = set(sys.argv[1:]) or None
    if only is not None and not only <= set(RECORDED):
        raise SystemExit(f"not in cases.RECORDED: {sorted(only - set(RECORDED))}")
    HISTORY_DIR.mkdir(parents=True, exist_ok=True)
    for stale in HISTORY_DIR.glob("*.json"):
        if stale.stem not in HISTORIES:
            stale.unlink()
    written = asyncio.run(record_all(only))
    for name, events in written.items():
        size = (HISTORY_DIR / f"{name}.json").stat().st_size
        print(f"{name:28} {events:4} events {size:8,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()

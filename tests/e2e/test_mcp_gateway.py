"""The MCP gateway end to end: the official MCP client, real gateway processes, the OP, Temporal.

The gateway fronts an upstream MCP server whose `append_line` tool appends to a ledger; every
test writes a line of its own, so the ledger says whether, how often and with what the upstream
was called. Two HTTP replicas share one task queue (and run its worker); clients authenticate
with access tokens of a local issuer, and the gateway asks the client's own subject to approve.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents import refusal_for_model, short_code, tool_action_digest
from temporal_ciba.mcp import CALL_ID_META, McpClient, McpToolCallResult, mcp_call_workflow_id
from temporal_ciba_examples.mcp_gateway.openai_agents_client import maintenance_mcp_server
from temporal_ciba_examples.shared.tool_ledger import ToolLedger
from tests.support.mcp_gateway import (
    AccessTokenIssuer,
    HttpGateway,
    access_token_issuer,
    http_session,
    maintenance_sample_session,
    new_task_queue,
    start_http_gateway,
    stdio_session,
)
from tests.support.mcp_upstream import ledger_lines
from tests.support.op import TestOP
from tests.support.stack import PAYLOAD_KEY
from tests.support.temporal import DevServer, wait_for

pytestmark = pytest.mark.timeout(180)
TOOL = "append_line"


class Stack:
    def __init__(self, issuer: AccessTokenIssuer, ledger: Path, task_queue: str, directory: Path) -> None:
        self.issuer, self.ledger, self.task_queue, self.directory = issuer, ledger, task_queue, directory
        self.replicas: list[HttpGateway] = []


@pytest.fixture(scope="module")
def issuer() -> Iterator[AccessTokenIssuer]:
    with access_token_issuer() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    temporal_server: DevServer, op: TestOP, issuer: AccessTokenIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Two gateway replicas behind the same task queue, started at once."""
    directory = tmp_path_factory.mktemp("mcp-gateway")
    stack = Stack(issuer, directory / "ledger.txt", new_task_queue(), directory)
    try:
        for _ in range(2):
            stack.replicas.append(
                start_http_gateway(temporal_server, op, issuer, stack.ledger, stack.task_queue, directory)
            )
        yield stack
    finally:
        for replica in stack.replicas:
            replica.stop()


def a_line() -> str:
    return f"line-{uuid.uuid4().hex[:12]}"


async def pending_request(op: TestOP, line: str, account: str = "alice") -> dict[str, Any]:
    code = short_code(tool_action_digest(TOOL, {"line": line}))

    def find() -> dict[str, Any] | None:
        return next(
            (r for r in op.requests("pending") if r["account"] == account and code in (r["binding_message"] or "")),
            None,
        )

    found: dict[str, Any] = await wait_for(find, what=f"the approval of {line} to be pending", timeout=60)
    return found


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def call_id_of(line: str) -> str:
    """The call id the tests' client gives a call: not the line (ids are plaintext in history)."""
    return "call-" + hashlib.sha256(line.encode()).hexdigest()[:16]


def call_meta(line: str) -> dict[str, Any]:
    return {CALL_ID_META: call_id_of(line)}


async def raw_history_bytes(server: DevServer, workflow_ids: list[str]) -> bytes:
    """The histories as the server stores them: read with a client without the payload codec."""
    raw = await Client.connect(server.address)
    blobs = []
    for workflow_id in workflow_ids:
        history = await raw.get_workflow_handle(workflow_id).fetch_history()
        blobs.append(history.to_json().encode())
    return b"".join(blobs)


def alice_session(stack: Stack, token: str | None = None) -> Any:
    """The official client on the first replica, as alice (anyio's scopes stay in the test's task)."""
    return http_session(stack.replicas[0].url, token or stack.issuer.token("alice"))


async def test_lists_the_upstream_tools_and_passes_through_an_ungated_call_without_a_workflow(
    stack: Stack, temporal_client: Client
) -> None:
    async with alice_session(stack) as session:
        listed = await session.list_tools()
        assert [tool.name for tool in listed.tools] == ["append_line", "read_ledger"]
        assert listed.tools[0].input_schema["properties"]["line"]["type"] == "string"
        query = f"TaskQueue = '{stack.task_queue}'"
        before = (await temporal_client.count_workflows(query)).count
        result = await session.call_tool("read_ledger", {}, meta=call_meta("read"))
        assert not result.is_error
        assert (await temporal_client.count_workflows(query)).count == before
        # The id a gated call would have had names no workflow (read by id: no visibility lag).
        alice = McpClient(subject="alice", client_id="agent-app", issuer=stack.issuer.url)
        would_be = mcp_call_workflow_id(alice, call_id_of("read"), tool_action_digest("read_ledger", {}))
        with pytest.raises(RPCError) as missing:
            await temporal_client.get_workflow_handle(would_be).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND


async def test_an_approved_call_reaches_the_upstream_once_with_the_approved_arguments(
    stack: Stack, op: TestOP, temporal_server: DevServer
) -> None:
    bearer = stack.issuer.token("alice")
    async with alice_session(stack, bearer) as session:
        line = a_line()
        progress: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        call = asyncio.ensure_future(
            session.call_tool(TOOL, {"line": line}, progress_callback=on_progress, meta=call_meta(line))
        )
        request = await pending_request(op, line)
        await wait_for(lambda: progress, what="a progress notification")
        assert line not in ledger_lines(stack.ledger)  # nothing reached the upstream before the decision
        code = short_code(tool_action_digest(TOOL, {"line": line}))
        assert progress[0].startswith(f"waiting for alice to approve on their device, code {code}")
        op.approve(request["auth_req_id"])
        result = await call
        assert not result.is_error and "appended" in text_of(result)
        assert ledger_lines(stack.ledger).count(line) == 1
        # Neither the arguments nor the result nor a token is in the raw history.
        workflow_id = mcp_call_workflow_id(
            McpClient(subject="alice", client_id="agent-app", issuer=stack.issuer.url),
            call_id_of(line),
            tool_action_digest(TOOL, {"line": line}),
        )
        raw = await raw_history_bytes(temporal_server, [workflow_id, workflow_id + ".approval"])
        assert raw and line.encode() not in raw and b"appended" not in raw
        tokens = [bearer] + [
            str(response[kind])
            for response in op.issued().values()
            for kind in ("access_token", "id_token")
            if response.get(kind)
        ]
        assert len(tokens) > 1 and not [token for token in tokens if token.encode() in raw]


@pytest.mark.parametrize("decision", ["deny", "wrong person"])
async def test_a_refused_call_never_reaches_the_upstream_and_the_client_reads_why(
    stack: Stack, op: TestOP, decision: str
) -> None:
    async with alice_session(stack) as session:
        line = a_line()
        call = asyncio.ensure_future(session.call_tool(TOOL, {"line": line}, meta=call_meta(line)))
        request = await pending_request(op, line)
        if decision == "deny":
            op.deny(request["auth_req_id"])
        else:
            op.approve(request["auth_req_id"], as_account="bob")
        result = await call
        assert result.is_error
        # The refusal_for_model line: the end-user said no, or the approval failed validation.
        why = "denied the request" if decision == "deny" else "failed validation"
        assert text_of(result).startswith(f"The {TOOL} call was not run: ")
        assert why in text_of(result), text_of(result)
        assert line not in ledger_lines(stack.ledger)


async def test_a_client_that_cancels_ends_the_approval_as_cancelled(
    stack: Stack, op: TestOP, temporal_client: Client
) -> None:
    line = a_line()
    async with alice_session(stack) as session:
        call = asyncio.ensure_future(session.call_tool(TOOL, {"line": line}, meta=call_meta(line)))
        await pending_request(op, line)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    workflow_id = mcp_call_workflow_id(
        McpClient(subject="alice", client_id="agent-app", issuer=stack.issuer.url),
        call_id_of(line),
        tool_action_digest(TOOL, {"line": line}),
    )
    approval = temporal_client.get_workflow_handle(workflow_id + ".approval", result_type=ApprovalOutcome)
    try:
        outcome = await asyncio.wait_for(approval.result(), timeout=30)
    except TimeoutError:
        pytest.fail("the approval was not cancelled: " + stack.replicas[0].log.read_text()[-3000:])
    assert outcome.status == "cancelled"
    call_handle = temporal_client.get_workflow_handle(workflow_id, result_type=McpToolCallResult)
    ended = await call_handle.result()
    assert ended.result is None and ended.outcome is not None and ended.outcome.status == "cancelled"
    assert ended.refusal == refusal_for_model(TOOL, ended.outcome)
    assert line not in ledger_lines(stack.ledger)


async def test_a_replica_killed_while_waiting_loses_nothing_and_a_retry_elsewhere_gets_the_one_result(
    stack: Stack, op: TestOP, temporal_server: DevServer
) -> None:
    doomed = start_http_gateway(temporal_server, op, stack.issuer, stack.ledger, stack.task_queue, stack.directory)
    line = a_line()
    token = stack.issuer.token("alice")
    try:
        async with http_session(doomed.url, token) as first:
            call = asyncio.ensure_future(first.call_tool(TOOL, {"line": line}, meta=call_meta(line)))
            request = await pending_request(op, line)
            doomed.kill()
            with pytest.raises(BaseException):  # noqa: B017 (the connection's end, in whatever form)
                await asyncio.wait_for(call, timeout=30)
    finally:
        doomed.stop()
    async with http_session(stack.replicas[1].url, token) as retry:
        again = asyncio.ensure_future(retry.call_tool(TOOL, {"line": line}, meta=call_meta(line)))
        op.approve(request["auth_req_id"])
        result = await again
        assert not result.is_error
        twice = await retry.call_tool(TOOL, {"line": line}, meta=call_meta(line))
    assert text_of(twice) == text_of(result)
    code = short_code(tool_action_digest(TOOL, {"line": line}))
    assert [r["auth_req_id"] for r in op.requests() if code in (r["binding_message"] or "")] == [request["auth_req_id"]]
    assert ledger_lines(stack.ledger).count(line) == 1


async def test_a_client_without_a_valid_access_token_is_refused(stack: Stack) -> None:
    import httpx

    url = stack.replicas[0].url
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    assert httpx.post(url, json=body).status_code == 401
    for token in (stack.issuer.token("alice", typ="JWT"), stack.issuer.token("alice", aud="another"), "x.y.z"):
        response = httpx.post(url, json=body, headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    # A valid token from a page whose name resolves here (DNS rebinding): not this gateway's Host.
    good = {"authorization": f"Bearer {stack.issuer.token('alice')}", "host": "evil.example"}
    assert 400 <= httpx.post(url, json=body, headers=good).status_code < 500


async def test_over_stdio_an_expired_approval_never_reaches_the_upstream(
    temporal_server: DevServer, op: TestOP, stack: Stack
) -> None:
    line = a_line()
    async with stdio_session(
        temporal_server, op, stack.ledger, new_task_queue(), "--approver", "bob", "--requested-expiry", "2"
    ) as session:
        assert [tool.name for tool in (await session.list_tools()).tools] == ["append_line", "read_ledger"]
        result = await session.call_tool(TOOL, {"line": line})
    assert result.is_error and "expired" in text_of(result)
    assert line not in ledger_lines(stack.ledger)


assert base64.b64decode(PAYLOAD_KEY)  # the gateways encrypt with the session's payload key


async def test_the_sample_serves_the_maintenance_change_as_a_gated_tool_of_its_own(
    temporal_server: DevServer, op: TestOP, stack: Stack
) -> None:
    """examples/mcp_gateway over stdio: staging at once, production once approved, both once."""
    ledger = ToolLedger(stack.directory / f"maintenance-{uuid.uuid4().hex[:6]}.jsonl")
    system = f"db-{uuid.uuid4().hex[:6]}"
    change = {
        "system": system,
        "change": "rotate the TLS key",
        "window_start": "2026-12-07T22:00:00Z",
        "window_end": "2026-12-07T23:00:00Z",
    }
    async with maintenance_sample_session(temporal_server, op, ledger.path, new_task_queue(), "alice") as session:
        assert "apply_production_change" in [tool.name for tool in (await session.list_tools()).tools]
        staging = await session.call_tool("apply_production_change", {**change, "environment": "staging"})
        assert not staging.is_error and "Applied" in text_of(staging)
        production = asyncio.ensure_future(
            session.call_tool("apply_production_change", {**change, "environment": "production"})
        )

        def pending() -> dict[str, Any] | None:
            return next((r for r in op.requests("pending") if system in (r["binding_message"] or "")), None)

        request = await wait_for(pending, what="the production change's approval", timeout=60)
        assert request["authorization_details"][0]["type"] == "production_change"
        assert [entry.arguments["environment"] for entry in ledger.entries()] == ["staging"]
        op.approve(request["auth_req_id"])
        result = await production
    assert not result.is_error and "Applied" in text_of(result)
    entries = ledger.entries()
    assert [entry.arguments["environment"] for entry in entries] == ["staging", "production"]
    assert entries[1].approved_by is not None and entries[0].approved_by is None


async def test_the_samples_openai_agents_configuration_reaches_the_gateway(stack: Stack) -> None:
    """MCPServerStreamableHttp as examples/mcp_gateway/openai_agents_client.py configures it."""
    server = maintenance_mcp_server(stack.replicas[1].url, stack.issuer.token("alice"))
    async with server:
        tools = await server.list_tools()
        ledger = await server.call_tool("read_ledger", {})
    assert [tool.name for tool in tools] == ["append_line", "read_ledger"]
    assert not ledger.is_error


async def test_over_stdio_a_client_that_cancels_ends_the_approval_as_cancelled(
    temporal_server: DevServer, op: TestOP, stack: Stack, temporal_client: Client
) -> None:
    """Over stdio the client's notifications/cancelled reaches the gateway, which cancels the call."""
    line = a_line()
    async with stdio_session(temporal_server, op, stack.ledger, new_task_queue(), "--approver", "bob") as session:
        call = asyncio.ensure_future(session.call_tool(TOOL, {"line": line}, meta=call_meta(line)))
        await pending_request(op, line, account="bob")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        workflow_id = mcp_call_workflow_id(
            McpClient(transport="stdio"), call_id_of(line), tool_action_digest(TOOL, {"line": line})
        )
        approval = temporal_client.get_workflow_handle(workflow_id + ".approval", result_type=ApprovalOutcome)
        outcome = await asyncio.wait_for(approval.result(), timeout=30)
    assert outcome.status == "cancelled"
    assert line not in ledger_lines(stack.ledger)

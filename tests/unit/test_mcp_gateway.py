"""The MCP gateway's decisions, without servers: which calls pass through, which become workflows
(under which id, asking whom, with which arguments), and what the tool's activity accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import mcp_types as types
import pytest
from mcp.server.auth.provider import AccessToken
from temporalio.exceptions import ApplicationError

from temporal_ciba import ApprovalOutcome
from temporal_ciba.agents import ApprovedToolCall, ToolApproval, tool_action_digest
from temporal_ciba.mcp import (
    CALL_ID_META,
    McpClient,
    McpGateway,
    McpToolCallInput,
    McpToolCallResult,
    OidcTokenVerifier,
    UpstreamServer,
    approver_is_client,
    as_call_tool_result,
    check_approved,
    mcp_call_workflow_id,
)

NOW = datetime.now(UTC)
ALICE = McpClient(subject="alice", client_id="agent-app", issuer="https://login.example")


class FakeUpstream:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        self.calls.append((name, arguments))
        return types.CallToolResult(content=[types.TextContent(text="upstream")])


class FakeHandle:
    id = "the-workflow"

    async def result(self) -> McpToolCallResult:
        return McpToolCallResult(result={"content": [{"type": "text", "text": "approved and run"}]})


class FakeTemporal:
    def __init__(self) -> None:
        self.started: list[tuple[McpToolCallInput, str]] = []

    async def start_workflow(self, run: Any, call: McpToolCallInput, *, id: str, **options: Any) -> FakeHandle:
        self.started.append((call, id))
        return FakeHandle()


def context(client: McpClient | None = ALICE, call_id: str | None = "call-1") -> Any:
    user = None
    if client is not None:
        token = AccessToken(
            token="t",
            client_id=client.client_id or "",
            scopes=[],
            subject=client.subject,
            claims={"iss": client.issuer},
        )
        user = SimpleNamespace(access_token=token)
    return SimpleNamespace(
        meta={CALL_ID_META: call_id} if call_id else {},
        request=SimpleNamespace(scope={"user": user}),
        request_id=7,
        session=None,
    )


def gateway(**gates: ToolApproval | None) -> tuple[McpGateway, FakeTemporal, FakeUpstream]:
    temporal, upstream = FakeTemporal(), FakeUpstream()
    gw = McpGateway(temporal, task_queue="q", upstream=UpstreamServer(url="http://127.0.0.1:1/mcp"), gates=gates)  # type: ignore[arg-type]
    gw._session = upstream
    return gw, temporal, upstream


def call(name: str, **arguments: Any) -> types.CallToolRequestParams:
    return types.CallToolRequestParams(name=name, arguments=arguments)


CLIENT_APPROVES = ToolApproval(login_hint=approver_is_client, expected_subject=approver_is_client)


async def test_a_call_the_approval_lets_through_goes_upstream_without_a_workflow() -> None:
    gw, temporal, upstream = gateway(transfer=ToolApproval(login_hint="alice", when=lambda a: a["amount"] > 100))
    result = await gw.call_tool(context(), call("transfer", amount=5))
    assert upstream.calls == [("transfer", {"amount": 5})] and temporal.started == []
    assert not result.is_error
    ungated, _, upstream2 = gateway()
    await ungated.call_tool(context(), call("anything", x=1))
    assert upstream2.calls == [("anything", {"x": 1})]


async def test_a_gated_call_is_a_workflow_and_never_reaches_the_upstream_from_the_gateway() -> None:
    gw, temporal, upstream = gateway(transfer=CLIENT_APPROVES)
    result = await gw.call_tool(context(), call("transfer", amount=500, login_hint="mallory"))
    assert upstream.calls == []
    [(started, workflow_id)] = temporal.started
    # The approver is the authenticated client, whatever the model put in the arguments.
    assert started.request.login_hint == "alice" and started.request.expected_subject == "alice"
    assert started.arguments == {"amount": 500, "login_hint": "mallory"}
    digest = tool_action_digest("transfer", started.arguments)
    assert started.request.action_digest == digest
    assert workflow_id == mcp_call_workflow_id(ALICE, "call-1", digest)
    assert not result.is_error and result.content[0].text == "approved and run"  # type: ignore[union-attr]


async def test_a_call_without_a_call_id_of_its_own_never_shares_a_workflow() -> None:
    gw, temporal, _ = gateway(transfer=CLIENT_APPROVES)
    for _ in range(2):
        await gw.call_tool(context(call_id=None), call("transfer", amount=500))
    first, second = (workflow_id for _, workflow_id in temporal.started)
    assert first != second


def test_the_workflow_id_names_the_client_the_call_and_the_arguments() -> None:
    digest, other = tool_action_digest("t", {"a": 1}), tool_action_digest("t", {"a": 2})
    ids = {
        mcp_call_workflow_id(ALICE, "c", digest),
        mcp_call_workflow_id(ALICE, "c", other),
        mcp_call_workflow_id(ALICE, "d", digest),
        mcp_call_workflow_id(McpClient(subject="bob", client_id="agent-app", issuer=ALICE.issuer), "c", digest),
        mcp_call_workflow_id(McpClient(subject="alice", client_id="agent-app", issuer="https://other"), "c", digest),
        mcp_call_workflow_id(McpClient(transport="stdio"), "c", digest),
    }
    assert len(ids) == 6
    assert mcp_call_workflow_id(ALICE, "c", digest) == mcp_call_workflow_id(ALICE.model_copy(), "c", digest)
    unsafe = mcp_call_workflow_id(ALICE, "a/b c" * 30, digest)
    assert "/" not in unsafe and " " not in unsafe and len(unsafe) < 120


def approved(digest: str) -> ApprovalOutcome:
    return ApprovalOutcome(status="approved", workflow_id="w", reason="approved", action_digest=digest, decided_at=NOW)


def test_the_tool_activity_runs_only_with_the_approved_arguments() -> None:
    arguments = {"line": "x"}
    digest = tool_action_digest("append_line", arguments)
    check_approved(
        ApprovedToolCall(tool_name="append_line", call_id="c", arguments=arguments, outcome=approved(digest)), None
    )
    refused = [
        ApprovedToolCall(tool_name="append_line", call_id="c", arguments=arguments),
        ApprovedToolCall(tool_name="append_line", call_id="c", arguments={"line": "y"}, outcome=approved(digest)),
        ApprovedToolCall(
            tool_name="append_line",
            call_id="c",
            arguments=arguments,
            outcome=ApprovalOutcome(
                status="denied", workflow_id="w", reason="no", action_digest=digest, decided_at=NOW
            ),
        ),
    ]
    for call_ in refused:
        with pytest.raises(ApplicationError) as raised:
            check_approved(call_, None)
        assert raised.value.non_retryable


def test_an_upstream_is_a_command_or_a_url() -> None:
    assert UpstreamServer.parse("https://tools.example/mcp").url == "https://tools.example/mcp"
    assert UpstreamServer.parse("python 'my server.py' --x").command == ["python", "my server.py", "--x"]
    with pytest.raises(ValueError):
        UpstreamServer(command=["x"], url="http://y")
    with pytest.raises(ValueError):
        UpstreamServer()


def test_an_activity_result_becomes_a_tool_result() -> None:
    assert as_call_tool_result("done")["content"] == [{"type": "text", "text": "done"}]
    structured = as_call_tool_result({"count": 2})
    assert structured["structuredContent"] == {"count": 2} and structured["content"][0]["text"] == '{"count": 2}'
    whole = {"content": [{"type": "text", "text": "as is"}], "isError": True}
    assert as_call_tool_result(whole) == whole


async def test_a_bearer_that_is_not_a_jwt_or_is_too_long_is_refused_before_any_key_is_fetched() -> None:
    verifier = OidcTokenVerifier.for_issuer("http://127.0.0.1:1", ["mcp-gateway"])
    assert await verifier.verify_token("opaque-token") is None
    assert await verifier.verify_token("a." + "b" * 20000 + ".c") is None

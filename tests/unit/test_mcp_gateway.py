"""The MCP gateway's decisions, without servers: which calls pass through, which become workflows
(under which id, asking whom, with which arguments), and what the tool's activity accepts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
import pytest
from mcp.server.auth.provider import AccessToken
from pydantic import BaseModel, model_validator
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.testing import ActivityEnvironment

from temporal_ciba import ApprovalOutcome
from temporal_ciba._models import ApprovalState
from temporal_ciba._policy import ApprovalPolicy, PolicyRule
from temporal_ciba._programs.codec_server import MAX_TOKEN_CHARS, IssuerUnavailable, Refused
from temporal_ciba.agents import ApprovedToolCall, ToolApproval, ToolArguments, short_code, tool_action_digest
from temporal_ciba.crypto import TokenSealer, access_token_context
from temporal_ciba.mcp import (
    CALL_ID_META,
    CALL_UPSTREAM,
    McpClient,
    McpGateway,
    McpGatewayActivities,
    McpGatewayPlugin,
    McpToolCallInput,
    McpToolCallResult,
    McpToolCallWorkflow,
    OidcTokenVerifier,
    OwnTool,
    UpstreamServer,
    approver_is_client,
    as_call_tool_result,
    check_approved,
    mcp_call_workflow_id,
)
from temporal_ciba.mcp import _gateway as gateway_module
from temporal_ciba.mcp._auth import client_of

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


SEALER = TokenSealer(bytes(range(32)))
AGENT, RUN = "mcp-gw.call-c", "run-1"


def sealed(arguments: dict[str, Any], *, run_id: str = RUN) -> ApprovedToolCall:
    """An approved call whose access token is sealed for the digest of `arguments` in run `run_id`."""
    digest = tool_action_digest("append_line", arguments)
    context = access_token_context("req-1", action_digest=digest, workflow_id=AGENT, run_id=run_id)
    outcome = ApprovalOutcome(
        status="approved",
        workflow_id=f"{AGENT}.approval",
        auth_req_id="req-1",
        reason="approved",
        action_digest=digest,
        decided_at=NOW,
        sealed_access_token=SEALER.seal("the-access-token", context=context),
    )
    return ApprovedToolCall(tool_name="append_line", call_id="c", arguments=arguments, outcome=outcome)


def in_the_call_s_run() -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=AGENT, workflow_run_id=RUN)
    return env


def test_a_refused_tool_call_is_a_non_retryable_tool_call_not_approved() -> None:
    """Whether the approval is missing or for other arguments, or its token opens only elsewhere."""
    arguments = {"line": "x"}
    unapproved = ApprovedToolCall(tool_name="append_line", call_id="c", arguments=arguments)
    for call_, sealer in ((unapproved, None), (sealed(arguments, run_id="run-2"), SEALER)):
        with pytest.raises(ApplicationError) as raised:
            in_the_call_s_run().run(check_approved, call_, sealer)
        assert (raised.value.type, raised.value.non_retryable) == ("ToolCallNotApproved", True)
    assert "another workflow run" in str(raised.value)


def test_with_a_sealer_the_token_must_open_for_this_run_and_these_arguments() -> None:
    arguments = {"line": "x"}
    in_the_call_s_run().run(check_approved, sealed(arguments), SEALER)  # opens: no error
    # Without a sealer only the digest is compared: a token sealed for another run is not opened.
    in_the_call_s_run().run(check_approved, sealed(arguments, run_id="run-2"), None)
    # Another sealer's key cannot open it.
    with pytest.raises(ApplicationError):
        in_the_call_s_run().run(check_approved, sealed(arguments), TokenSealer(bytes(32)))
    # An approval without a sealed token (a policy let it through) has nothing to open.
    unsealed = sealed(arguments)
    assert unsealed.outcome is not None
    bare = unsealed.model_copy(update={"outcome": unsealed.outcome.model_copy(update={"sealed_access_token": None})})
    in_the_call_s_run().run(check_approved, bare, SEALER)


def test_the_activities_keep_their_upstream_and_sealer() -> None:
    upstream = UpstreamServer(url="http://127.0.0.1:1/mcp")
    activities = McpGatewayActivities(upstream, sealer=SEALER)
    assert (activities.upstream, activities.sealer) == (upstream, SEALER)


def test_an_upstream_url_is_http_or_https_and_a_command_keeps_its_environment() -> None:
    assert UpstreamServer.parse("http://127.0.0.1:9/mcp").url == "http://127.0.0.1:9/mcp"
    command = UpstreamServer.parse("server --x", env={"TOKEN": "t"})
    assert (command.command, command.env) == (["server", "--x"], {"TOKEN": "t"})
    assert UpstreamServer.parse("server").env is None  # the gateway's own environment


def test_each_kind_of_activity_result_is_a_whole_tool_result() -> None:
    assert as_call_tool_result("done") == {"content": [{"type": "text", "text": "done"}], "isError": False}
    assert as_call_tool_result({"b": 1, "a": 2}) == {
        "content": [{"type": "text", "text": '{"a": 2, "b": 1}'}],
        "structuredContent": {"b": 1, "a": 2},
        "isError": False,
    }
    assert as_call_tool_result([3, NOW]) == {
        "content": [{"type": "text", "text": f'[3, "{NOW}"]'}],
        "structuredContent": {"result": [3, NOW]},
        "isError": False,
    }


def test_the_mcp_gateway_plugin_registers_the_call_workflow_and_the_upstream_activity() -> None:
    upstream = UpstreamServer(url="http://127.0.0.1:1/mcp")

    async def own_tool() -> None: ...

    plugin = McpGatewayPlugin(upstream=upstream, token_key=bytes(range(32)), activities=[own_tool])
    assert plugin.name() == "temporal_ciba.McpGatewayPlugin"
    activities = plugin.gateway_activities
    assert activities.upstream == upstream and activities.sealer is not None
    # The worker's token key opens what the approval sealed: the same sealer as CibaPlugin's.
    assert activities.sealer.unseal(SEALER.seal("t", context="c"), context="c") == "t"
    config = plugin.configure_worker({"task_queue": "q"})  # type: ignore[typeddict-item]
    assert list(config.get("workflows") or []) == [McpToolCallWorkflow]
    assert list(config.get("activities") or []) == [activities.call_upstream, own_tool]
    assert McpGatewayPlugin(upstream=upstream).gateway_activities.sealer is None


def test_the_approver_is_the_client_only_for_a_client() -> None:
    assert approver_is_client(SimpleNamespace(context=ALICE)) == "alice"  # type: ignore[arg-type]
    assert approver_is_client(SimpleNamespace(context="alice")) is None  # type: ignore[arg-type]


class FixedTokens:
    """Stands in for OidcAccessTokens: the claims a validated token carries, or the refusal."""

    def __init__(self, claims: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.claims, self.error, self.seen = claims, error, []

    async def validate(self, token: str) -> dict[str, Any]:
        self.seen.append(token)
        if self.error is not None:
            raise self.error
        assert self.claims is not None
        return self.claims


JWT_SHAPED = "h.p.s"
VALIDATED = {"iss": "https://login.example", "sub": "alice", "exp": 1700000000.0, "aud": "mcp-gateway"}


@pytest.mark.parametrize(
    ("claims", "client_id", "scopes"),
    [
        (
            {"scope": "tools:call tools:list", "client_id": "agent-app", "azp": "other"},
            "agent-app",
            ["tools:call", "tools:list"],
        ),
        ({"scope": ["tools:call", 7], "azp": "agent-app"}, "agent-app", ["tools:call", "7"]),
        ({}, "", []),
    ],
)
async def test_a_validated_token_names_its_client_subject_issuer_scopes_and_expiry(
    claims: dict[str, Any], client_id: str, scopes: list[str]
) -> None:
    """RFC 9068: client_id names the client (azp where an OP gives only that); scope is a
    space-separated string (some OPs give a list)."""
    tokens = FixedTokens({**VALIDATED, **claims})
    token = await OidcTokenVerifier(tokens).verify_token(JWT_SHAPED)  # type: ignore[arg-type]
    assert token is not None and tokens.seen == [JWT_SHAPED]
    assert (token.token, token.client_id, token.scopes) == (JWT_SHAPED, client_id, scopes)
    assert (token.subject, token.expires_at, token.claims) == ("alice", 1700000000, {"iss": "https://login.example"})
    assert type(token.expires_at) is int


@pytest.mark.parametrize("error", [Refused(401, "expired"), IssuerUnavailable("the issuer is down")])
async def test_a_refused_token_or_an_unreachable_issuer_is_a_401(error: Exception) -> None:
    assert await OidcTokenVerifier(FixedTokens(error=error)).verify_token(JWT_SHAPED) is None  # type: ignore[arg-type]


async def test_only_three_dot_separated_parts_within_the_limit_reach_validation() -> None:
    tokens = FixedTokens(VALIDATED)
    verifier = OidcTokenVerifier(tokens)  # type: ignore[arg-type]
    longest = "a." + "b" * (MAX_TOKEN_CHARS - 4) + ".c"
    assert len(longest) == MAX_TOKEN_CHARS and await verifier.verify_token(longest) is not None
    for refused in (longest + "c", "a.b", "a.b.c.d"):
        assert await verifier.verify_token(refused) is None
    assert tokens.seen == [longest]


def test_a_verifier_for_an_issuer_checks_its_tokens_for_the_audience_and_scope() -> None:
    verifier = OidcTokenVerifier.for_issuer("https://login.example", ["mcp-gateway"], required_scope="tools:call")
    tokens = verifier.tokens
    assert (tokens.issuer, tokens.audiences, tokens.required_scope) == (
        "https://login.example",
        ["mcp-gateway"],
        "tools:call",
    )


class RecordingTemporal:
    """Starts nothing: records each start's input and options; a handle answers `answer`."""

    def __init__(self, answer: McpToolCallResult, *, already_started: bool = False) -> None:
        self.answer, self.already_started = answer, already_started
        self.starts: list[tuple[McpToolCallInput, dict[str, Any]]] = []
        self.looked_up: list[tuple[str, Any]] = []
        self.cancelled: list[str] = []

    def handle(self, workflow_id: str) -> Any:
        temporal = self

        class Handle:
            id = workflow_id

            async def result(self) -> McpToolCallResult:
                return temporal.answer

            async def cancel(self) -> None:
                temporal.cancelled.append(workflow_id)

        return Handle()

    async def start_workflow(self, run: Any, call: McpToolCallInput, **options: Any) -> Any:
        self.starts.append((call, {**options, "run": run}))
        if self.already_started:
            raise WorkflowAlreadyStartedError(options["id"], "McpToolCallWorkflow")
        return self.handle(options["id"])

    def get_workflow_handle(self, workflow_id: str, *, result_type: Any = None) -> Any:
        self.looked_up.append((workflow_id, result_type))
        return self.handle(workflow_id)


RUN_RESULT = McpToolCallResult(result={"content": [{"type": "text", "text": "ran"}]})


def recording_gateway(temporal: RecordingTemporal, **options: Any) -> tuple[McpGateway, FakeUpstream]:
    upstream = FakeUpstream()
    gw = McpGateway(temporal, task_queue="q", upstream=UpstreamServer(url="http://127.0.0.1:1/mcp"), **options)  # type: ignore[arg-type]
    gw._session = upstream
    return gw, upstream


async def test_a_gated_call_starts_one_workflow_per_call_and_a_retry_finds_it() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES})
    result = await gw.call_tool(context(call_id=7), call("transfer", amount=500))  # type: ignore[arg-type]
    [(started, options)] = temporal.starts
    digest = tool_action_digest("transfer", {"amount": 500})
    assert options["id"] == mcp_call_workflow_id(ALICE, "7", digest) and options["task_queue"] == "q"
    assert options["id_conflict_policy"] == WorkflowIDConflictPolicy.USE_EXISTING  # a retry attaches to it
    assert options["id_reuse_policy"] == WorkflowIDReusePolicy.REJECT_DUPLICATE  # and never runs it twice
    assert options["static_summary"] == "MCP tool call transfer" and options["run"] == McpToolCallWorkflow.run
    assert (started.tool_name, started.call_id, started.client, started.ask) == ("transfer", "7", ALICE, True)
    assert (started.activity, started.task_queue, started.activity_timeout_seconds) == (CALL_UPSTREAM, None, 300.0)
    assert (started.policy, started.action) == (None, None)
    assert not result.is_error and [block.text for block in result.content] == ["ran"]  # type: ignore[union-attr]
    # An ended call under that id: its handle, for its one result.
    ended = RecordingTemporal(RUN_RESULT, already_started=True)
    gw, _ = recording_gateway(ended, gates={"transfer": CLIENT_APPROVES})
    await gw.call_tool(context(), call("transfer", amount=500))
    assert ended.looked_up == [(ended.starts[0][1]["id"], McpToolCallResult)]


async def test_a_refused_call_answers_its_refusal_as_an_error() -> None:
    for answer, text in (
        (McpToolCallResult(refusal="alice denied the transfer"), "alice denied the transfer"),
        (McpToolCallResult(), "The transfer call was not run."),
    ):
        gw, upstream = recording_gateway(RecordingTemporal(answer), gates={"transfer": CLIENT_APPROVES})
        result = await gw.call_tool(context(), call("transfer", amount=500))
        assert result.is_error and [block.text for block in result.content] == [text]  # type: ignore[union-attr]
        assert upstream.calls == []


async def test_a_call_the_client_abandons_cancels_its_workflow() -> None:
    temporal = RecordingTemporal(RUN_RESULT)

    async def never() -> McpToolCallResult:
        await asyncio.Event().wait()
        raise AssertionError

    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES})
    original = temporal.handle

    def hanging(workflow_id: str) -> Any:
        handle = original(workflow_id)
        handle.result = never
        return handle

    temporal.handle = hanging  # type: ignore[method-assign]
    calling = asyncio.ensure_future(gw.call_tool(context(), call("transfer", amount=500)))
    while not temporal.starts and not calling.done():
        await asyncio.sleep(0.01)  # waits for the start; decides nothing
    calling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await calling
    assert temporal.cancelled == [temporal.starts[0][1]["id"]]


async def test_the_workflow_is_cancelled_even_while_the_request_s_cancellation_goes_on() -> None:
    """The MCP server cancels a request's handler by its cancel scope, which cancels at every
    await until the handler returns: the workflow's cancel runs shielded from it, to its end."""
    temporal = RecordingTemporal(RUN_RESULT)
    waiting_for_result = asyncio.Event()
    original = temporal.handle

    def hanging(workflow_id: str) -> Any:
        handle = original(workflow_id)

        async def never() -> McpToolCallResult:
            waiting_for_result.set()
            await asyncio.Event().wait()
            raise AssertionError

        async def cancel() -> None:
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # the Temporal client's request takes awaits
            temporal.cancelled.append(workflow_id)

        handle.result, handle.cancel = never, cancel
        return handle

    temporal.handle = hanging  # type: ignore[method-assign]
    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(gw.call_tool, context(), call("transfer", amount=500))
        await waiting_for_result.wait()
        tasks.cancel_scope.cancel()
    assert temporal.cancelled == [temporal.starts[0][1]["id"]]


async def test_the_default_approval_gates_every_upstream_tool_not_named() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    gw, upstream = recording_gateway(temporal, gates={"read": None}, default_approval=CLIENT_APPROVES)
    await gw.call_tool(context(), call("read", path="a"))
    assert upstream.calls == [("read", {"path": "a"})] and temporal.starts == []
    await gw.call_tool(context(), call("write", path="a"))
    assert [started.tool_name for started, _ in temporal.starts] == ["write"]


async def test_without_an_upstream_only_the_gateway_s_own_tools_exist() -> None:
    gw = McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q")  # type: ignore[arg-type]
    result = await gw.call_tool(context(), call("transfer", amount=1))
    assert result.is_error
    assert [block.text for block in result.content] == ["The transfer call was not run: there is no such tool."]  # type: ignore[union-attr]


class Note(BaseModel):
    """Append a note."""

    text: str
    urgent: bool = False


async def test_an_own_tool_runs_its_activity_in_the_call_s_workflow_with_its_arguments_read() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    asked = OwnTool(
        name="note",
        activity="notes.append",
        approval=CLIENT_APPROVES,
        parameters=Note,
        task_queue="notes",
        timeout_seconds=9.0,
    )
    unasked = OwnTool(
        name="peek", activity="notes.peek", approval=ToolApproval(login_hint="alice", when=lambda a: False)
    )
    gw, upstream = recording_gateway(temporal, own_tools=[asked, unasked])
    await gw.call_tool(context(), call("note", text="hi"))
    await gw.call_tool(context(), call("peek"))
    (note, _), (peek, _) = temporal.starts
    assert note.arguments == {"text": "hi", "urgent": False}  # the defaults filled in: what is approved
    assert (note.ask, note.activity, note.task_queue, note.activity_timeout_seconds) == (
        True,
        "notes.append",
        "notes",
        9.0,
    )
    assert note.request.action_digest == tool_action_digest("note", {"text": "hi", "urgent": False})
    # Its approval lets it through: still its workflow, without asking anyone.
    assert (peek.ask, peek.activity) == (False, "notes.peek") and upstream.calls == []
    assert peek.request.login_hint == "-"  # nobody is asked: a placeholder, never sent
    invalid = await gw.call_tool(context(), call("note", urgent=True))
    assert [block.text for block in invalid.content] == [  # type: ignore[union-attr]
        "The note call was not run: its arguments are invalid (text: Field required)."
    ]


def test_two_own_tools_may_not_share_a_name() -> None:
    tool = OwnTool(name="note", activity="notes.append", approval=CLIENT_APPROVES)
    with pytest.raises(ValueError, match="same name"):
        McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q", own_tools=[tool, tool])  # type: ignore[arg-type]


async def test_a_call_over_stdio_is_the_local_client_s() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    gw, _ = recording_gateway(temporal, gates={"transfer": ToolApproval(login_hint="alice")})
    await gw.call_tool(context(client=None), call("transfer", amount=1))
    assert temporal.starts[0][0].client == McpClient(transport="stdio")


class ApprovalStatuses(RecordingTemporal):
    """A call that waits for its approval: each status query answers the next state (None: no answer)."""

    def __init__(self, states: list[ApprovalState | None]) -> None:
        super().__init__(RUN_RESULT)
        self.states, self.queried = states, []
        self.answered = asyncio.Event()

    def get_workflow_handle(self, workflow_id: str, *, result_type: Any = None) -> Any:
        temporal = self

        class Approval:
            async def query(self, name: str, *, result_type: Any = None) -> ApprovalState:
                temporal.queried.append((workflow_id, name, result_type))
                state = temporal.states.pop(0) if temporal.states else None
                if not temporal.states:
                    temporal.answered.set()
                if state is None:
                    raise RuntimeError("not started yet")
                return state

        return Approval()

    def handle(self, workflow_id: str) -> Any:
        handle = super().handle(workflow_id)
        temporal = self

        async def result() -> McpToolCallResult:
            # Bounded, so that a gateway that stops asking fails the test rather than hanging it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(temporal.answered.wait(), 10)
            return temporal.answer

        handle.result = result
        return handle


def waiting(status: str, sent: str | None = "Pay 5") -> ApprovalState:
    return ApprovalState(
        status=status,  # type: ignore[arg-type]
        workflow_id="w",
        login_hint="alice",
        binding_message="Pay EUR 5",
        binding_message_sent=sent,
    )


async def test_a_waiting_call_reports_each_new_step_of_its_approval_as_progress() -> None:
    """What the approver is asked, with the action's short code, once per change; nothing while
    the approval is not started or no longer waits."""
    temporal = ApprovalStatuses(
        [None, waiting("requesting", sent=None), waiting("pending"), waiting("pending"), waiting("approved")]
    )
    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES}, progress_interval=0.001)
    notes: list[tuple[Any, float, str | None, Any]] = []

    async def send_progress_notification(
        token: Any, progress: float, *, message: str | None, related_request_id: Any
    ) -> None:
        notes.append((token, progress, message, related_request_id))

    ctx = context()
    ctx.meta["progressToken"] = "p-1"
    ctx.session = SimpleNamespace(send_progress_notification=send_progress_notification)
    result = await gw.call_tool(ctx, call("transfer", amount=5))
    assert not result.is_error
    digest = tool_action_digest("transfer", {"amount": 5})
    code = short_code(digest)
    workflow_id = temporal.starts[0][1]["id"]
    assert {query[:2] for query in temporal.queried} == {(f"{workflow_id}.approval", "ciba.status")}
    assert {query[2] for query in temporal.queried} == {ApprovalState}
    assert notes == [
        ("p-1", 1, f"waiting for alice to approve on their device, code {code} ('Pay EUR 5')", 7),
        ("p-1", 2, f"waiting for alice to approve on their device, code {code} ('Pay 5')", 7),
    ]


async def test_without_a_progress_token_a_call_only_waits() -> None:
    """Nobody to report to: the gateway asks nothing of the approval while its result takes
    many progress intervals to come."""
    temporal = ApprovalStatuses([waiting("pending")] * 3)
    original = temporal.handle

    def slow(workflow_id: str) -> Any:
        handle = original(workflow_id)

        async def result() -> McpToolCallResult:
            for _ in range(20):
                await asyncio.sleep(0.005)  # the result's own time: 100 progress intervals
            return temporal.answer

        handle.result = result
        return handle

    temporal.handle = slow  # type: ignore[method-assign]
    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES}, progress_interval=0.001)
    result = await gw.call_tool(context(), call("transfer", amount=5))
    assert not result.is_error and temporal.queried == []


def a_tool(name: str) -> types.Tool:
    return types.Tool.model_validate({"name": name, "description": "", "inputSchema": {"type": "object"}})


class ListingUpstream(FakeUpstream):
    """Lists its tools in pages: the first page says there is a next one."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[Any] = []

    async def list_tools(self, *, params: Any) -> types.ListToolsResult:
        self.listed.append(params)
        if params is None:
            return types.ListToolsResult(tools=[a_tool("transfer")], next_cursor="page-2")
        return types.ListToolsResult(tools=[a_tool("read")])


async def test_the_tool_list_is_the_upstream_s_pages_then_the_gateway_s_own() -> None:
    own = OwnTool(name="note", activity="notes.append", approval=CLIENT_APPROVES, parameters=Note)
    gw, _ = recording_gateway(RecordingTemporal(RUN_RESULT), own_tools=[own])
    upstream = ListingUpstream()
    gw._session = upstream
    first = await gw.list_tools(context(), None)
    envelope = types.PaginatedRequestParams.model_validate({"cursor": "page-2", "_meta": {"progressToken": "x"}})
    last = await gw.list_tools(context(), envelope)
    assert ([t.name for t in first.tools], first.next_cursor) == (["transfer"], "page-2")
    assert [t.name for t in last.tools] == ["read", "note"]  # the gateway's own after the upstream's last page
    assert upstream.listed[0] is None
    assert upstream.listed[1].model_dump(exclude_none=True) == {"cursor": "page-2"}  # only the cursor goes on
    alone = McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q", own_tools=[own])  # type: ignore[arg-type]
    assert [t.name for t in (await alone.list_tools(context(), None)).tools] == ["note"]


def test_an_own_tool_is_described_by_its_parameters_or_as_given() -> None:
    described = OwnTool(name="note", activity="a", approval=CLIENT_APPROVES, parameters=Note).tool()
    assert (described.name, described.description) == ("note", "Append a note.")
    assert described.input_schema == Note.model_json_schema()
    given = OwnTool(
        name="peek",
        activity="a",
        approval=CLIENT_APPROVES,
        parameters=Note,
        input_schema={"type": "object", "x": 1},
        description="Look",
    ).tool()
    assert (given.description, given.input_schema) == ("Look", {"type": "object", "x": 1})
    bare = OwnTool(name="ping", activity="a", approval=CLIENT_APPROVES).tool()
    assert (bare.description, bare.input_schema) == ("", {"type": "object"})
    assert OwnTool(name="n", activity="a", approval=CLIENT_APPROVES, parameters=Note).read({"text": "t"}) == {
        "text": "t",
        "urgent": False,
    }


async def test_the_gateway_opens_its_upstream_on_entry_and_closes_it_on_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[UpstreamServer] = []
    closed: list[UpstreamServer] = []
    session = FakeUpstream()

    @asynccontextmanager
    async def fake_open(server: UpstreamServer) -> AsyncIterator[FakeUpstream]:
        opened.append(server)
        yield session
        closed.append(server)

    monkeypatch.setattr(gateway_module, "open_upstream", fake_open)
    upstream = UpstreamServer(url="http://127.0.0.1:1/mcp")
    gw = McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q", upstream=upstream)  # type: ignore[arg-type]
    async with gw:
        assert gw._session is session and opened == [upstream] and closed == []
    assert gw._session is None and closed == [upstream]
    async with McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q") as alone:  # type: ignore[arg-type]
        assert alone._session is None
    assert opened == [upstream]


async def test_a_progress_token_under_either_spelling_and_a_context_without_a_request() -> None:
    temporal = ApprovalStatuses([waiting("pending")])
    gw, _ = recording_gateway(temporal, gates={"transfer": ToolApproval(login_hint="alice")}, progress_interval=0.001)
    notes: list[Any] = []

    async def send_progress_notification(token: Any, progress: float, **more: Any) -> None:
        notes.append(token)

    ctx = SimpleNamespace(
        meta={"progress_token": "p-2"},
        request_id=1,
        session=SimpleNamespace(send_progress_notification=send_progress_notification),
    )
    await gw.call_tool(ctx, call("transfer", amount=5))
    assert notes == ["p-2"]
    assert temporal.starts[0][0].client == McpClient(transport="stdio")  # no HTTP request: the stdio client


def test_a_client_is_named_by_its_token_s_subject_client_and_issuer_when_it_has_them() -> None:
    assert client_of(SimpleNamespace(scope={})) is None
    assert client_of(SimpleNamespace()) is None
    token = AccessToken(token="t", client_id="", scopes=[], subject="alice", claims={})
    assert client_of(SimpleNamespace(scope={"user": SimpleNamespace(access_token=token)})) == McpClient(subject="alice")


def test_the_server_answers_tools_list_and_tools_call_with_the_gateway_s_handlers() -> None:
    gw = McpGateway(RecordingTemporal(RUN_RESULT), task_queue="q", name="gw-1")  # type: ignore[arg-type]
    server = gw.server()
    assert server.name == "gw-1"
    assert server.get_request_handler("tools/list").handler == gw.list_tools  # type: ignore[union-attr]
    assert server.get_request_handler("tools/call").handler == gw.call_tool  # type: ignore[union-attr]


class Inner(BaseModel):
    x: int


class Booking(BaseModel):
    """Book a day."""

    day: date
    inner: Inner | None = None

    @model_validator(mode="after")
    def _not_on_sunday(self) -> Booking:
        if self.day.weekday() == 6:
            raise ValueError("not on a Sunday")
        return self


async def test_an_own_tool_s_arguments_are_read_as_json_and_invalid_ones_are_named_where() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    booking = OwnTool(name="book", activity="a", approval=CLIENT_APPROVES, parameters=Booking)
    gw, _ = recording_gateway(temporal, own_tools=[booking])
    await gw.call_tool(context(), call("book", day="2026-03-02"))
    assert temporal.starts[0][0].arguments == {"day": "2026-03-02", "inner": None}  # JSON: what is digested
    nested = await gw.call_tool(context(), call("book", day="2026-03-02", inner={}))
    sunday = await gw.call_tool(context(), call("book", day="2026-03-01"))
    assert [block.text for block in nested.content] == [  # type: ignore[union-attr]
        "The book call was not run: its arguments are invalid (inner.x: Field required)."
    ]
    assert [block.text for block in sunday.content] == [  # type: ignore[union-attr]
        "The book call was not run: its arguments are invalid (arguments: Value error, not on a Sunday)."
    ]


async def test_an_empty_call_id_is_no_call_id() -> None:
    temporal = RecordingTemporal(RUN_RESULT)
    gw, _ = recording_gateway(temporal, gates={"transfer": CLIENT_APPROVES})
    ctx = context()
    ctx.meta[CALL_ID_META] = ""
    await gw.call_tool(ctx, call("transfer", amount=1))
    assert len(temporal.starts[0][0].call_id) == 32  # a call of its own


async def test_a_call_under_a_policy_carries_the_policy_and_the_action_it_decides_on() -> None:
    policy = ApprovalPolicy(rules=[PolicyRule(name="always", approval="one", approvers=["approver"])])
    approval = ToolApproval(login_hint=approver_is_client, policy=policy)
    temporal = RecordingTemporal(RUN_RESULT)
    gw, _ = recording_gateway(temporal, gates={"transfer": approval})
    await gw.call_tool(context(), call("transfer", amount=5))
    [(started, _)] = temporal.starts
    arguments = ToolArguments({"amount": 5}, tool_name="transfer", call_id="call-1", context=ALICE)
    assert started.policy == policy and started.action == approval.action_for(arguments)
    assert started.action is not None and started.action.parties == {"approver": "alice"}

"""The MCP gateway: an MCP server whose gated tool calls are Temporal workflows.

    MCP client ──tools/list──▶ gateway ──▶ upstream tools, unchanged (+ the gateway's own tools)
    MCP client ──tools/call──▶ gateway
        not gated (the ToolApproval's `when` or policy lets it through) ──▶ upstream, directly
        gated ──▶ McpToolCallWorkflow (id: client, call id, digest) ──▶ approval ──▶ the tool, once
              ◀── progress notifications: whom it waits for, and the code on their device
              ◀── the tool's result, or a tool error with the one line the model can relay
        the client cancels ──▶ the workflow is cancelled, and the approval with it (`cancelled`)

The gateway holds nothing of a call: the workflow has the call, its approval and its result. A
retry of the call (the same call id in `_meta`, the same arguments, the same client) on any
replica attaches to the same workflow and gets its one result. Who approves comes from the
ToolApproval and policy, which may use the authenticated client (`ToolArguments.context` is the
McpClient), never from anything the model can write alone unless the ToolApproval says so.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from temporal_ciba._models import ApprovalState
from temporal_ciba._workflow import STATUS_QUERY as APPROVAL_STATUS_QUERY
from temporal_ciba.agents import ToolApproval, ToolArguments, short_code, tool_action_digest
from temporal_ciba.mcp._calls import (
    CALL_ID_META,
    CALL_UPSTREAM,
    McpClient,
    McpToolCallInput,
    McpToolCallResult,
    approval_id_of,
    mcp_call_workflow_id,
)
from temporal_ciba.mcp._upstream import UpstreamServer, open_upstream
from temporal_ciba.mcp._workflow import McpToolCallWorkflow

log = logging.getLogger("temporal_ciba.mcp")

STDIO_CLIENT = McpClient(transport="stdio")


def approver_is_client(arguments: ToolArguments) -> str | None:
    """A ToolApproval `login_hint` (or `expected_subject`): the authenticated MCP client's subject.

    The person whose access token called the gateway approves on their own device."""
    client = arguments.context
    return client.subject if isinstance(client, McpClient) else None


@dataclass(frozen=True)
class OwnTool:
    """A tool the gateway serves itself: a Temporal activity taking one ApprovedToolCall.

    `parameters` (a pydantic model) gives the input schema and reads the arguments (defaults
    filled in: the form that is digested and approved). The activity runs on the gateway's task
    queue unless `task_queue` says otherwise, always in the call's workflow."""

    name: str
    activity: Callable[..., Any] | str
    approval: ToolApproval
    parameters: type[BaseModel] | None = None
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    task_queue: str | None = None
    timeout_seconds: float = 300.0

    @property
    def activity_name(self) -> str:
        if isinstance(self.activity, str):
            return self.activity
        name = activity._Definition.must_from_callable(self.activity).name
        if not name:
            raise ValueError(f"the tool {self.name}: a dynamic activity cannot be a tool")
        return name

    def tool(self) -> types.Tool:
        schema = self.input_schema or (self.parameters.model_json_schema() if self.parameters else {"type": "object"})
        description = self.description or (self.parameters.__doc__ if self.parameters else None) or ""
        return types.Tool.model_validate({"name": self.name, "description": description, "inputSchema": schema})

    def read(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        if self.parameters is None:
            return dict(arguments)
        return self.parameters.model_validate(dict(arguments)).model_dump(mode="json")


@dataclass
class McpGateway:
    """Serves MCP (stdio or streamable HTTP) in front of `upstream` and/or its `own_tools`.

    `gates` names the ToolApproval of each upstream tool (None: that tool passes through);
    `default_approval` applies to every upstream tool not named there (None: those pass through). Gated calls run as
    McpToolCallWorkflow on `task_queue`, where a worker with CibaPlugin and McpGatewayPlugin runs."""

    client: Client
    task_queue: str
    upstream: UpstreamServer | None = None
    gates: Mapping[str, ToolApproval | None] = field(default_factory=dict)
    default_approval: ToolApproval | None = None
    own_tools: Sequence[OwnTool] = ()
    progress_interval: float = 1.0
    name: str = "temporal-ciba-mcp-gateway"
    _session: Any = None
    _stack: AsyncExitStack | None = None

    def __post_init__(self) -> None:
        self._own = {tool.name: tool for tool in self.own_tools}
        if len(self._own) != len(self.own_tools):
            raise ValueError("two of the gateway's own tools have the same name")

    async def __aenter__(self) -> McpGateway:
        if self.upstream is not None:
            self._stack = AsyncExitStack()
            self._session = await self._stack.enter_async_context(open_upstream(self.upstream))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack, self._session = None, None

    # MCP handlers -------------------------------------------------------------------------------

    async def list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """The upstream's tools, unchanged, then the gateway's own."""
        own = [tool.tool() for tool in self.own_tools]
        if self._session is None:
            return types.ListToolsResult(tools=own)
        # Only the cursor goes on: the client's own envelope (_meta, its protocol era) is not the
        # gateway's connection's.
        cursor = params.cursor if params is not None else None
        forwarded = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        listed: types.ListToolsResult = await self._session.list_tools(params=forwarded)
        if own and listed.next_cursor is None:
            listed = listed.model_copy(update={"tools": [*listed.tools, *own]})
        return listed

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        """Pass the call through, or run it as a gated workflow and answer with its result."""
        caller = self._caller(ctx)
        meta: Mapping[str, Any] = ctx.meta or {}
        named = meta.get(CALL_ID_META)
        # Without a call id of the client's own, every request is a call of its own: request ids
        # repeat across connections, and two calls must never share a workflow.
        call_id = str(named) if isinstance(named, str | int) and str(named) else uuid.uuid4().hex
        raw = dict(params.arguments or {})
        own = self._own.get(params.name)
        if own is not None:
            try:
                raw = own.read(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "arguments"
                return _error(f"The {own.name} call was not run: its arguments are invalid ({where}: {first['msg']}).")
            approval: ToolApproval | None = own.approval
        else:
            if self._session is None:
                return _error(f"The {params.name} call was not run: there is no such tool.")
            approval = self.gates[params.name] if params.name in self.gates else self.default_approval
        arguments = ToolArguments(raw, tool_name=params.name, call_id=call_id, context=caller)
        if approval is None or not approval.applies_to(arguments):
            if own is None:
                result: types.CallToolResult = await self._session.call_tool(params.name, raw)
                return result
            approval = None
        return await self._gated(ctx, meta, arguments, approval, own)

    def _caller(self, ctx: Any) -> McpClient:
        from temporal_ciba.mcp._auth import client_of

        return client_of(getattr(ctx, "request", None)) or STDIO_CLIENT

    async def _gated(
        self,
        ctx: Any,
        meta: Mapping[str, Any],
        arguments: ToolArguments,
        approval: ToolApproval | None,
        own: OwnTool | None,
    ) -> types.CallToolResult:
        digest = tool_action_digest(arguments.tool_name, arguments)
        base = approval or ToolApproval(login_hint="-")
        request = base.request_for(arguments)
        call = McpToolCallInput(
            tool_name=arguments.tool_name,
            call_id=arguments.call_id,
            arguments=dict(arguments),
            client=arguments.context,
            request=request,
            policy=base.policy,
            action=base.action_for(arguments) if base.policy is not None else None,
            ask=approval is not None,
            activity=own.activity_name if own else CALL_UPSTREAM,
            task_queue=own.task_queue if own else None,
            activity_timeout_seconds=own.timeout_seconds if own else 300.0,
        )
        workflow_id = mcp_call_workflow_id(arguments.context, arguments.call_id, digest)
        handle = await self._start(workflow_id, call)
        progress = meta.get("progressToken", meta.get("progress_token"))
        try:
            outcome = await self._wait(ctx, handle, progress, digest)
        except BaseException:
            # The client cancelled its request (or went away): end the approval with it.
            log.info("MCP gateway: the call %s ended before its result; cancelling it", workflow_id)
            with anyio.CancelScope(shield=True):
                try:
                    await handle.cancel()
                except Exception as exc:  # the workflow may have ended meanwhile
                    log.info("MCP gateway: cancelling %s: %s", workflow_id, exc)
            raise
        if outcome.result is not None:
            return types.CallToolResult.model_validate(outcome.result)
        return _error(outcome.refusal or f"The {arguments.tool_name} call was not run.")

    async def _start(self, workflow_id: str, call: McpToolCallInput) -> WorkflowHandle[Any, McpToolCallResult]:
        try:
            return await self.client.start_workflow(
                McpToolCallWorkflow.run,
                call,
                id=workflow_id,
                task_queue=self.task_queue,
                # A retry of a running call attaches to it; of an ended one, finds its result.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"MCP tool call {call.tool_name}",
            )
        except WorkflowAlreadyStartedError:
            return self.client.get_workflow_handle(workflow_id, result_type=McpToolCallResult)

    async def _wait(
        self, ctx: Any, handle: WorkflowHandle[Any, McpToolCallResult], progress: Any, digest: str
    ) -> McpToolCallResult:
        result = asyncio.ensure_future(handle.result())
        try:
            said: str | None = None
            step = 0
            while True:
                done, _ = await asyncio.wait({result}, timeout=self.progress_interval if progress is not None else None)
                if done:
                    return result.result()
                message = await self._waiting_for(handle.id, digest)
                if message is not None and message != said:
                    said, step = message, step + 1
                    await ctx.session.send_progress_notification(
                        progress, step, message=message, related_request_id=ctx.request_id
                    )
        finally:
            result.cancel()

    async def _waiting_for(self, workflow_id: str, digest: str) -> str | None:
        """What the call waits for, in one line, from its approval's status; None if unknown."""
        try:
            state: ApprovalState = await self.client.get_workflow_handle(approval_id_of(workflow_id)).query(
                APPROVAL_STATUS_QUERY, result_type=ApprovalState
            )
        except Exception:  # not started yet, or a quorum (its approvals have ids of their own)
            return None
        if state.status not in ("requesting", "pending"):
            return None
        shown = state.binding_message_sent or state.binding_message
        return f"waiting for {state.login_hint} to approve on their device, code {short_code(digest)} ({shown!r})"

    # Serving ------------------------------------------------------------------------------------

    def server(self) -> Server[Any]:
        """The low-level MCP server with the gateway's handlers."""
        return Server(self.name, on_list_tools=self.list_tools, on_call_tool=self.call_tool)

    async def run_stdio(self) -> None:
        """Serve one local client over stdin and stdout until it closes them."""
        from mcp.server.stdio import stdio_server

        server = self.server()
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    def http_app(
        self,
        *,
        token_verifier: Any,
        issuer: str,
        resource_url: str,
        required_scopes: Sequence[str] = (),
        path: str = "/mcp",
        max_body_bytes: int = 1024 * 1024,
        allowed_hosts: Sequence[str] | None = None,
    ) -> Any:
        """A Starlette app serving streamable HTTP at `path`, stateless (any replica serves any
        request), every request authenticated by `token_verifier` (401 with the resource's
        metadata, RFC 9728, otherwise)."""
        from mcp.server.auth.settings import AuthSettings
        from mcp.server.transport_security import TransportSecuritySettings

        security = None
        if allowed_hosts is not None:
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True, allowed_hosts=list(allowed_hosts), allowed_origins=[]
            )
        return self.server().streamable_http_app(
            streamable_http_path=path,
            stateless_http=True,
            max_request_body_size=max_body_bytes,
            transport_security=security,
            auth=AuthSettings(
                issuer_url=issuer,  # type: ignore[arg-type]
                resource_server_url=resource_url,  # type: ignore[arg-type]
                required_scopes=list(required_scopes) or None,
                validate_token_resource=False,  # the verifier checks the audience itself
            ),
            token_verifier=token_verifier,
        )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


@asynccontextmanager
async def serving(gateway: McpGateway) -> AsyncIterator[McpGateway]:
    """The gateway with its upstream connection open."""
    async with gateway:
        yield gateway

"""The MCP server the gateway stands in front of, and the activity that calls its tools.

The gateway holds one connection to it for listing tools and for the calls its policy lets
through; a gated call reaches it only from `McpGatewayActivities.call_upstream`, in the call's
workflow, after the approval, with the approved arguments and nothing else.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba._grant import GrantRefused, open_access_token
from temporal_ciba.agents import ApprovedToolCall, tool_action_digest
from temporal_ciba.crypto import TokenSealer
from temporal_ciba.mcp._calls import CALL_UPSTREAM


class UpstreamServer(BaseModel):
    """How to reach the upstream MCP server: a command speaking stdio, or a streamable HTTP URL.

    `headers` (e.g. the upstream's own Authorization) stay in the gateway's and the worker's
    configuration; they are never part of a workflow's input."""

    model_config = ConfigDict(frozen=True)

    command: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("an upstream MCP server is a command (stdio) or a URL (streamable HTTP), exactly one")
        if self.command is not None and not self.command:
            raise ValueError("the upstream command is empty")
        return self

    @classmethod
    def parse(cls, value: str, *, env: Mapping[str, str] | None = None) -> UpstreamServer:
        """An http(s) URL, or a command line (split as a shell would, never run by one)."""
        if value.startswith(("http://", "https://")):
            return cls(url=value)
        return cls(command=shlex.split(value), env=dict(env) if env is not None else None)


@asynccontextmanager
async def open_upstream(server: UpstreamServer) -> AsyncIterator[Any]:
    """An initialized mcp.ClientSession to the upstream server, closed on exit."""
    from mcp import ClientSession

    if server.command is not None:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        parameters = StdioServerParameters(
            command=server.command[0], args=server.command[1:], env=server.env, cwd=server.cwd
        )
        async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert server.url is not None
    async with (
        httpx2.AsyncClient(headers=server.headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(server.url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def check_approved(call: ApprovedToolCall, sealer: TokenSealer | None) -> None:
    """Refuse (not retried) a call whose approval is not for exactly these arguments in this run.

    With a token sealer the approval's sealed access token must open for this workflow run and
    this digest (temporal_ciba._grant); without one, the outcome's digest must match."""
    digest = tool_action_digest(call.tool_name, call.arguments)
    outcome = call.outcome
    if outcome is None or not outcome.approved or outcome.action_digest != digest:
        raise ApplicationError(
            f"the {call.tool_name} call has no approval for these arguments",
            type="ToolCallNotApproved",
            non_retryable=True,
        )
    if sealer is not None and outcome.sealed_access_token is not None:
        try:
            open_access_token(sealer, outcome, action_digest=digest)
        except GrantRefused as exc:
            raise ApplicationError(str(exc), type="ToolCallNotApproved", non_retryable=True) from None


class McpGatewayActivities:
    """The activity that calls an upstream tool once a call is approved."""

    def __init__(self, upstream: UpstreamServer | None, *, sealer: TokenSealer | None = None) -> None:
        self.upstream = upstream
        self.sealer = sealer

    @activity.defn(name=CALL_UPSTREAM)
    async def call_upstream(self, call: ApprovedToolCall) -> dict[str, Any]:
        """Call the upstream tool with the approved arguments; its CallToolResult as JSON."""
        check_approved(call, self.sealer)
        if self.upstream is None:
            raise ApplicationError("this worker has no upstream MCP server", type="NoUpstream", non_retryable=True)
        async with open_upstream(self.upstream) as session:
            result = await session.call_tool(call.tool_name, call.arguments)
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

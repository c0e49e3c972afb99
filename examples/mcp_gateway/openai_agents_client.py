"""The client side: an OpenAI Agents SDK agent reaching the gated tool over streamable HTTP.

    server = maintenance_mcp_server("http://127.0.0.1:8808/mcp", access_token)
    async with server:
        agent = Agent(name="maintenance-bot", mcp_servers=[server])

The access token is the caller's own (the gateway asks its subject to approve). A gated call
waits for the approver, so the session's timeout is the approval's, not the SDK's 5 s default;
the agent relays a refusal line as the tool's error result.
"""

from __future__ import annotations

from agents.mcp import MCPServerStreamableHttp


def maintenance_mcp_server(url: str, access_token: str, *, approval_timeout: float = 900) -> MCPServerStreamableHttp:
    return MCPServerStreamableHttp(
        {
            "url": url,
            "headers": {"Authorization": f"Bearer {access_token}"},
            "timeout": 30,
            "sse_read_timeout": approval_timeout,
        },
        name="maintenance (CIBA-gated)",
        client_session_timeout_seconds=approval_timeout,
    )

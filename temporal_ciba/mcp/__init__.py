"""Gate any MCP tool behind a durable CIBA approval: an MCP gateway whose state lives in Temporal.

    temporal-ciba mcp-gateway --upstream "python my_server.py" --approver alice     (extra: mcp)

    McpGateway            the MCP server in front of an upstream MCP server and/or its own tools
    McpGatewayPlugin      on the worker: the tool-call workflow and the activities that call tools
    McpToolCallWorkflow   one gated call: its approval, then the tool once with the approved arguments
    OidcTokenVerifier     HTTP clients' OAuth 2.1 bearer tokens, validated against the issuer

Every gated call is a workflow whose id names the authenticated client, the call and the digest
of the tool's name and arguments; the gateway processes hold no state.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporal_ciba.mcp._calls import (
        CALL_ID_META,
        CALL_UPSTREAM,
        McpCallState,
        McpClient,
        McpToolCallInput,
        McpToolCallResult,
        mcp_call_workflow_id,
    )
    from temporal_ciba.mcp._upstream import McpGatewayActivities, UpstreamServer, check_approved, open_upstream
    from temporal_ciba.mcp._workflow import McpToolCallWorkflow, as_call_tool_result

from temporal_ciba.mcp._auth import OidcTokenVerifier
from temporal_ciba.mcp._gateway import McpGateway, OwnTool, approver_is_client
from temporal_ciba.mcp._plugin import McpGatewayPlugin

__all__ = [
    "CALL_ID_META",
    "CALL_UPSTREAM",
    "McpCallState",
    "McpClient",
    "McpGateway",
    "McpGatewayActivities",
    "McpGatewayPlugin",
    "McpToolCallInput",
    "McpToolCallResult",
    "McpToolCallWorkflow",
    "OidcTokenVerifier",
    "OwnTool",
    "UpstreamServer",
    "approver_is_client",
    "as_call_tool_result",
    "check_approved",
    "mcp_call_workflow_id",
    "open_upstream",
]

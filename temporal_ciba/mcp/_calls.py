"""What a gated MCP tool call is in Temporal: its workflow's input and result, and its id.

    McpToolCallInput ──▶ McpToolCallWorkflow ──▶ McpToolCallResult
    (the client, the tool, the approved-to-be arguments, the approval request the gateway built)

The workflow id names the MCP client (from its validated access token, or the local stdio
client), the call and the digest of the tool's name and arguments, so a retry of the same call
from any gateway replica finds the same workflow and its one result, and no other client or
argument can reach it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba._policy import ApprovalPolicy, PolicyAction

# The activity that calls the upstream MCP server's tool (McpGatewayActivities.call_upstream).
CALL_UPSTREAM = "temporal-ciba.mcp.call_upstream"
# The `_meta` key under which a client names its call (e.g. the model's tool call id), so a retry
# of the call on another connection or replica is recognised as the same call.
CALL_ID_META = "io.github.temporal-ciba/call-id"
STATUS_QUERY = "mcp.status"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


class McpClient(BaseModel):
    """Who called the gateway: the subject and client of its validated access token, or the
    local client of a stdio gateway (`subject` None)."""

    model_config = ConfigDict(frozen=True)

    subject: str | None = None
    client_id: str | None = None
    issuer: str | None = None
    # "http" or "stdio": over stdio the client is whoever started the gateway.
    transport: str = "http"

    def key(self) -> str:
        """A stable name for this client in workflow ids (hashed: ids are visible to operators)."""
        material = "\n".join([self.transport, self.issuer or "", self.client_id or "", self.subject or ""])
        return hashlib.sha256(material.encode()).hexdigest()[:16]


class McpToolCallInput(BaseModel):
    """A gated tool call, with the approval request the gateway built for it from the policy."""

    tool_name: str
    call_id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    client: McpClient
    request: ApprovalRequest
    policy: ApprovalPolicy | None = None
    action: PolicyAction | None = None
    # The activity run once the call is approved: CALL_UPSTREAM or one of the gateway's own tools.
    # False: the gateway's own tool runs without asking (its ToolApproval let the call through).
    ask: bool = True
    activity: str = CALL_UPSTREAM
    task_queue: str | None = None
    activity_timeout_seconds: float = Field(default=300.0, gt=0)


class McpToolCallResult(BaseModel):
    """The approval's outcome and, when it was approved, the tool's result (an MCP
    CallToolResult as JSON); `refusal` is the one line the model can relay otherwise."""

    outcome: ApprovalOutcome | None = None
    result: dict[str, Any] | None = None
    refusal: str | None = None


class McpCallState(BaseModel):
    """The `mcp.status` query: where the call is, and whose approval it waits for."""

    phase: str  # "approving", "calling", "done"
    approval_workflow_id: str


def mcp_call_workflow_id(client: McpClient, call_id: str, digest: str) -> str:
    """The workflow id of a gated call: the client, the call id and the action digest."""
    safe = _UNSAFE.sub("_", call_id)
    if safe != call_id or len(safe) > 64:
        safe = safe[:32] + "-" + hashlib.sha256(call_id.encode()).hexdigest()[:16]
    return f"mcp-{client.key()}.call-{safe}-{digest[:12]}"


def approval_id_of(call_workflow_id: str) -> str:
    """The id of the approval a gated call asks for (a child of its workflow)."""
    return f"{call_workflow_id}.approval"

"""The gateway's side of a worker: the tool-call workflow and the activities that run the tools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.plugin import SimplePlugin

from temporal_ciba.crypto import TokenSealer
from temporal_ciba.mcp._upstream import McpGatewayActivities, UpstreamServer
from temporal_ciba.mcp._workflow import McpToolCallWorkflow


class McpGatewayPlugin(SimplePlugin):
    """Registers McpToolCallWorkflow, the upstream call and the gateway's own tools' activities.

    Goes beside CibaPlugin (which brings the approval workflow the calls wait on). With
    `token_key` (CIBA_TOKEN_KEY), an upstream call opens the approval's sealed access token for
    its own workflow run and arguments before it calls the tool."""

    def __init__(
        self,
        *,
        upstream: UpstreamServer | None = None,
        token_key: bytes | None = None,
        activities: Sequence[Callable[..., Any]] = (),
    ) -> None:
        sealer = TokenSealer(token_key) if token_key is not None else None
        self.gateway_activities = McpGatewayActivities(upstream, sealer=sealer)
        super().__init__(
            "temporal_ciba.McpGatewayPlugin",
            workflows=[McpToolCallWorkflow],
            activities=[self.gateway_activities.call_upstream, *activities],
        )

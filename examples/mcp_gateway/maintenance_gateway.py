"""The maintenance bot's production change as an MCP tool behind the gateway.

    temporal-ciba-examples mcp-maintenance --approver alice                     (stdio: a desktop MCP client)
    temporal-ciba-examples mcp-maintenance --http 127.0.0.1:8808 \\
        --issuer https://login.example.com --audience mcp-gateway        (any agent: MCPServerStreamableHttp)

`apply_production_change` is the maintenance bot's tool (examples/openai_agents/maintenance.py)
served as the gateway's own tool: a change to `production` waits for the approver's decision on
their device, with the change in its authorization_details; a `staging` change runs at once.
The activity records the change in the tool ledger (CIBA_TOOL_LEDGER) once. Over HTTP the
approver is the caller's own subject (the access token's `sub`). One process runs both the MCP
server and the worker of the calls' workflows (CIBA_* settings, as the demo's worker.env has them).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from temporal_ciba import CibaPlugin, TokenKeySettings, ensure_search_attributes, load_settings
from temporal_ciba.agents import ToolApproval
from temporal_ciba.crypto import TokenSealer
from temporal_ciba.mcp import McpGateway, McpGatewayPlugin, OidcTokenVerifier, OwnTool, approver_is_client
from temporal_ciba_examples.openai_agents.maintenance import (
    TOOL,
    MaintenanceActivities,
    ProductionChange,
    authorization_details,
    binding_message,
    needs_decision,
)
from temporal_ciba_examples.shared.tool_ledger import ToolLedger

log = logging.getLogger("temporal_ciba_examples.mcp")


def production_change_tool(approver: str | None, requested_expiry: int | None) -> OwnTool:
    """The tool: the maintenance bot's approval, its approver named here or the MCP client."""
    approval = ToolApproval(
        login_hint=approver or approver_is_client,
        expected_subject=None if approver else approver_is_client,
        binding_message=binding_message,
        authorization_details=authorization_details,
        when=needs_decision,
        requested_expiry=requested_expiry,
    )
    return OwnTool(
        name=TOOL,
        activity=MaintenanceActivities.apply_production_change,
        approval=approval,
        parameters=ProductionChange,
        timeout_seconds=30,
    )


async def run_maintenance_gateway(args: argparse.Namespace) -> int:
    if args.http and not (args.issuer and args.audience):
        raise ValueError("--http needs --issuer and --audience")
    if not args.http and not args.approver:
        raise ValueError("over stdio, name the approver: --approver LOGIN_HINT")
    keys = load_settings(TokenKeySettings)
    task_queue = os.environ.get("CIBA_TASK_QUEUE", "ciba-approvals")
    ledger = ToolLedger(Path(os.environ.get("CIBA_TOOL_LEDGER", "tool-ledger.jsonl")))
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    client = await Client.connect(**config, plugins=[CibaPlugin.from_env()])
    await ensure_search_attributes(client)
    tools = MaintenanceActivities(TokenSealer(keys.token_key_bytes), ledger)
    plugin = McpGatewayPlugin(token_key=keys.token_key_bytes, activities=[tools.apply_production_change])
    gateway = McpGateway(
        client, task_queue=task_queue, own_tools=[production_change_tool(args.approver, args.requested_expiry)]
    )
    async with Worker(client, task_queue=task_queue, plugins=[plugin]), gateway:
        if not args.http:
            await gateway.run_stdio()
            return 0
        import uvicorn

        host, _, port = args.http.rpartition(":")
        app = gateway.http_app(
            token_verifier=OidcTokenVerifier.for_issuer(args.issuer, args.audience),
            issuer=args.issuer,
            resource_url=f"http://{args.http}/mcp",
        )
        log.info("the maintenance tool is served at http://%s/mcp", args.http)
        await uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning")).serve()
    return 0

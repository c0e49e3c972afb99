"""`temporal-ciba mcp-gateway`: an MCP gateway whose gated tool calls wait for a CIBA approval.

    temporal-ciba mcp-gateway --upstream "python server.py" --approver alice           (stdio)
    temporal-ciba mcp-gateway --upstream https://tools.internal/mcp --http 0.0.0.0:8808 \\
        --issuer https://op.example --audience mcp-gateway --approver-from-client

It runs a worker for the calls' workflows too (CIBA_* as for `temporal-ciba worker`), unless
`--no-worker`: then a worker elsewhere runs McpGatewayPlugin with the same upstream. Several
gateways may serve one URL; none keeps state of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from temporal_ciba._cli.errors import EXIT_OK, UsageError
from temporal_ciba._settings import OPSettings, WorkerSettings, load_settings

log = logging.getLogger("temporal_ciba.cli")


def add_parser(commands: Any) -> None:
    gateway = commands.add_parser(
        "mcp-gateway", help="serve MCP tools behind CIBA approvals (stdio, or streamable HTTP with --http)"
    )
    gateway.add_argument("--upstream", required=True, help="the upstream MCP server: a command line or an http(s) URL")
    who = gateway.add_mutually_exclusive_group(required=True)
    who.add_argument("--approver", metavar="LOGIN_HINT", help="who approves every gated call")
    who.add_argument(
        "--approver-from-client",
        action="store_true",
        help="the authenticated MCP client's subject approves its own calls, on its own device (HTTP)",
    )
    gateway.add_argument("--gate", action="append", metavar="TOOL", help="gate this tool (default: every tool)")
    gateway.add_argument("--pass", dest="passed", action="append", metavar="TOOL", help="let this tool through")
    gateway.add_argument("--requested-expiry", type=int, metavar="SECONDS", help="how long an approver has")
    gateway.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP here instead of stdio")
    gateway.add_argument("--issuer", help="the OAuth issuer whose access tokens authenticate HTTP clients")
    gateway.add_argument("--audience", action="append", help="the audience those tokens must carry")
    gateway.add_argument("--resource-url", help="this gateway's public URL (RFC 9728 metadata; default from --http)")
    gateway.add_argument("--no-worker", action="store_true", help="do not run a worker in this process")
    gateway.add_argument("--progress-interval", type=float, default=1.0, help=argparse.SUPPRESS)


def gateway_approval(args: argparse.Namespace) -> Any:
    from temporal_ciba.agents import ToolApproval
    from temporal_ciba.mcp import approver_is_client

    if args.approver_from_client:
        return ToolApproval(
            login_hint=approver_is_client, expected_subject=approver_is_client, requested_expiry=args.requested_expiry
        )
    return ToolApproval(login_hint=args.approver, requested_expiry=args.requested_expiry)


async def mcp_gateway(args: argparse.Namespace) -> int:
    """Serve the gateway (and its worker) until stopped."""
    try:
        from temporal_ciba.mcp import McpGateway, McpGatewayPlugin, OidcTokenVerifier, UpstreamServer
    except ImportError as exc:
        raise UsageError(f"the MCP gateway needs the extra: pip install 'temporal-ciba[mcp]' ({exc})") from None
    from temporal_ciba._cli.services import serve
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._programs.worker import run_worker

    if args.http and not (args.issuer and args.audience):
        raise UsageError("--http needs --issuer and --audience: HTTP clients authenticate with access tokens")
    if args.approver_from_client and not args.http:
        raise UsageError("--approver-from-client needs --http: over stdio the client is not authenticated")
    settings = load_settings(WorkerSettings)
    upstream = UpstreamServer.parse(args.upstream, env=dict(os.environ))
    approval = gateway_approval(args)
    passed = set(args.passed or ())
    if args.gate:
        gates = {tool: approval for tool in args.gate if tool not in passed}
        default = None
    else:
        gates, default = {}, approval
    gates = {**gates, **dict.fromkeys(passed)}  # a None gate: passed through

    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if not args.no_worker:
        plugin = McpGatewayPlugin(upstream=upstream, token_key=settings.token_key_bytes)
        tasks.append(asyncio.create_task(run_worker(load_settings(OPSettings), settings, plugins=[plugin], stop=stop)))
    client = await connect(settings.payload_key_bytes)
    gateway = McpGateway(
        client,
        task_queue=settings.task_queue,
        upstream=upstream,
        gates=gates,
        default_approval=default,
        progress_interval=args.progress_interval,
    )
    try:
        async with gateway:
            if not args.http:
                await gateway.run_stdio()
                return EXIT_OK
            host, _, port = args.http.rpartition(":")
            if not host or not port.isdigit():
                raise UsageError(f"--http {args.http!r}: give HOST:PORT")
            resource_url = args.resource_url or f"http://{host}:{port}/mcp"
            app = gateway.http_app(
                token_verifier=OidcTokenVerifier.for_issuer(args.issuer, args.audience),
                issuer=args.issuer,
                resource_url=resource_url,
                # The Host of the public URL and of loopback; any other is a DNS-rebinding page's.
                allowed_hosts=[urlsplit(resource_url).netloc, "127.0.0.1:*", "localhost:*", "[::1]:*"],
            )
            await serve(app, host=host, port=int(port), port_setting="--http", lifespan="on")
    finally:
        stop.set()
        for task in tasks:
            await task
    return EXIT_OK

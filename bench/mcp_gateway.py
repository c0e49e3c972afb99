"""What the MCP gateway adds to a tool call: ungated (pass-through) and gated beyond the approval.

    python -m bench.mcp_gateway [--calls 200] [--gated 20]

Real processes for the upstream MCP server (streamable HTTP, a subprocess of its own), the Temporal
dev server and the demo OP; the gateway (its HTTP app under uvicorn) and its worker run in this
process, with the official MCP client. Bearer tokens are checked by a verifier that accepts one
token (the issuer's JWT check, with its keys cached, is measured on its own).

- ungated: the median of a tools/call through the gateway, minus the median of the same call
  straight to the upstream over the same transport: the gateway's hop and its decision;
- gated: with the OP approving at once, the call's wall time minus its approval workflow's own
  (start to close, as the server records them): starting the call's workflow, the activity that
  calls the upstream, and reading the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken
from temporalio.client import Client
from temporalio.worker import Worker

from bench.run import ciba_client
from temporal_ciba import CibaPlugin, OPSettings, ensure_search_attributes
from temporal_ciba.agents import ToolApproval
from temporal_ciba.mcp import CALL_ID_META, McpGateway, McpGatewayPlugin, UpstreamServer
from temporal_ciba_examples.demo.servers import DevServer, free_port, run_demo_op

SECRET = "a-client-secret-of-some-length-0123456789"
KEY, TOKEN_KEY = os.urandom(32), os.urandom(32)
TOKEN = "bench-token"


def upstream(port: int, ledger: Path) -> None:
    """The upstream MCP server: `echo` (ungated) and `append_line` (gated)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool()
    def append_line(line: str) -> str:
        """Append a line."""
        with ledger.open("a") as file:
            file.write(line + "\n")
        return "appended"

    server.run("streamable-http", host="127.0.0.1", port=port)


class OneToken:
    async def verify_token(self, token: str) -> AccessToken | None:
        return AccessToken(token=token, client_id="bench", scopes=[], subject="alice") if token == TOKEN else None


async def timed_calls(url: str, name: str, arguments: dict[str, Any], count: int) -> list[float]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for _ in range(5):  # warm up
            await session.call_tool(name, arguments)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            result = await session.call_tool(name, arguments)
            times.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result
        return times


def jwt_check_ms(count: int = 500) -> float:
    """The access-token check alone (RS256 signature and claims), as OidcAccessTokens runs it."""
    key = rsa.generate_private_key(65537, 2048)
    now = int(time.time())
    token = jwt.encode(
        {"iss": "i", "aud": "a", "sub": "alice", "exp": now + 600}, key, algorithm="RS256", headers={"typ": "at+jwt"}
    )
    public = key.public_key()
    started = time.perf_counter()
    for _ in range(count):
        jwt.decode(
            token, public, algorithms=["RS256"], audience=["a"], issuer="i", options={"require": ["iss", "aud", "exp"]}
        )
    return (time.perf_counter() - started) * 1000 / count


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    while not server.started:
        await asyncio.sleep(0.05)
    return server, task, port


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    ledger = directory / "ledger.txt"
    up_port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "bench.mcp_gateway", "upstream", str(up_port), str(ledger)],
        stdout=(directory / "upstream.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    dev = DevServer(directory)
    dev.start()
    config = {
        "clients": [ciba_client("poll", mode="poll", client_secret=SECRET)],
        "accounts": {"alice": {"email": "alice@example.com"}},
        "ackInterval": 1,
        "testRoutes": True,
    }
    try:
        with run_demo_op(config) as op:
            up_url = f"http://127.0.0.1:{up_port}/mcp"
            for _ in range(100):
                try:
                    httpx.get(up_url, timeout=1)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            settings = OPSettings(issuer=op.issuer, client_id="poll", client_secret=SECRET)  # type: ignore[arg-type]
            plugin = CibaPlugin(payload_key=KEY, token_key=TOKEN_KEY, op=settings)
            client = await Client.connect(dev.address, plugins=[plugin])
            await ensure_search_attributes(client)
            task_queue = f"bench-mcp-{uuid.uuid4().hex[:6]}"
            upstream_server = UpstreamServer(url=up_url)
            gateway = McpGateway(
                client,
                task_queue=task_queue,
                upstream=upstream_server,
                gates={"echo": None, "append_line": ToolApproval(login_hint="alice")},
            )
            worker = Worker(
                client, task_queue=task_queue, plugins=[McpGatewayPlugin(upstream=upstream_server, token_key=TOKEN_KEY)]
            )
            async with worker, gateway:
                app = gateway.http_app(token_verifier=OneToken(), issuer=op.issuer, resource_url="http://x/mcp")
                server, serving, port = await serve(app)
                try:
                    gw_url = f"http://127.0.0.1:{port}/mcp"
                    direct = await timed_calls(up_url, "echo", {"text": "hello"}, args.calls)
                    through = await timed_calls(gw_url, "echo", {"text": "hello"}, args.calls)
                    gated = await gated_calls(client, op.issuer, gw_url, args.gated)
                finally:
                    server.should_exit = True
                    await serving
    finally:
        up.terminate()
        up.wait(timeout=10)
        dev.stop()
    results = {
        "ungated_direct_median_ms": statistics.median(direct),
        "ungated_gateway_median_ms": statistics.median(through),
        "ungated_added_median_ms": statistics.median(through) - statistics.median(direct),
        "gated_total_median_ms": statistics.median(t for t, _ in gated),
        "gated_approval_median_ms": statistics.median(a for _, a in gated),
        "gated_added_median_ms": statistics.median(t - a for t, a in gated),
        "access_token_check_ms": jwt_check_ms(),
        "calls": args.calls,
        "gated_calls": args.gated,
    }
    print(json.dumps(results, indent=2))
    return results


async def gated_calls(client: Client, issuer: str, url: str, count: int) -> list[tuple[float, float]]:
    """(the call's wall time, its approval workflow's own time), in ms, with the OP approving at once."""
    measured = []
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
        httpx.AsyncClient(base_url=issuer) as admin,
    ):
        await session.initialize()
        for _ in range(count):
            await admin.post("/admin/faults", json={"faults": [{"type": "approve_at_once"}]})
            call_id = f"bench-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            meta: Any = {CALL_ID_META: call_id}  # RequestParamsMeta: an open map
            result = await session.call_tool("append_line", {"line": call_id}, meta=meta)
            total = (time.perf_counter() - started) * 1000
            assert not result.is_error, result
            approval = None
            async for execution in client.list_workflows("WorkflowType = 'temporal-ciba.mcp.ToolCall'"):
                if call_id in execution.id:
                    approval = await client.get_workflow_handle(execution.id + ".approval").describe()
                    break
            assert approval is not None and approval.close_time is not None
            measured.append((total, (approval.close_time - approval.start_time).total_seconds() * 1000))
    return measured


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        upstream(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--calls", type=int, default=200)
        parser.add_argument("--gated", type=int, default=20)
        results = asyncio.run(main(parser.parse_args()))
        Path("bench/mcp_gateway_results.json").write_text(json.dumps(results, indent=2) + "\n")

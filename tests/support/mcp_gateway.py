"""The MCP gateway as the tests run it: real `temporal-ciba mcp-gateway` processes, the official
MCP client over stdio and streamable HTTP, and an OAuth issuer for the clients' access tokens.

The gateway fronts tests.support.mcp_upstream (a ledger tool); its gated calls are approved at the
session's test OP (tests.support.stack) and run on the gateway's own worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, clean_env, cli_command, examples_command
from tests.support.temporal import DevServer, free_port

REPO = Path(__file__).resolve().parents[2]
AUDIENCE = "mcp-gateway"


@dataclass
class AccessTokenIssuer:
    """A minimal OAuth issuer: its discovery document and keys, and RFC 9068 access tokens."""

    url: str
    key: Any

    def token(self, subject: str = "alice", *, typ: str = "at+jwt", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": subject,
            "client_id": "agent-app",
            "iat": now,
            "exp": now + 600,
            "scope": "mcp",
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1", "typ": typ})


@contextmanager
def access_token_issuer() -> Iterator[AccessTokenIssuer]:
    key = rsa.generate_private_key(65537, 2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    documents = {
        "/.well-known/openid-configuration": {
            "issuer": url,
            "token_endpoint": url + "/token",
            "jwks_uri": url + "/jwks",
        },
        "/jwks": {"keys": [jwk]},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = documents.get(self.path)
            body = json.dumps(document).encode()
            self.send_response(200 if document else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield AccessTokenIssuer(url, key)
    finally:
        server.shutdown()
        server.server_close()


def upstream_command(ledger: Path) -> str:
    return f"{sys.executable} -m tests.support.mcp_upstream {ledger}"


def gateway_env(server: DevServer, op: TestOP, task_queue: str) -> dict[str, str]:
    return clean_env(
        TEMPORAL_ADDRESS=server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=task_queue,
        PYTHONPATH=str(REPO),
        CIBA_LOG_LEVEL="INFO",
    )


def gateway_arguments(ledger: Path, *more: str) -> list[str]:
    return [
        "mcp-gateway",
        "--upstream",
        upstream_command(ledger),
        "--pass",
        "read_ledger",
        "--progress-interval",
        "0.2",
        *more,
    ]


@dataclass
class HttpGateway:
    """One `temporal-ciba mcp-gateway --http` replica."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_http_gateway(
    server: DevServer,
    op: TestOP,
    issuer: AccessTokenIssuer,
    ledger: Path,
    task_queue: str,
    directory: Path,
    *more: str,
) -> HttpGateway:
    port = free_port()
    log = directory / f"gateway-{port}.log"
    arguments = gateway_arguments(
        ledger,
        "--http",
        f"127.0.0.1:{port}",
        "--issuer",
        issuer.url,
        "--audience",
        AUDIENCE,
        "--approver-from-client",
        *more,
    )
    process = subprocess.Popen(
        cli_command(*arguments),
        env=gateway_env(server, op, task_queue),
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.post(url, timeout=1).status_code == 401:  # up, and asking for a token
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the MCP gateway did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    return HttpGateway(url, process, log)


@asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """The official MCP client over streamable HTTP, with this bearer token."""
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def stdio_session(
    server: DevServer, op: TestOP, ledger: Path, task_queue: str, *more: str, errlog: Any = None
) -> AsyncIterator[ClientSession]:
    """The official MCP client over stdio, running the gateway as its local server process."""
    command = cli_command(*gateway_arguments(ledger, *more))
    parameters = StdioServerParameters(
        command=command[0], args=command[1:], env=gateway_env(server, op, task_queue), cwd=str(REPO)
    )
    async with (
        stdio_client(parameters, errlog=errlog or sys.stderr) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def new_task_queue() -> str:
    return f"mcp-test-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def maintenance_sample_session(
    server: DevServer, op: TestOP, ledger: Path, task_queue: str, approver: str
) -> AsyncIterator[ClientSession]:
    """The sample examples/mcp_gateway over stdio, as a desktop MCP client starts it."""
    command = examples_command("mcp-maintenance", "--approver", approver)
    env = {**gateway_env(server, op, task_queue), "CIBA_TOOL_LEDGER": str(ledger)}
    parameters = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(REPO))
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session

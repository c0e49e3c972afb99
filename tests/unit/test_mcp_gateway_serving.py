"""How the MCP gateway serves, in the test process: its streamable HTTP app and its stdio server.

The HTTP app over ASGI (its lifespan entered, no socket): stateless at its path, behind bearer
authentication with the resource's metadata (RFC 9728), the scopes it requires, its body limit,
and the Host and Origin checks against DNS rebinding. The stdio server over in-memory streams in
place of the process's stdin and stdout, with an MCP client session. A recording stand-in for the
Temporal client starts nothing.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import mcp.server.stdio
import pytest
from mcp import ClientSession
from mcp.server.auth.provider import AccessToken
from mcp.shared.memory import create_client_server_memory_streams
from pydantic import BaseModel

from temporal_ciba.agents import ToolApproval
from temporal_ciba.mcp import McpClient, McpGateway, McpToolCallResult, OwnTool

ISSUER = "https://login.example"
RESOURCE = "https://gw.example/tools"
# The scopes each token this verifier knows carries.
TOKENS = {"plain": [], "scoped": ["tools:call"]}
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}


class KnownTokens:
    """A token verifier that knows the tokens of TOKENS, each for the subject alice."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if token not in TOKENS:
            return None
        return AccessToken(
            token=token, client_id="agent-app", scopes=TOKENS[token], subject="alice", claims={"iss": ISSUER}
        )


class Note(BaseModel):
    """Append a note."""

    text: str


class Recorder:
    """Starts nothing: records each gated call, whose handle answers at once."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    async def start_workflow(self, run: Any, call: Any, *, id: str, **options: Any) -> Any:
        self.started.append(call)

        class Handle:
            async def result(self) -> McpToolCallResult:
                return McpToolCallResult(result={"content": [{"type": "text", "text": "noted"}]})

        handle = Handle()
        handle.id = id  # type: ignore[attr-defined]
        return handle


def gateway(recorder: Recorder) -> McpGateway:
    note = OwnTool(name="note", activity="notes.append", approval=ToolApproval(login_hint="alice"), parameters=Note)
    return McpGateway(recorder, task_queue="q", own_tools=[note])  # type: ignore[arg-type]


@asynccontextmanager
async def serving(app: Any, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app` (its lifespan running), whose requests name `host`."""
    ready, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        # The transport's task group is entered and left in this one task (anyio requires it).
        async with app.router.lifespan_context(app):
            ready.set()
            await stop.wait()

    running = asyncio.create_task(lifespan())
    await ready.wait()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}") as client:
            yield client
    finally:
        stop.set()
        await running


def call_note(text: str = "hi") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "note", "arguments": {"text": text}}}


def bearer(token: str) -> dict[str, str]:
    return {**HEADERS, "authorization": f"Bearer {token}"}


def http_app(recorder: Recorder, **options: Any) -> Any:
    """The gateway's app as a deployment builds it; building it warns nothing."""
    with warnings.catch_warnings():
        # The verifier checks the token's audience itself, and the app says so to the SDK (which
        # warns when told nothing).
        warnings.simplefilter("error")
        return gateway(recorder).http_app(token_verifier=KnownTokens(), issuer=ISSUER, resource_url=RESOURCE, **options)


async def test_the_http_app_serves_each_request_alone_at_its_path_for_the_token_s_client() -> None:
    """Stateless: a call needs no session (any replica serves any request); the caller is the
    token's subject, client and issuer."""
    recorder = Recorder()
    app = http_app(recorder, path="/tools", allowed_hosts=["gw.example"])
    async with serving(app, "gw.example") as http:
        response = await http.post("/tools", json=call_note(), headers=bearer("plain"))
        assert response.status_code == 200, response.text
        assert "noted" in response.text and "mcp-session-id" not in response.headers
        assert (await http.post("/mcp", json=call_note(), headers=bearer("plain"))).status_code == 404
    [started] = recorder.started
    assert started.client == McpClient(subject="alice", client_id="agent-app", issuer=ISSUER)
    assert started.arguments == {"text": "hi"}


async def test_a_request_without_a_known_token_is_a_401_pointing_at_the_resource_s_metadata() -> None:
    recorder = Recorder()
    app = http_app(recorder, path="/tools", allowed_hosts=["gw.example"])
    async with serving(app, "gw.example") as http:
        for headers in (HEADERS, bearer("unknown")):
            response = await http.post("/tools", json=call_note(), headers=headers)
            assert response.status_code == 401
            metadata_url = "https://gw.example/.well-known/oauth-protected-resource/tools"
            assert f'resource_metadata="{metadata_url}"' in response.headers["www-authenticate"]
        metadata = await http.get("/.well-known/oauth-protected-resource/tools")
    assert metadata.status_code == 200
    document = metadata.json()
    assert (document["resource"], document["authorization_servers"]) == (RESOURCE, [ISSUER])
    assert "scopes_supported" not in document  # no scope required
    assert recorder.started == []


async def test_a_token_without_a_required_scope_is_a_403() -> None:
    recorder = Recorder()
    app = http_app(recorder, path="/tools", allowed_hosts=["gw.example"], required_scopes=["tools:call"])
    async with serving(app, "gw.example") as http:
        refused = await http.post("/tools", json=call_note(), headers=bearer("plain"))
        served = await http.post("/tools", json=call_note(), headers=bearer("scoped"))
        metadata = (await http.get("/.well-known/oauth-protected-resource/tools")).json()
    assert (refused.status_code, served.status_code) == (403, 200)
    assert metadata["scopes_supported"] == ["tools:call"]
    assert len(recorder.started) == 1


async def test_a_body_over_the_limit_is_a_413() -> None:
    recorder = Recorder()
    app = http_app(recorder, path="/tools", allowed_hosts=["gw.example"], max_body_bytes=1024)
    async with serving(app, "gw.example") as http:
        response = await http.post("/tools", json=call_note("x" * 1024), headers=bearer("plain"))
        fits = await http.post("/tools", json=call_note("x" * 900), headers=bearer("plain"))
    assert (response.status_code, fits.status_code) == (413, 200)
    assert len(recorder.started) == 1


async def test_another_host_or_any_origin_is_refused() -> None:
    """DNS rebinding: a request naming a host not allowed is a 421, and one a browser page sends
    (any Origin: no origin is allowed) a 403."""
    recorder = Recorder()
    app = http_app(recorder, path="/tools", allowed_hosts=["gw.example"])
    async with serving(app, "attacker.example") as http:
        other_host = await http.post("/tools", json=call_note(), headers=bearer("plain"))
    async with serving(http_app(recorder, path="/tools", allowed_hosts=["gw.example"]), "gw.example") as http:
        page = await http.post("/tools", json=call_note(), headers={**bearer("plain"), "origin": "https://gw.example"})
    assert (other_host.status_code, page.status_code) == (421, 403)
    assert recorder.started == []


async def test_without_allowed_hosts_only_the_local_hosts_are_served() -> None:
    """The SDK's default for a server on this machine: localhost, 127.0.0.1 and [::1], any port."""
    recorder = Recorder()
    async with serving(http_app(recorder), "gw.example") as http:
        remote = await http.post("/mcp", json=call_note(), headers=bearer("plain"))
    async with serving(http_app(recorder), "127.0.0.1:8808") as http:
        local = await http.post("/mcp", json=call_note(), headers=bearer("plain"))
    assert (remote.status_code, local.status_code) == (421, 200)
    assert len(recorder.started) == 1


async def test_run_stdio_serves_the_gateway_over_the_process_s_streams_for_the_local_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    gw = gateway(recorder)
    async with create_client_server_memory_streams() as (client_streams, server_streams):

        @asynccontextmanager
        async def stdio_server() -> AsyncIterator[Any]:
            yield server_streams

        # run_stdio imports it when it runs: in-memory streams in place of stdin and stdout.
        monkeypatch.setattr(mcp.server.stdio, "stdio_server", stdio_server)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gw.run_stdio)
            async with ClientSession(*client_streams) as session:
                initialized = await session.initialize()
                listed = await session.list_tools()
                result = await session.call_tool("note", {"text": "hi"})
            await client_streams[1].aclose()  # the client closes its end: the server returns
    assert initialized.server_info.name == "temporal-ciba-mcp-gateway"
    assert [tool.name for tool in listed.tools] == ["note"]
    assert not result.is_error and [block.text for block in result.content] == ["noted"]  # type: ignore[union-attr]
    [started] = recorder.started
    assert started.client == McpClient(transport="stdio")

"""The MCP gateway's HTTP endpoint under hostile input: never a 5xx, never a workflow for garbage.

The gateway's ASGI app (its streamable HTTP transport, stateless, behind bearer authentication)
in process, with a token verifier that knows one token and a Temporal stand-in that records what
would be started: bodies that are not JSON, invalid UTF-8, lone surrogates, huge numbers, deep
nesting and oversized bodies are answered 4xx (or a JSON-RPC error in a 200), never 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.auth.provider import AccessToken
from pydantic import BaseModel, Field

from temporal_ciba.agents import ToolApproval
from temporal_ciba.mcp import McpGateway, McpToolCallResult, OwnTool

TOKEN = "the-one-good-token"
MAX_BODY = 64 * 1024
HEADERS = {
    "authorization": f"Bearer {TOKEN}",
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}


class OneToken:
    async def verify_token(self, token: str) -> AccessToken | None:
        return AccessToken(token=token, client_id="c", scopes=[], subject="alice") if token == TOKEN else None


class Line(BaseModel):
    """Append a line."""

    line: str = Field(max_length=100)


class Handle:
    id = "w"

    async def result(self) -> McpToolCallResult:
        return McpToolCallResult(result={"content": [{"type": "text", "text": "ok"}]})


class Recorder:
    def __init__(self) -> None:
        self.started: list[Any] = []

    async def start_workflow(self, run: Any, call: Any, **options: Any) -> Handle:
        self.started.append(call)
        return Handle()


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
async def http(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    tool = OwnTool(
        name="append_line", activity="append_line", approval=ToolApproval(login_hint="alice"), parameters=Line
    )
    gateway = McpGateway(recorder, task_queue="q", own_tools=[tool])  # type: ignore[arg-type]
    app = gateway.http_app(
        token_verifier=OneToken(),
        issuer="http://127.0.0.1:1",
        resource_url="http://127.0.0.1:2/mcp",
        max_body_bytes=MAX_BODY,
    )
    ready, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        # The transport's task group is entered and left in this one task (anyio requires it).
        async with app.router.lifespan_context(app):
            ready.set()
            await stop.wait()

    running = asyncio.create_task(lifespan())
    await ready.wait()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8808"
        ) as client:
            yield client
    finally:
        stop.set()
        await running


def rpc(method: str, params: Any, id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


async def test_a_well_formed_call_is_served(http: httpx.AsyncClient, recorder: Recorder) -> None:
    before = len(recorder.started)
    response = await http.post(
        "/mcp", json=rpc("tools/call", {"name": "append_line", "arguments": {"line": "x"}}), headers=HEADERS
    )
    assert response.status_code == 200, response.text
    assert "ok" in response.text and len(recorder.started) == before + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=4096))
async def test_any_bytes_are_a_4xx_or_an_answer_never_a_5xx(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post("/mcp", content=body, headers=HEADERS)
    assert response.status_code < 500, (body, response.status_code, response.text)
    try:
        json.loads(body)
    except ValueError:
        assert 400 <= response.status_code < 500


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec=None, exclude_categories=[]), max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=JSON_VALUES, name=st.sampled_from(["append_line", "nope", ""]) | st.text(max_size=20))
async def test_hostile_arguments_start_no_workflow_unless_valid_and_never_5xx(
    http: httpx.AsyncClient, recorder: Recorder, arguments: Any, name: str
) -> None:
    # ensure_ascii writes a lone surrogate as a \\ud800 escape: valid JSON, invalid Unicode.
    body = json.dumps(rpc("tools/call", {"name": name, "arguments": arguments}), ensure_ascii=True)
    before = len(recorder.started)
    response = await http.post("/mcp", content=body, headers=HEADERS)
    assert response.status_code < 500, (body[:300], response.status_code, response.text[:300])
    valid = name == "append_line" and isinstance(arguments, dict) and set(arguments) == {"line"}
    if not valid:
        assert len(recorder.started) == before


async def test_invalid_utf_8_inside_json_is_a_4xx(http: httpx.AsyncClient) -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"append_line","arguments":{"line":"\xff\xfe"}}}'
    )
    response = await http.post("/mcp", content=body, headers=HEADERS)
    assert 400 <= response.status_code < 500


async def test_an_oversized_body_is_413(http: httpx.AsyncClient, recorder: Recorder) -> None:
    before = len(recorder.started)
    line = "x" * (MAX_BODY + 1)
    response = await http.post(
        "/mcp", json=rpc("tools/call", {"name": "append_line", "arguments": {"line": line}}), headers=HEADERS
    )
    assert response.status_code == 413 and len(recorder.started) == before


async def test_huge_declared_lengths_and_nesting_are_4xx(http: httpx.AsyncClient) -> None:
    response = await http.post("/mcp", content=b"{}", headers={**HEADERS, "content-length": "9" * 30})
    assert 400 <= response.status_code < 500
    deep = "[" * 5000 + "]" * 5000
    response = await http.post("/mcp", content=deep.encode(), headers=HEADERS)
    assert 400 <= response.status_code < 500


async def test_without_the_token_every_request_is_401(http: httpx.AsyncClient, recorder: Recorder) -> None:
    before = len(recorder.started)
    body = rpc("tools/call", {"name": "append_line", "arguments": {"line": "x"}})
    for authorization in (None, "Bearer wrong", "Basic abc", f"Bearer {TOKEN}x"):
        headers = {name: value for name, value in HEADERS.items() if name != "authorization"}
        if authorization:
            headers["authorization"] = authorization
        response = await http.post("/mcp", json=body, headers=headers)
        assert response.status_code == 401
        assert "resource_metadata" in response.headers.get("www-authenticate", "")
    assert len(recorder.started) == before

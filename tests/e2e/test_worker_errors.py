"""Mistakes made when starting `temporal-ciba worker`, each one line on stderr and exit 2.

A namespace it may not add search attributes to, an unknown namespace, a port already in use (for
the services that listen)."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import subprocess
import uuid
from typing import Any

import pytest
from temporalio.service import OperatorService, RPCError, RPCStatusCode

from temporal_ciba import _cli as cli
from temporal_ciba._programs.connect import connect
from temporal_ciba._search_attributes import ensure_search_attributes
from tests.support.cli import cli_env, one_line, run_cli
from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, cli_command
from tests.support.temporal import DevServer, temporal_cli


async def denied(*args: Any, **kwargs: Any) -> None:
    """What a server with an authorizer answers a caller without the admin role."""
    raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")


def worker_environment(monkeypatch: pytest.MonkeyPatch, server: DevServer, namespace: str) -> None:
    for name, value in cli_env(server, "ciba-approvals", TEMPORAL_NAMESPACE=namespace).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CIBA_TOKEN_KEY", TOKEN_KEY)
    monkeypatch.setenv("CIBA_ISSUER", "http://127.0.0.1:9")
    monkeypatch.setenv("CIBA_CLIENT_ID", "demo-agent")
    monkeypatch.setenv("CIBA_CLIENT_SECRET", "unused-secret")


def new_namespace(server: DevServer) -> str:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    temporal = [temporal_cli(), "operator", "--address", server.address]
    subprocess.run([*temporal, "namespace", "create", "--namespace", namespace], check=True, capture_output=True)
    return namespace


def test_a_worker_that_may_not_add_search_attributes(
    temporal_server: DevServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The dev server has no authorizer; the denial comes where a real server's would, in
    # answer to AddSearchAttributes (everything else goes to the real server).
    namespace = new_namespace(temporal_server)
    worker_environment(monkeypatch, temporal_server, namespace)
    monkeypatch.setattr(OperatorService, "add_search_attributes", denied)
    assert cli.run(["worker"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"temporal-ciba worker: namespace '{namespace}' lacks search attributes ")
    assert "may not add them (PERMISSION_DENIED: Request unauthorized.)" in line

    # The command the line names registers them; the worker then needs no permission.
    command = re.search(r"`(temporal operator search-attribute create [^`]+)`", line)
    assert command is not None
    arguments = command.group(1).split()[1:]
    result = subprocess.run(
        [temporal_cli(), *arguments, "--address", temporal_server.address], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr

    async def nothing_to_add() -> list[str]:
        client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=temporal_server.address, namespace=namespace)
        return await ensure_search_attributes(client)

    assert asyncio.run(nothing_to_add()) == []


def test_a_worker_on_an_unknown_namespace(
    temporal_server: DevServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worker_environment(monkeypatch, temporal_server, "nope")
    assert cli.run(["worker"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "nope" in line and "TEMPORAL_NAMESPACE" in line


async def test_a_service_port_already_in_use(temporal_server: DevServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env(temporal_server, "unused", CIBA_CODEC_PORT=str(port), CIBA_CODEC_OPERATOR_TOKENS="o" * 40)
        code, stdout, stderr = await run_cli(env, "codec-server")
    assert code == 2 and stdout == ""
    line = one_line(stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line and "CIBA_CODEC_PORT" in line


def worker_process_env(server: DevServer, issuer: str) -> dict[str, str]:
    return cli_env(
        server,
        f"start-check-{uuid.uuid4().hex[:8]}",
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_ISSUER=issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
    )


async def test_an_issuer_that_is_not_the_ops_exactly_stops_the_worker_naming_the_value_to_set(
    temporal_server: DevServer, op: TestOP
) -> None:
    """`CIBA_ISSUER=http://op/` for an OP whose issuer is `http://op`: said at start, not at the first request.

    The issuer is compared with the OP's own discovery document (OIDC Discovery §4.3), not
    normalized: an issuer may end in a slash (Auth0's do)."""
    code, _, stderr = await run_cli(worker_process_env(temporal_server, op.issuer + "/"), "worker")
    assert code == 2, stderr
    line = one_line(stderr)
    assert line.startswith(f"temporal-ciba worker: CIBA_ISSUER={op.issuer}/ is not the issuer the OP names"), line
    assert line.endswith(f"set CIBA_ISSUER={op.issuer}")


async def test_an_op_down_at_start_is_said_once_and_requests_retry_without_a_traceback(
    temporal_server: DevServer,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = worker_process_env(temporal_server, issuer)
    process = await asyncio.create_subprocess_exec(
        *cli_command("worker"), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []

    async def line_with(text: str) -> str:
        assert process.stderr is not None
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "".join(seen)
            seen.append(line)
            if text in line:
                return line

    try:
        unreachable = await asyncio.wait_for(line_with("is unreachable"), 60)
        assert f"the OP at CIBA_ISSUER={issuer} is unreachable" in unreachable
        # It starts anyway: the approval it is asked for is sent, and sent again.
        code, stdout, stderr = await run_cli(env, "request", "--login-hint", "alice", "--binding-message", "Reset bob")
        assert code == 0, stderr
        await asyncio.wait_for(line_with("attempt 2, retrying"), 60)  # the request is retried
        await asyncio.wait_for(line_with("attempt 3, retrying"), 60)
        # Each retry waits on a timer between workflow tasks, not inside the task that sent the
        # request: held there, the backoffs made it last past the SDK's 5 s warning.
        client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=temporal_server.address)
        history = await client.get_workflow_handle(stdout.split()[0]).fetch_history()
        assert any(event.HasField("timer_started_event_attributes") for event in history.events)
    finally:
        process.terminate()
        rest = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
        await process.wait()
    output = "".join(seen) + rest
    assert "Traceback" not in output, output
    assert sum("CIBA_ISSUER" in line for line in output.splitlines()) == 1, output

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
from tests.support.stack import PAYLOAD_KEY, TOKEN_KEY
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

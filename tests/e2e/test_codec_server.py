"""The codec server decodes real history payloads for an authenticated operator holding the key.

Only for the Temporal UI's origin, and never with another key: the real program
(`temporal-ciba codec-server`) as its own process. (Attacks on it:
tests/security/test_codec_server.py.)"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._settings import WorkerSettings
from tests.support.codec_server import start_codec_server, wait_for_port
from tests.support.flows import pending_auth_req_id, start_approval
from tests.support.stack import PAYLOAD_KEY
from tests.support.temporal import free_port

UI = "http://localhost:8233"
OPERATOR_TOKEN = base64.urlsafe_b64encode(os.urandom(32)).decode()


def running_codec_server(directory: Path, payload_key: str) -> Iterator[str]:
    """`temporal-ciba codec-server` as its own process, /encode on, for the UI's origin."""
    port = free_port()
    log = directory / f"codec-server-{port}.log"
    process = start_codec_server(
        log,
        CIBA_PAYLOAD_KEY=payload_key,
        CIBA_CODEC_PORT=str(port),
        CIBA_CODEC_OPERATOR_TOKENS=OPERATOR_TOKEN,
        CIBA_CODEC_CORS_ORIGINS=UI,
        CIBA_CODEC_ALLOW_ENCODE="true",
    )
    try:
        wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def codec_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_codec_server(tmp_path_factory.mktemp("codec"), PAYLOAD_KEY)


@pytest.fixture(scope="module")
def wrong_key_codec_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_codec_server(tmp_path_factory.mktemp("codec"), base64.b64encode(os.urandom(32)).decode())


def client_for(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=10)


async def test_decodes_history_payloads(
    temporal_client: Client, worker: WorkerSettings, codec_url: str, wrong_key_codec_url: str
) -> None:
    handle = await start_approval(
        temporal_client, worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Decode me")
    )
    await pending_auth_req_id(handle)
    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    body = json_format.MessageToJson(started.input)
    assert b"Decode me" not in started.input.SerializeToString()

    async with client_for(codec_url) as codec:
        response = await codec.post(
            "/decode", content=body, headers={"content-type": "application/json", "x-namespace": "default"}
        )
        assert response.status_code == 200
        decoded = json_format.ParseDict(response.json(), Payloads())
        assert b"Decode me" in decoded.payloads[0].data
        # Encoding again and decoding gives the same payload back.
        encoded = await codec.post("/encode", content=response.content)
        again = await codec.post("/decode", content=encoded.content)
        assert json_format.ParseDict(again.json(), Payloads()) == decoded

    async with client_for(wrong_key_codec_url) as wrong:
        refused = await wrong.post("/decode", content=body)
        assert refused.status_code == 400 and "key" in refused.json()["error"]
    await handle.cancel()


async def test_cors_only_for_the_ui_origin(codec_url: str) -> None:
    async with client_for(codec_url) as codec:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-namespace",
        }
        # The preflight carries no token (browsers never send one on OPTIONS).
        del codec.headers["authorization"]
        allowed = await codec.options("/decode", headers={"origin": UI, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == UI
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = await codec.options("/decode", headers={"origin": "https://evil.example", **preflight})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        codec.headers["authorization"] = f"Bearer {OPERATOR_TOKEN}"
        malformed = await codec.post("/decode", content=b"{not json", headers={"origin": UI})
        assert malformed.status_code == 400

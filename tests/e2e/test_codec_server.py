"""The codec server decodes real history payloads for an authenticated operator holding the key,
for the Temporal UI's origin only, and cannot decode with another key. (Attacks on it, through the
real process: tests/security/test_codec_server.py.)"""

from __future__ import annotations

import base64
import os

import httpx
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client

from temporal_ciba.crypto.codec import AesGcmCodec
from temporal_ciba.models import ApprovalRequest
from temporal_ciba.programs.codec_server import CodecAuth, create_codec_app
from temporal_ciba.settings import WorkerSettings
from tests.e2e.conftest import PAYLOAD_KEY
from tests.e2e.test_approval_workflow import pending_auth_req_id, start_approval

UI = "http://localhost:8233"
OPERATOR_TOKEN = base64.urlsafe_b64encode(os.urandom(32)).decode()


def client_for(key: bytes, *, allow_encode: bool = True) -> httpx.AsyncClient:
    app = create_codec_app(
        AesGcmCodec(key), auth=CodecAuth([OPERATOR_TOKEN]), cors_origins=[UI], allow_encode=allow_encode
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1:8081",
        headers={"authorization": f"Bearer {OPERATOR_TOKEN}"},
    )


async def test_decodes_history_payloads(temporal_client: Client, worker: WorkerSettings) -> None:
    handle = await start_approval(
        temporal_client, worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Decode me")
    )
    await pending_auth_req_id(handle)
    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    body = json_format.MessageToJson(started.input)
    assert b"Decode me" not in started.input.SerializeToString()

    async with client_for(base64.b64decode(PAYLOAD_KEY)) as codec:
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

    async with client_for(os.urandom(32)) as wrong:
        refused = await wrong.post("/decode", content=body)
        assert refused.status_code == 400 and "key" in refused.json()["error"]
    await handle.cancel()


async def test_cors_only_for_the_ui_origin() -> None:
    async with client_for(os.urandom(32)) as codec:
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

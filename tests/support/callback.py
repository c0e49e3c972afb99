"""Notifications to the callback service as the OP sends them, with bearer tokens the tests issue."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._settings import WorkerSettings
from temporal_ciba.crypto._notification import NotificationTokens
from tests.support.flows import pending_auth_req_id, start_approval
from tests.support.stack import TOKEN_KEY, TlsFiles

TOKENS = NotificationTokens(base64.b64decode(TOKEN_KEY))


def token_for(handle: WorkflowHandle, tokens: NotificationTokens = TOKENS) -> str:
    """A valid notification token for this approval (tokens are not stored: any we issue works)."""
    assert handle.first_execution_run_id is not None
    return tokens.issue(handle.id, handle.first_execution_run_id)


@pytest.fixture
async def waiting(temporal_client: Client, ping_worker: WorkerSettings) -> AsyncIterator[tuple[WorkflowHandle, str]]:
    """A ping-mode approval waiting for its ping, and its auth_req_id."""
    request = ApprovalRequest(login_hint="bob", binding_message="Grant admin rights to bob")
    handle = await start_approval(temporal_client, ping_worker.task_queue, request)
    auth_req_id = await pending_auth_req_id(handle)
    yield handle, auth_req_id
    await handle.cancel()


async def post(
    url: str,
    tls: TlsFiles,
    *,
    body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(tls.ca)), timeout=10) as http:
        return await http.request(method, url, json=body, content=content, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def events(handle: WorkflowHandle) -> int:
    return len((await handle.fetch_history()).events)

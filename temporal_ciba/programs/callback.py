"""The callback service: receives the OP's ping (CIBA §10.2) and push (§10.3) notifications
and wakes the waiting workflow with a signal.

    temporal-ciba callback      (CIBA_CALLBACK_* settings; HTTPS unless told otherwise)

Stateless: the bearer token names the waiting approval (workflow id and first run id),
encrypted and authenticated (temporal_ciba.crypto.notification), so replicas need no shared database.
A request is answered:

- 401 (and no workflow is looked up) when the bearer is missing or not one we issued;
- 4xx for a wrong method, content type, an oversized or malformed body;
- 401 when the bearer is ours but was not sent with this auth_req_id: it names another run
  chain (an earlier approval under the same workflow id), or the workflow's CibaAuthReqId
  differs. That only reads the workflow's description (waiting up to 2 s for a workflow that
  has not recorded its auth_req_id yet);
- 204 once the signal is recorded: a ping (`notify`) or a push (`deliver`, tokens sealed).
  Temporal keeps the signal while no worker runs, so a notification is never lost; duplicates
  are harmless (the workflow polls at most once more). A notification for an approval that
  has already ended is answered 204 and changes nothing.

Never a 3xx, never a 5xx for bad input (503 only when Temporal itself is unreachable).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from temporal_ciba.ciba import ProtocolError
from temporal_ciba.ciba.token import parse_token_response
from temporal_ciba.crypto.notification import NotificationTokens
from temporal_ciba.crypto.sealing import TokenSealer, tokens_context
from temporal_ciba.models import PingNotice, PushDelivery
from temporal_ciba.search_attributes import CIBA_AUTH_REQ_ID

logger = logging.getLogger("temporal_ciba.programs.callback")
DEFAULT_MAX_BODY_BYTES = 64 * 1024
AUTH_REQ_ID_WAIT_SECONDS = 2.0


class BodyTooLarge(Exception):
    pass


def _problem(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _unauthorized(description: str) -> Response:
    return _problem(401, "invalid_token", description, {"www-authenticate": 'Bearer error="invalid_token"'})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _push_delivery(auth_req_id: str, body: dict[str, Any], sealer: TokenSealer) -> PushDelivery | None:
    """CIBA §10.3.1 (tokens) or §12 (error) as a PushDelivery; None when the body is neither."""
    if "error" in body:
        error, description = body.get("error"), body.get("error_description")
        if not isinstance(error, str) or not error or len(error) > 64:
            return None
        return PushDelivery(
            auth_req_id=auth_req_id,
            error=error,
            error_description=description[:200] if isinstance(description, str) else None,
        )
    try:
        tokens = parse_token_response({k: v for k, v in body.items() if k != "auth_req_id"})
    except ProtocolError:
        return None
    sealed = sealer.seal(tokens.model_dump_json(), context=tokens_context(auth_req_id))
    return PushDelivery(auth_req_id=auth_req_id, sealed_tokens=sealed)


async def _describe_with_auth_req_id(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionDescription:
    """The workflow's description, once it has recorded its auth_req_id.

    The OP may notify within milliseconds of its acknowledgement (an automated approver),
    before the workflow task that records CibaAuthReqId has run; wait for it briefly (well
    inside oidc-provider's 2.5 s ping timeout) instead of refusing a genuine ping.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + AUTH_REQ_ID_WAIT_SECONDS
    while True:
        description = await handle.describe()
        recorded = description.typed_search_attributes.get(CIBA_AUTH_REQ_ID) is not None
        if recorded or description.status != WorkflowExecutionStatus.RUNNING or loop.time() >= deadline:
            return description
        await asyncio.sleep(0.05)


def create_callback_app(
    client: Client,
    notification_tokens: NotificationTokens,
    sealer: TokenSealer,
    *,
    path: str = "/ciba/notify",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    async def notification(request: Request) -> Response:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            return _problem(401, "invalid_request", "a bearer token is required", {"www-authenticate": "Bearer"})
        approval = notification_tokens.open(bearer.strip())
        if approval is None:
            return _unauthorized("unknown bearer token")

        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return _problem(415, "invalid_request", "the body must be application/json")
        try:
            body = json.loads(await _read_body(request, max_body_bytes))
        except BodyTooLarge:
            return _problem(413, "invalid_request", f"the body is larger than {max_body_bytes} bytes")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
            return _problem(400, "invalid_request", "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("auth_req_id"), str) or not body["auth_req_id"]:
            return _problem(400, "invalid_request", "the body must be a JSON object with an auth_req_id")
        auth_req_id: str = body["auth_req_id"]

        handle = client.get_workflow_handle(approval.workflow_id)
        try:
            description = await _describe_with_auth_req_id(handle)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return _unauthorized("unknown bearer token")
            logger.error("Temporal unavailable while verifying a notification: %s", exc.message)
            return _problem(503, "temporarily_unavailable", "try again later", {"retry-after": "1"})
        # The bearer names a run chain; an earlier approval under the same workflow id is another.
        first_run_id = description.raw_description.workflow_execution_info.first_run_id
        if not hmac.compare_digest(first_run_id.encode(), approval.first_run_id.encode()):
            return _unauthorized("the bearer token belongs to another approval")
        expected = description.typed_search_attributes.get(CIBA_AUTH_REQ_ID)
        if expected is None or not hmac.compare_digest(expected.encode(), auth_req_id.encode()):
            return _unauthorized("the bearer token was not sent with this auth_req_id")
        if description.status != WorkflowExecutionStatus.RUNNING:
            return Response(status_code=204)  # the approval has ended; nothing to wake

        push = "access_token" in body or "error" in body
        try:
            if push:
                delivery = _push_delivery(auth_req_id, body, sealer)
                if delivery is None:
                    return _problem(400, "invalid_request", "not a CIBA push body (CIBA §10.3.1, §12)")
                await handle.signal("deliver", delivery)
            else:
                await handle.signal("notify", PingNotice(auth_req_id=auth_req_id))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # it ended between describe and signal
                return Response(status_code=204)
            logger.error("Temporal unavailable while signalling %s: %s", approval.workflow_id, exc.message)
            return _problem(503, "temporarily_unavailable", "try again later", {"retry-after": "1"})
        logger.info(
            "%s for auth_req_id=%s delivered to %s", "push" if push else "ping", auth_req_id, approval.workflow_id
        )
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route(path, notification, methods=["POST"]), Route("/healthz", health, methods=["GET"])])
    # CIBA §10.2: the client must never answer with a redirect, not even for a trailing slash.
    app.router.redirect_slashes = False
    return app

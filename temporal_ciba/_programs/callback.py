"""The callback service: the OP's notifications, delivered to the waiting workflow as signals.

It receives the OP's ping (CIBA §10.2) and push (§10.3) notifications and wakes the waiting
workflow with a signal.

    temporal-ciba callback      (CIBA_CALLBACK_* settings; HTTPS unless told otherwise)

Stateless: the bearer token names the waiting approval (workflow id and first run id),
encrypted and authenticated (temporal_ciba.crypto._notification), so replicas need no shared database.
A request is answered:

- 401 (and no workflow is looked up) when the bearer is missing or not one we issued; each such
  refusal is logged (a warning naming the likely cause and the fix, never the token), at most
  one line per cause per REFUSAL_LOG_INTERVAL seconds;
- 4xx for a wrong method, content type, an oversized or malformed body: the body must be
  I-JSON (RFC 7493: UTF-8, no lone surrogates, no NaN or Infinity, no number beyond 2**53, no
  duplicate member names). It is read only after the bearer is verified, and only up to the
  size limit (413 as soon as it is passed, without reading the rest);
- 408 when the body has not arrived within the read timeout;
- 204 once the one signal is recorded: a ping (`ciba.notify`) or a push (`ciba.deliver`, tokens
  sealed for the workflow the bearer names), each carrying the run chain the bearer names and
  the callback's proof (crypto.NotificationProofs, under CIBA_TOKEN_KEY) over that workflow and
  run chain, the signal, the auth_req_id and the push's content; the workflow acts on neither
  before an activity has checked the proof, so whoever holds only the payload key (and may
  signal) cannot write one. No
  lookup comes first: the workflow itself ignores a notice for another run chain (an earlier
  approval under the same workflow id) or another auth_req_id, and keeps one that arrives
  before it has recorded its own auth_req_id. Temporal keeps the signal while no worker runs,
  so a notification is never lost; duplicates are harmless (the workflow polls at most once
  more). A notification for an approval that has already ended is answered 204 and changes
  nothing.

Never a 3xx, never a 5xx for bad input (503 only when Temporal itself is unreachable, or from
uvicorn when more connections are open than the configured limit).

Slow clients cannot pin it (temporal_ciba._programs.http_guard, which the codec server shares:
`GuardedH11Protocol`, served by `temporal-ciba callback`, and `BodyDeadline`): a request head
must arrive within the read timeout of the connection being made (or of the previous response),
and a body within the read timeout of its head; what a client still sends after an early answer
(401, 413, 408) is discarded up to LINGER_BYTES for LINGER_SECONDS, then the connection is
closed. The TLS handshake before that is bounded by asyncio (60 s) and holds no request slot.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any, NoReturn

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from temporal_ciba._activities.redeem import push_content
from temporal_ciba._models import PingNotice, PushDelivery
from temporal_ciba._programs.http_guard import DEFAULT_READ_TIMEOUT, BodyDeadline
from temporal_ciba._workflow import DELIVER_SIGNAL, NOTIFY_SIGNAL
from temporal_ciba.ciba import ProtocolError, parse_token_response
from temporal_ciba.crypto import NotificationProofs, NotificationTokens, NotifiedApproval, TokenSealer, tokens_context

logger = logging.getLogger("temporal_ciba.callback")
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 7493 §2.2


# A refused notification is logged at most once per cause in this many seconds, so that an OP
# retrying (or someone probing) cannot fill the log.
REFUSAL_LOG_INTERVAL = 60.0

# Why a notification was refused, the likely cause and the fix: what an operator reads in this
# service's log when pings are answered 401 (the OP itself usually logs nothing).
REFUSALS = {
    "no_bearer": (
        "a notification without a bearer token was refused (401): the OP must send the "
        "client_notification_token as Authorization: Bearer (does a proxy strip the header?)"
    ),
    "bearer_does_not_open": (
        "a notification was refused (401): the bearer does not open: "
        "do CIBA_TOKEN_KEY of the callback and the worker match?"
    ),
}


class RefusalLog:
    """Logs refused notifications, at most one line per cause per `interval` seconds, never the token.

    A line says how many refusals of that cause were not logged since the previous one."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(self, cause: str) -> None:
        now = self._clock()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._unlogged[cause] = self._unlogged.get(cause, 0) + 1
            return
        self._last[cause] = now
        unlogged = self._unlogged.pop(cause, 0)
        more = f" ({unlogged} more since the last such line)" if unlogged else ""
        logger.warning("%s%s", REFUSALS[cause], more)


class BodyTooLarge(Exception):
    pass


def _problem(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _unauthorized(description: str) -> Response:
    return _problem(401, "invalid_token", description, {"www-authenticate": 'Bearer error="invalid_token"'})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit() and int(declared) <= limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _safe_int(text: str) -> int:
    if len(text) > 17 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise ValueError("integer out of range")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_i_json(raw: bytes) -> Any:
    """The body as I-JSON (RFC 7493); ValueError when it is not (UnicodeError, RecursionError too)."""
    value = json.loads(
        raw.decode("utf-8"),  # not json.loads(bytes), which also guesses UTF-16 and UTF-32
        parse_int=_safe_int,
        parse_float=_finite_float,
        parse_constant=_reject_constant,
        object_pairs_hook=_unique_members,
    )
    if _has_lone_surrogate(value):  # "\ud800" is valid JSON, but no Unicode string: nothing can encode it
        raise ValueError("lone surrogate")
    return value


def _push_delivery(
    auth_req_id: str, body: dict[str, Any], sealer: TokenSealer, approval: NotifiedApproval
) -> PushDelivery | None:
    """CIBA §10.3.1 (tokens) or §12 (error) as a PushDelivery, not yet proven; None when the body is neither."""
    if "error" in body:
        error, description = body.get("error"), body.get("error_description")
        if not isinstance(error, str) or not error or len(error) > 64:
            return None
        return PushDelivery(
            auth_req_id=auth_req_id,
            error=error,
            error_description=description[:200] if isinstance(description, str) else None,
            first_run_id=approval.first_run_id,
        )
    try:
        tokens = parse_token_response({k: v for k, v in body.items() if k != "auth_req_id"})
    except ProtocolError:
        return None
    # Sealed for the approval workflow the notification token names: it opens nowhere else.
    sealed = sealer.seal(tokens.model_dump_json(), context=tokens_context(auth_req_id, approval.workflow_id))
    return PushDelivery(auth_req_id=auth_req_id, sealed_tokens=sealed, first_run_id=approval.first_run_id)


def proven_push(delivery: PushDelivery, proofs: NotificationProofs, approval: NotifiedApproval) -> PushDelivery:
    """The push with the callback's proof over its approval, auth_req_id and content."""
    proof = proofs.prove(
        workflow_id=approval.workflow_id,
        first_run_id=approval.first_run_id,
        signal=DELIVER_SIGNAL,
        auth_req_id=delivery.auth_req_id,
        content=push_content(delivery),
    )
    return delivery.model_copy(update={"proof": proof})


def proven_ping(auth_req_id: str, proofs: NotificationProofs, approval: NotifiedApproval) -> PingNotice:
    """A ping with the callback's proof over its approval and auth_req_id."""
    proof = proofs.prove(
        workflow_id=approval.workflow_id,
        first_run_id=approval.first_run_id,
        signal=NOTIFY_SIGNAL,
        auth_req_id=auth_req_id,
    )
    return PingNotice(auth_req_id=auth_req_id, first_run_id=approval.first_run_id, proof=proof)


def create_callback_app(
    client: Client,
    notification_tokens: NotificationTokens,
    sealer: TokenSealer,
    *,
    proofs: NotificationProofs,
    path: str = "/ciba/notify",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
) -> Starlette:
    refusals = RefusalLog(refusal_log_interval)

    async def notification(request: Request) -> Response:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            refusals.refused("no_bearer")
            return _problem(401, "invalid_request", "a bearer token is required", {"www-authenticate": "Bearer"})
        approval = notification_tokens.open(bearer.strip())
        if approval is None:
            refusals.refused("bearer_does_not_open")
            return _unauthorized("unknown bearer token")

        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return _problem(415, "invalid_request", "the body must be application/json")
        try:
            body = parse_i_json(await _read_body(request, max_body_bytes))
        except BodyTooLarge:
            return _problem(413, "invalid_request", f"the body is larger than {max_body_bytes} bytes")
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return _problem(400, "invalid_request", "the body is not I-JSON (RFC 7493)")
        if not isinstance(body, dict) or not isinstance(body.get("auth_req_id"), str) or not body["auth_req_id"]:
            return _problem(400, "invalid_request", "the body must be a JSON object with an auth_req_id")
        auth_req_id: str = body["auth_req_id"]

        # One signal, no lookup first: the workflow checks the run chain and the auth_req_id
        # itself and ignores a notice for another (it keeps one that overtakes its own request).
        handle = client.get_workflow_handle(approval.workflow_id)
        push = "access_token" in body or "error" in body
        try:
            if push:
                delivery = _push_delivery(auth_req_id, body, sealer, approval)
                if delivery is None:
                    return _problem(400, "invalid_request", "not a CIBA push body (CIBA §10.3.1, §12)")
                await handle.signal(DELIVER_SIGNAL, proven_push(delivery, proofs, approval))
            else:
                await handle.signal(NOTIFY_SIGNAL, proven_ping(auth_req_id, proofs, approval))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # the approval has ended: nothing to wake
                return Response(status_code=204)
            logger.error("Temporal unavailable while signalling %s: %s", approval.workflow_id, exc.message)
            return _problem(503, "temporarily_unavailable", "try again later", {"retry-after": "1"})
        logger.info(
            "%s for auth_req_id=%s delivered to %s", "push" if push else "ping", auth_req_id, approval.workflow_id
        )
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[Route(path, notification, methods=["POST"]), Route("/healthz", health, methods=["GET"])],
        middleware=[Middleware(BodyDeadline, seconds=read_timeout)],
    )
    # CIBA §10.2: the client must never answer with a redirect, not even for a trailing slash.
    app.router.redirect_slashes = False
    return app

"""The callback service in this process (the mutation group `callback` runs these).

The Starlette app called over ASGI and signalling through a real Temporal dev server, to a recording
workflow run by a worker here (as tests/security/test_one_approval_one_action.py runs its attacker);
and `GuardedH11Protocol` served by uvicorn in this event loop over real sockets.
tests/security/test_callback.py and tests/e2e/test_callback.py drive the same code through the
`temporal-ciba callback` process, the OP and the approval workflow."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from temporal_ciba._models import PingNotice, PushDelivery
from temporal_ciba._programs import callback as callback_module
from temporal_ciba._programs import http_guard
from temporal_ciba._programs.callback import MAX_SAFE_INTEGER, create_callback_app, parse_i_json
from temporal_ciba._programs.connect import connect
from temporal_ciba._programs.http_guard import BodyDeadline, GuardedH11Protocol
from temporal_ciba._workflow import DELIVER_SIGNAL, NOTIFY_SIGNAL
from temporal_ciba.crypto._notification import NotificationProofs, NotificationTokens
from temporal_ciba.crypto._sealing import TokenSealer, tokens_context
from tests.support.temporal import DevServer, free_port, wait_for

TOKENS = NotificationTokens(b"t" * 32)
SEALER = TokenSealer(b"s" * 32)
PROOFS = NotificationProofs(b"t" * 32)
LIMIT = 1000  # the app's body limit in these tests
PATH = "/ciba/notify"


# A workflow that records what the callback signals ---------------------------------------------


@workflow.defn
class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal(name=NOTIFY_SIGNAL)
    def notify(self, notice: PingNotice) -> None:
        self.received.append((NOTIFY_SIGNAL, notice.model_dump()))

    @workflow.signal(name=DELIVER_SIGNAL)
    def deliver(self, delivery: PushDelivery) -> None:
        self.received.append((DELIVER_SIGNAL, delivery.model_dump()))

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def signals(self) -> list[tuple[str, dict[str, Any]]]:
        return self.received


@pytest.fixture(scope="module")
async def recorder_queue(temporal_client: Client) -> AsyncIterator[str]:
    queue = f"callback-app-{uuid.uuid4().hex[:6]}"
    async with Worker(
        temporal_client, task_queue=queue, workflows=[Recorder], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        yield queue


@pytest.fixture
async def recorder(temporal_client: Client, recorder_queue: str) -> AsyncIterator[WorkflowHandle]:
    handle = await temporal_client.start_workflow(
        Recorder.run, id=f"recorder-{uuid.uuid4().hex}", task_queue=recorder_queue
    )
    yield handle
    await handle.signal(Recorder.finish)


def bearer_for(handle: WorkflowHandle) -> str:
    assert handle.first_execution_run_id is not None
    return TOKENS.issue(handle.id, handle.first_execution_run_id)


async def received(handle: WorkflowHandle, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The signals the recorder has handled, once there are `count` of them."""
    await wait_for(lambda: _has(handle, count), what=f"{count} signal(s) at the recorder", timeout=15, interval=0.05)
    return await handle.query(Recorder.signals)


async def _has(handle: WorkflowHandle, count: int) -> bool:
    return len(await handle.query(Recorder.signals)) >= count


# Calling the app over ASGI ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    reads: int  # how many times the app asked for the body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The error code of a problem answer (RFC 6749 §5.2's members, both present)."""
        problem = self.json
        assert set(problem) == {"error", "error_description"} and isinstance(problem["error_description"], str)
        return problem["error"]


async def call(
    app: ASGIApp,
    *,
    method: str = "POST",
    path: str = PATH,
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    stall: bool = False,
) -> Answer:
    """One request: the body in `chunks` (each its own message); `stall`: then nothing more, ever."""
    pending = list(chunks or [b""])
    reads = 0
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        if stall:
            await never.wait()
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
        "server": ("callback.test", 443),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], answer_headers, body, reads)


@pytest.fixture(scope="module")
def app(temporal_client: Client) -> ASGIApp:
    return create_callback_app(temporal_client, TOKENS, SEALER, proofs=PROOFS, max_body_bytes=LIMIT, read_timeout=5)


def post(app: ASGIApp, token: str | None, body: Any, **headers: str) -> Awaitable[Answer]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    fields = {"content-type": "application/json", **headers}
    if token is not None:
        fields["authorization"] = f"Bearer {token}"
    return call(app, headers=fields, chunks=[content])


# The bearer ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic {token}", "{token}", "Bearerx {token}", "Token {token}"],
)
async def test_no_bearer_is_401_invalid_request_and_reads_nothing(
    app: ASGIApp, recorder: WorkflowHandle, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization.format(token=bearer_for(recorder))
    answer = await call(app, headers=headers, chunks=[b'{"auth_req_id":"a"}'])
    assert (answer.status, answer.error) == (401, "invalid_request")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.reads == 0


@pytest.mark.parametrize("token", ["AAAA", "not a token", "{token}x", "x{token}"])
async def test_a_bearer_we_did_not_issue_is_401_invalid_token(
    app: ASGIApp, recorder: WorkflowHandle, token: str
) -> None:
    answer = await post(app, token.format(token=bearer_for(recorder)), {"auth_req_id": "a"})
    assert (answer.status, answer.error) == (401, "invalid_token")
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert answer.reads == 0


@pytest.mark.parametrize("authorization", ["Bearer {token}", "bearer {token}", "BEARER {token}", "Bearer  {token}  "])
async def test_the_scheme_is_case_insensitive_and_the_token_trimmed(
    app: ASGIApp, recorder: WorkflowHandle, authorization: str
) -> None:
    headers = {"authorization": authorization.format(token=bearer_for(recorder)), "content-type": "application/json"}
    answer = await call(app, headers=headers, chunks=[b'{"auth_req_id":"a"}'])
    assert answer.status == 204
    assert (await received(recorder, 1))[0][0] == NOTIFY_SIGNAL


# Content type, size, form ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_by_its_type_is_415_unread(
    app: ASGIApp, recorder: WorkflowHandle, content_type: str | None
) -> None:
    headers = {"authorization": f"Bearer {bearer_for(recorder)}"}
    if content_type is not None:
        headers["content-type"] = content_type
    answer = await call(app, headers=headers, chunks=[b'{"auth_req_id":"a"}'])
    assert (answer.status, answer.error, answer.reads) == (415, "invalid_request", 0)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json ;x=y"]
)
async def test_json_media_types_with_parameters_or_capitals_are_accepted(
    app: ASGIApp, recorder: WorkflowHandle, content_type: str
) -> None:
    answer = await post(app, bearer_for(recorder), {"auth_req_id": "a"}, **{"content-type": content_type})
    assert answer.status == 204


def padded(size: int, auth_req_id: str = "a") -> bytes:
    """A ping body of exactly `size` bytes."""
    head = json.dumps({"auth_req_id": auth_req_id, "p": ""}).encode()
    body = head[:-2] + b"x" * (size - len(head)) + b'"}'
    assert len(body) == size
    return body


async def test_a_body_of_exactly_the_limit_is_read_one_byte_more_is_413(app: ASGIApp, recorder: WorkflowHandle) -> None:
    token = bearer_for(recorder)
    assert (await post(app, token, padded(LIMIT))).status == 204
    too_big = await post(app, token, padded(LIMIT + 1))
    assert (too_big.status, too_big.error) == (413, "invalid_request")


@pytest.mark.parametrize("declared", [str(LIMIT + 1), "99999999999999999999", "-1", "1e3", "+10", " 10", "1\u00b2"])
async def test_a_declared_length_beyond_the_limit_or_not_digits_is_413_unread(
    app: ASGIApp, recorder: WorkflowHandle, declared: str
) -> None:
    headers = {
        "authorization": f"Bearer {bearer_for(recorder)}",
        "content-type": "application/json",
        "content-length": declared,
    }
    answer = await call(app, headers=headers, chunks=[b'{"auth_req_id":"a"}'])
    assert (answer.status, answer.reads) == (413, 0)


async def test_a_declared_length_of_the_limit_is_read(app: ASGIApp, recorder: WorkflowHandle) -> None:
    body = padded(LIMIT)
    answer = await post(app, bearer_for(recorder), body, **{"content-length": str(len(body))})
    assert answer.status == 204


async def test_an_undeclared_body_is_cut_while_it_streams(app: ASGIApp, recorder: WorkflowHandle) -> None:
    """No content-length: the chunk that passes the limit ends the reading (413), the rest unread."""
    headers = {"authorization": f"Bearer {bearer_for(recorder)}", "content-type": "application/json"}
    chunks = [b'{"auth_req_id":"a","p":"', *([b"x" * 400] * 10), b'"}']
    answer = await call(app, headers=headers, chunks=chunks)
    assert answer.status == 413
    assert answer.reads == 4  # 24 + 400 + 400 bytes, then 1224 > 1000
    # In pieces, under the limit: read whole.
    small = [b'{"auth_req_id":', b'"a"', b"}"]
    assert (await call(app, headers=headers, chunks=small)).status == 204
    run = recorder.first_execution_run_id
    assert (await received(recorder, 1))[0] == (
        NOTIFY_SIGNAL,
        {"auth_req_id": "a", "first_run_id": run, "proof": ping_proof(recorder.id, run, "a")},
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"auth_req_id": ',
        b"[1]",
        b'"a"',
        b"null",
        b"{}",
        b'{"auth_req_id":""}',
        b'{"auth_req_id":1}',
        b'{"auth_req_id":["a"]}',
        b'{"auth_req_id":null}',
        b'{"auth_req_id":"a","auth_req_id":"b"}',
        b'{"auth_req_id":"\\ud800"}',
        b'{"auth_req_id":"a","x":NaN}',
        b'{"auth_req_id":"\xff"}',
        json.dumps({"auth_req_id": "a"}).encode("utf-16"),
        b"[" * 900,
    ],
)
async def test_a_body_that_is_not_an_i_json_object_with_an_auth_req_id_is_400(
    app: ASGIApp, recorder: WorkflowHandle, body: bytes
) -> None:
    answer = await post(app, bearer_for(recorder), body)
    assert (answer.status, answer.error) == (400, "invalid_request")


# I-JSON (RFC 7493) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        str(MAX_SAFE_INTEGER + 1),
        str(-MAX_SAFE_INTEGER - 1),
        str(2**63),
        "9" * 5000,
        "-" + "9" * 17,
        '{"a":1,"a":1}',
        '{"a":{"b":1,"b":2}}',
        '"\\ud800"',
        '["\\udfff"]',
        '{"\\udc00":1}',
        '{"a":"\\udbff"}',
        '{"a":[{"b":["x","\\ud800"]}]}',
        '{"a":{"b":"\\ud800"}}',
    ],
)
def test_what_i_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_i_json(text.encode())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (str(MAX_SAFE_INTEGER), MAX_SAFE_INTEGER),
        (str(-MAX_SAFE_INTEGER), -MAX_SAFE_INTEGER),
        ("0", 0),
        ("1.5e3", 1500.0),
        ("-0.25", -0.25),
        ("1e308", 1e308),
        ('{"a":1,"b":{"a":2}}', {"a": 1, "b": {"a": 2}}),
        ('["\\ud83d\\ude00", {"k": ["é"]}]', ["\U0001f600", {"k": ["é"]}]),
        ('{"\\u00e9":"x"}', {"é": "x"}),
        ("[]", []),
    ],
)
def test_what_i_json_accepts(text: str, value: Any) -> None:
    assert parse_i_json(text.encode()) == value


async def test_absurdly_nested_json_is_400(temporal_client: Client, recorder: WorkflowHandle) -> None:
    nested = b"[" * 30000 + b"]" * 30000  # within the default size limit, beyond the recursion limit
    with pytest.raises(RecursionError):
        parse_i_json(nested)
    app = create_callback_app(temporal_client, TOKENS, SEALER, proofs=PROOFS)
    answer = await post(app, bearer_for(recorder), nested)
    assert (answer.status, answer.error) == (400, "invalid_request")


def test_i_json_is_utf_8_only() -> None:
    for encoding in ("utf-16", "utf-16-le", "utf-32", "utf-8-sig"):
        with pytest.raises(ValueError):
            parse_i_json(json.dumps({"a": "é"}).encode(encoding))
    assert parse_i_json('{"a":"é"}'.encode()) == {"a": "é"}


# Signals ---------------------------------------------------------------------------------------


async def test_a_ping_signals_the_workflow_the_bearer_names_with_its_run_chain(
    app: ASGIApp, recorder: WorkflowHandle
) -> None:
    answer = await post(app, bearer_for(recorder), {"auth_req_id": "req-1", "extra": [1, {"x": None}]})
    assert (answer.status, answer.body) == (204, b"")
    signals = await received(recorder, 1)
    run = recorder.first_execution_run_id
    assert signals == [
        (NOTIFY_SIGNAL, {"auth_req_id": "req-1", "first_run_id": run, "proof": ping_proof(recorder.id, run)})
    ]


def ping_proof(workflow_id: str, first_run_id: str | None, auth_req_id: str = "req-1") -> str:
    """The proof the callback puts on a ping for this approval (only the token key makes it)."""
    assert first_run_id is not None
    return PROOFS.prove(
        workflow_id=workflow_id, first_run_id=first_run_id, signal=NOTIFY_SIGNAL, auth_req_id=auth_req_id
    )


async def test_the_run_chain_is_the_bearers_not_the_workflows(app: ASGIApp, recorder: WorkflowHandle) -> None:
    """A bearer for an earlier run chain under the same id: signalled with that chain (the workflow refuses it)."""
    earlier = str(uuid.uuid4())
    answer = await post(app, TOKENS.issue(recorder.id, earlier), {"auth_req_id": "req-1"})
    assert answer.status == 204
    proof = ping_proof(recorder.id, earlier)
    assert (await received(recorder, 1)) == [
        (NOTIFY_SIGNAL, {"auth_req_id": "req-1", "first_run_id": earlier, "proof": proof})
    ]


TOKEN_BODY = {"access_token": "at-1", "token_type": "Bearer", "id_token": "a.b.c", "expires_in": 120}


async def test_a_push_delivers_the_tokens_sealed_for_the_workflow_the_bearer_names(
    app: ASGIApp, recorder: WorkflowHandle
) -> None:
    answer = await post(app, bearer_for(recorder), {"auth_req_id": "req-2", **TOKEN_BODY, "refresh_token": "rt"})
    assert answer.status == 204
    [(name, delivery)] = await received(recorder, 1)
    assert name == DELIVER_SIGNAL
    assert delivery["auth_req_id"] == "req-2"
    assert delivery["first_run_id"] == recorder.first_execution_run_id
    assert (delivery["error"], delivery["error_description"]) == (None, None)
    # Proven by the callback for this approval, these sealed tokens and this auth_req_id.
    proven = {"workflow_id": recorder.id, "first_run_id": recorder.first_execution_run_id, "signal": DELIVER_SIGNAL}
    content = (delivery["sealed_tokens"], None, None)
    assert PROOFS.check(delivery["proof"], **proven, auth_req_id="req-2", content=content)
    assert not PROOFS.check(delivery["proof"], **proven, auth_req_id="req-3", content=content)
    opened = json.loads(SEALER.unseal(delivery["sealed_tokens"], context=tokens_context("req-2", recorder.id)))
    assert opened["access_token"] == "at-1" and opened["id_token"] == "a.b.c" and opened["expires_in"] == 120
    assert opened["refresh_token"] == "rt"
    # Sealed for this workflow and this auth_req_id, not another.
    for context in (tokens_context("req-2", "another"), tokens_context("req-3", recorder.id)):
        with pytest.raises(Exception, match="does not open"):
            SEALER.unseal(delivery["sealed_tokens"], context=context)


@pytest.mark.parametrize(
    ("pushed", "error", "description"),
    [
        ({"error": "access_denied", "error_description": "no"}, "access_denied", "no"),
        ({"error": "expired_token"}, "expired_token", None),
        ({"error": "access_denied", "error_description": 7}, "access_denied", None),
        ({"error": "access_denied", "error_description": "d" * 300}, "access_denied", "d" * 200),
        ({"error": "access_denied", "error_description": "d" * 200}, "access_denied", "d" * 200),
        ({"error": "e" * 64}, "e" * 64, None),
        ({"error": "x", "access_token": "at"}, "x", None),  # an error wins over tokens
    ],
)
async def test_a_pushed_error_is_delivered_with_a_short_description(
    app: ASGIApp, recorder: WorkflowHandle, pushed: dict[str, Any], error: str, description: str | None
) -> None:
    assert (await post(app, bearer_for(recorder), {"auth_req_id": "req-4", **pushed})).status == 204
    [(name, delivery)] = await received(recorder, 1)
    run = recorder.first_execution_run_id
    assert run is not None
    proof = PROOFS.prove(
        workflow_id=recorder.id,
        first_run_id=run,
        signal=DELIVER_SIGNAL,
        auth_req_id="req-4",
        content=(None, error, description),
    )
    assert (name, delivery) == (
        DELIVER_SIGNAL,
        {
            "auth_req_id": "req-4",
            "sealed_tokens": None,
            "error": error,
            "error_description": description,
            "first_run_id": run,
            "proof": proof,
        },
    )


@pytest.mark.parametrize(
    "pushed",
    [
        {"error": ""},
        {"error": None},
        {"error": 1},
        {"error": "e" * 65},
        {"access_token": "at", "token_type": "Bearer"},  # no id_token
        {**TOKEN_BODY, "token_type": "DPoP"},
        {**TOKEN_BODY, "expires_in": "soon"},
        {"access_token": "", "token_type": "Bearer", "id_token": "x"},
    ],
)
async def test_a_push_body_that_is_neither_tokens_nor_an_error_is_400_and_signals_nothing(
    app: ASGIApp, recorder: WorkflowHandle, pushed: dict[str, Any]
) -> None:
    token = bearer_for(recorder)
    answer = await post(app, token, {"auth_req_id": "req-5", **pushed})
    assert (answer.status, answer.error) == (400, "invalid_request")
    # Then a ping, which must be the first signal the recorder saw.
    assert (await post(app, token, {"auth_req_id": "after"})).status == 204
    assert [s[1]["auth_req_id"] for s in await received(recorder, 1)] == ["after"]


async def test_a_notification_for_an_ended_or_unknown_workflow_is_204(
    app: ASGIApp, temporal_client: Client, recorder_queue: str
) -> None:
    handle = await temporal_client.start_workflow(
        Recorder.run, id=f"recorder-{uuid.uuid4().hex}", task_queue=recorder_queue
    )
    await handle.signal(Recorder.finish)
    await handle.result()
    for token in (bearer_for(handle), TOKENS.issue(f"no-such-{uuid.uuid4().hex}", str(uuid.uuid4()))):
        assert (await post(app, token, {"auth_req_id": "late"})).status == 204
        assert (await post(app, token, {"auth_req_id": "late", **TOKEN_BODY})).status == 204


async def test_temporal_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    """Temporal goes away after the service connected: 503, try again in a second."""
    server = DevServer(tmp_path)
    server.start()
    try:
        retry = RetryConfig(initial_interval_millis=50, max_retries=1, max_elapsed_time_millis=2000)
        gone = await connect(b"p" * 32, target_host=server.address, retry_config=retry)
    finally:
        server.stop(kill=True)
    app = create_callback_app(gone, TOKENS, SEALER, proofs=PROOFS)
    token = TOKENS.issue("any", str(uuid.uuid4()))
    for body in ({"auth_req_id": "a"}, {"auth_req_id": "a", **TOKEN_BODY}):
        answer = await asyncio.wait_for(post(app, token, body), 60)
        assert (answer.status, answer.error) == (503, "temporarily_unavailable")
        assert answer.headers["retry-after"] == "1"


# Routes ----------------------------------------------------------------------------------------


async def test_routes_health_and_no_redirect(app: ASGIApp, temporal_client: Client, recorder: WorkflowHandle) -> None:
    health = await call(app, method="GET", path="/healthz")
    assert (health.status, health.json) == (200, {"status": "ok"})
    token = bearer_for(recorder)
    assert (await call(app, method="GET", headers={"authorization": f"Bearer {token}"})).status == 405
    assert (await call(app, method="POST", path="/healthz")).status == 405
    slash = await call(app, path=PATH + "/", headers={"authorization": f"Bearer {token}"})
    assert slash.status == 404  # CIBA §10.2: never a redirect
    other = create_callback_app(temporal_client, TOKENS, SEALER, proofs=PROOFS, path="/elsewhere")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    assert (await call(other, path="/elsewhere", headers=headers, chunks=[b'{"auth_req_id":"m"}'])).status == 204
    assert (await call(other, path=PATH, headers=headers, chunks=[b'{"auth_req_id":"m"}'])).status == 404


# The body deadline (BodyDeadline) --------------------------------------------------------------


async def test_a_body_that_does_not_arrive_in_time_is_408(temporal_client: Client, recorder: WorkflowHandle) -> None:
    app = create_callback_app(temporal_client, TOKENS, SEALER, proofs=PROOFS, read_timeout=0.3)
    headers = {"authorization": f"Bearer {bearer_for(recorder)}", "content-type": "application/json"}
    started = time.monotonic()
    answer = await call(app, headers=headers, chunks=[b'{"auth_req_id":'], stall=True)
    took = time.monotonic() - started
    assert (answer.status, answer.error) == (408, "invalid_request")
    assert 0.25 <= took < 5
    # The same request whole, at once: answered.
    assert (await call(app, headers=headers, chunks=[b'{"auth_req_id":"a"}'])).status == 204


async def test_the_deadline_counts_from_the_head_not_from_each_chunk() -> None:
    """Chunks that each come sooner than the deadline but together later: 408."""
    chunks = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal chunks
        while (await receive()).get("more_body"):
            chunks += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def slow_receive() -> Message:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await BodyDeadline(app, 1.0)({"type": "http", "method": "POST"}, slow_receive, send)
    assert sent[0]["status"] == 408
    assert chunks >= 2  # several chunks, each well within the deadline (about 20 on an idle machine)


async def test_the_deadline_leaves_other_scopes_and_started_answers_alone() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    async def never() -> Message:
        await asyncio.Event().wait()
        raise AssertionError

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    # Started before the deadline: no second answer (a 408 after a 200 would break the protocol).
    await BodyDeadline(app, 0.1)({"type": "http"}, never, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    # Not HTTP (lifespan, websocket): passed through with no deadline.
    gate = asyncio.Event()

    async def later() -> Message:
        await gate.wait()
        return {"type": "lifespan.startup"}

    task = asyncio.create_task(BodyDeadline(app, 0.05)({"type": "lifespan"}, later, send))
    await asyncio.sleep(0.2)  # beyond the deadline an HTTP request would have had
    assert not task.done()
    gate.set()
    await task
    assert calls == ["http", "lifespan"]


async def test_a_timeout_of_the_apps_own_is_not_a_408() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(message)

    with pytest.raises(TimeoutError):
        await BodyDeadline(app, 5)({"type": "http"}, receive, send)


async def test_a_timeout_raised_by_receive_itself_propagates() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    async def receive() -> Message:
        raise TimeoutError

    async def send(message: Message) -> None:
        raise AssertionError(message)

    with pytest.raises(TimeoutError):
        await BodyDeadline(app, 5)({"type": "http"}, receive, send)


# GuardedH11Protocol, served by uvicorn in this event loop -------------------------------------


@dataclass
class Served:
    port: int
    requests: list[str] = field(default_factory=list)


READ = 0.5  # the protocol's read timeout in these tests


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 1.0)
    monkeypatch.setattr(http_guard, "LINGER_BYTES", 64 * 1024)
    served = Served(free_port())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        served.requests.append(scope["path"])
        if scope["path"] == "/early":  # answers before reading the body
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=served.port,
        http=GuardedH11Protocol.with_read_timeout(READ),
        lifespan="off",
        log_level="critical",
        timeout_keep_alive=60,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, what="uvicorn to start", interval=0.02)
    yield served
    server.should_exit = True
    await task


async def open_connection(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", served.port)


async def closed_after(reader: asyncio.StreamReader, started: float, within: float = 10) -> tuple[float, bytes]:
    """Read until the server closes; seconds since `started`, and what came."""
    data = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionError:
            pass
    return time.monotonic() - started, data


def head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: x", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_head_that_does_not_arrive_in_time_is_cut(served: Served) -> None:
    reader, writer = await open_connection(served)
    started = time.monotonic()
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\n")  # and never the end of the head
    took, data = await closed_after(reader, started)
    assert (data, served.requests) == (b"", [])
    assert READ * 0.8 <= took < READ + 3
    writer.close()


async def test_a_silent_connection_is_cut(served: Served) -> None:
    reader, writer = await open_connection(served)
    took, data = await closed_after(reader, time.monotonic())
    assert data == b"" and READ * 0.8 <= took < READ + 3
    writer.close()


async def test_dribbled_bytes_do_not_extend_the_head_deadline(served: Served) -> None:
    reader, writer = await open_connection(served)
    started = time.monotonic()
    writer.write(b"POST / HTTP/1.1\r\nx-slow: ")

    async def dribble() -> None:
        while not writer.is_closing():
            writer.write(b"a")
            await asyncio.sleep(READ / 5)

    dribbling = asyncio.create_task(dribble())
    took, _ = await closed_after(reader, started)
    dribbling.cancel()
    assert took < READ + 3 and served.requests == []
    writer.close()


async def test_the_next_head_on_a_kept_alive_connection_has_its_own_deadline(served: Served) -> None:
    reader, writer = await open_connection(served)
    writer.write(head("/one", **{"content-length": "2"}) + b"{}")
    status = await reader.readline()
    answered = time.monotonic()
    assert status.startswith(b"HTTP/1.1 200")
    writer.write(b"POST /two HTTP/1.1\r\n")  # the next head, unfinished
    took, _ = await closed_after(reader, answered)
    assert READ * 0.8 <= took < READ + 3 and served.requests == ["/one"]
    writer.close()


async def test_once_the_head_is_in_the_body_has_the_apps_deadline_not_the_heads(served: Served) -> None:
    """The head arrived.

    A body slower than the head's read timeout is still read (the app here has no deadline of its
    own)."""
    reader, writer = await open_connection(served)
    writer.write(head("/slow-body", **{"content-length": "4"}) + b"ab")
    await asyncio.sleep(READ * 2.5)  # the body's second half comes after the head's deadline would have passed
    writer.write(b"cd")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200") and served.requests == ["/slow-body"]
    writer.close()


async def test_a_client_answered_early_may_finish_its_body_and_send_another_request(served: Served) -> None:
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": "20000"}))
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    writer.write(b"x" * 20000)  # the rest of the body, within the linger limits: dropped
    writer.write(head("/next", **{"content-length": "2"}) + b"{}")
    data = b""
    async with asyncio.timeout(5):
        while b"HTTP/1.1 200" not in data:
            data += await reader.read(65536)
    assert served.requests == ["/early", "/next"]
    writer.close()


async def test_once_the_early_answered_body_is_in_the_next_head_has_the_read_timeout(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client finished the body it was sending.

    No longer lingering, so the next head has the read timeout (0.5 s), not what was left of the
    linger (30 s here)."""
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 30.0)
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": "20000"}))
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    writer.write(b"x" * 20000)
    await writer.drain()
    took, _ = await closed_after(reader, time.monotonic(), within=10)
    assert took < READ + 3 and served.requests == ["/early"]
    writer.close()


async def test_a_client_answered_early_that_keeps_sending_is_cut_after_linger_bytes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 30.0)  # so only the bytes can cut it
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": str(10 * 1024 * 1024)}))
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    sent = 0
    try:
        async with asyncio.timeout(10):
            while sent < 10 * 1024 * 1024 and not reader.at_eof():
                writer.write(b"x" * 8192)
                await writer.drain()
                sent += 8192
                await asyncio.sleep(0)
            await closed_after(reader, time.monotonic())
    except ConnectionError:
        pass
    # Cut after LINGER_BYTES (64 KiB here), long before the body was sent.
    assert reader.at_eof() or writer.is_closing()
    assert sent < 2 * 1024 * 1024
    writer.close()


async def test_a_client_answered_early_that_stops_sending_is_cut_after_linger_seconds(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 2.0)
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": "20000"}) + b"x" * 100)
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    answered = time.monotonic()
    writer.write(b"x" * 100)  # some bytes of the body, but not all of it
    took, _ = await closed_after(reader, answered)
    # LINGER_SECONDS (2 s here), not the head's read timeout (0.5 s).
    assert 1.5 <= took < 2 + 3
    writer.close()


async def test_exactly_linger_bytes_after_an_early_answer_are_dropped_and_the_connection_kept(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of the body is exactly LINGER_BYTES.

    All of it may be dropped (the limit is what goes beyond), so the connection serves the next
    request; one byte more is cut."""
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 30.0)
    limit = http_guard.LINGER_BYTES
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": str(limit)}))
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    writer.write(b"x" * limit)
    writer.write(head("/next", **{"content-length": "2"}) + b"{}")
    data = b""
    async with asyncio.timeout(5):
        while b"HTTP/1.1 200" not in data and (chunk := await reader.read(65536)):
            data += chunk
    assert b"HTTP/1.1 200" in data and served.requests == ["/early", "/next"]
    writer.close()
    reader, writer = await open_connection(served)
    writer.write(head("/early", **{"content-length": str(limit + 1)}))
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    writer.write(b"x" * (limit + 1))
    took, data = await closed_after(reader, time.monotonic(), within=10)
    assert b"HTTP/1.1 200" not in data and took < 5
    writer.close()


async def test_a_pipelined_request_has_no_linger_limit_on_its_body(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second request sent before the first was answered starts as the first's answer ends.

    Its body is the app's to read, whatever its size (here 4 x LINGER_BYTES)."""
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 30.0)
    size = 4 * http_guard.LINGER_BYTES
    reader, writer = await open_connection(served)
    writer.write(head("/one", **{"content-length": "2"}) + b"{}" + head("/two", **{"content-length": str(size)}))
    async with asyncio.timeout(10):
        first = await reader.readuntil(b"\r\n\r\nok")  # the first answer, whole
        writer.write(b"x" * size)
        second = await reader.readline()
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert served.requests == ["/one", "/two"]
    writer.close()


# Refusals in the log ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=5000).map("tok-".__add__))
async def test_a_refused_bearer_is_logged_once_per_interval_and_never_itself(
    temporal_client: Client, token: str
) -> None:
    """Any bearer that does not open, of any length and any latin-1 text: 401, and a warning
    naming CIBA_TOKEN_KEY once per interval, which never holds the token."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("temporal_ciba.callback")
    logger.addHandler(handler)
    try:
        fresh = create_callback_app(
            temporal_client, TOKENS, SEALER, proofs=PROOFS, max_body_bytes=LIMIT, refusal_log_interval=3600
        )
        for _ in range(2):
            answer = await post(fresh, token, {"auth_req_id": "a"})
            assert answer.status == 401
    finally:
        logger.removeHandler(handler)
    lines = [record.getMessage() for record in records]
    assert len(lines) == 1 and "CIBA_TOKEN_KEY" in lines[0], lines
    assert token.strip() not in lines[0]


def test_the_refusal_log_says_how_many_it_did_not_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = callback_module.RefusalLog(interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="temporal_ciba.callback"):
        for at in (0.0, 1.0, 59.0, 60.0, 61.0, 130.0):
            now[0] = at
            refusals.refused("bearer_does_not_open")
        refusals.refused("no_bearer")  # another cause has its own interval
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert lines[1].endswith("(2 more since the last such line)")  # at 60: those at 1 and 59
    assert lines[2].endswith("(1 more since the last such line)")  # at 130: the one at 61
    assert "without a bearer token" in lines[3]

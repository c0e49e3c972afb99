"""The callback service facing bad input.

Every request gets the right status, nothing is a 3xx or a 5xx, nothing but a notification with our
bearer reaches a workflow (its history is unchanged), and one that is not the workflow's own changes
nothing there."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._settings import WorkerSettings
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.crypto._notification import NotificationTokens
from tests.support.callback import TOKENS, bearer, events, post, token_for
from tests.support.flows import pending_auth_req_id, start_approval
from tests.support.op import TestOP
from tests.support.stack import PAYLOAD_KEY, TlsFiles, run_callback
from tests.support.temporal import DevServer, wait_for

JSON_TYPE = "application/json"


def altered(token: str) -> str:
    return token[:10] + ("A" if token[10] != "A" else "B") + token[11:]


async def test_bad_requests_get_4xx_and_touch_nothing(
    callback: str,
    tls: TlsFiles,
    temporal_client: Client,
    ping_worker: WorkerSettings,
    waiting: tuple[WorkflowHandle, str],
) -> None:
    handle, auth_req_id = waiting
    other = await start_approval(
        temporal_client, ping_worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Another approval")
    )
    await pending_auth_req_id(other)
    valid = token_for(handle)
    ping = {"auth_req_id": auth_req_id}
    before = await events(handle), await events(other)
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("missing_header", {"body": ping}, 401),
        ("not_bearer", {"body": ping, "headers": {"authorization": f"Basic {valid}"}}, 401),
        ("wrong_bearer", {"body": ping, "headers": bearer(base64.urlsafe_b64encode(b"x" * 48).decode())}, 401),
        ("altered_bearer", {"body": ping, "headers": bearer(altered(valid))}, 401),
        (
            "bearer_from_another_key",
            {"body": ping, "headers": bearer(token_for(handle, NotificationTokens(b"k" * 32)))},
            401,
        ),
        (
            # An operator holds the payload key (to read history), not the token key.
            "bearer_made_with_the_payload_key",
            {"body": ping, "headers": bearer(token_for(handle, NotificationTokens(base64.b64decode(PAYLOAD_KEY))))},
            401,
        ),
        (
            "malformed_json",
            {"content": b'{"auth_req_id": ', "headers": {**bearer(valid), "content-type": "application/json"}},
            400,
        ),
        ("not_an_object", {"body": [auth_req_id], "headers": bearer(valid)}, 400),
        (
            "absurdly_nested",
            {"content": b"[" * 60_000, "headers": {**bearer(valid), "content-type": "application/json"}},
            400,
        ),
        ("auth_req_id_missing", {"body": {"id": auth_req_id}, "headers": bearer(valid)}, 400),
        (
            "wrong_content_type",
            {"content": json.dumps(ping).encode(), "headers": {**bearer(valid), "content-type": "text/plain"}},
            415,
        ),
        ("huge_body", {"body": {**ping, "padding": "x" * 200_000}, "headers": bearer(valid)}, 413),
        (
            "push_body_without_id_token",
            {"body": {**ping, "access_token": "at", "token_type": "Bearer"}, "headers": bearer(valid)},
            400,
        ),
    ]
    for name, request, status in cases:
        response = await post(callback, tls, **request)
        assert response.status_code == status, name
    assert (await post(callback, tls, method="GET", headers=bearer(valid))).status_code == 405
    trailing = await post(callback + "/", tls, body=ping, headers=bearer(valid))
    assert trailing.status_code == 404  # never a redirect
    assert (await events(handle), await events(other)) == before
    await other.cancel()


async def test_a_notice_the_workflow_did_not_ask_for_changes_nothing(
    callback: str,
    tls: TlsFiles,
    temporal_client: Client,
    ping_worker: WorkerSettings,
    waiting: tuple[WorkflowHandle, str],
    op: TestOP,
) -> None:
    """The callback signals once without looking anything up (204).

    The workflow itself checks the run chain the bearer names and the auth_req_id, and ignores what
    is not its own."""
    handle, auth_req_id = waiting
    other = await start_approval(
        temporal_client, ping_worker.task_queue, ApprovalRequest(login_hint="alice", binding_message="Another approval")
    )
    other_auth_req_id = await pending_auth_req_id(other)
    ping = {"auth_req_id": auth_req_id}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("bearer_of_another_request", {"body": ping, "headers": bearer(token_for(other))}),
        # An earlier approval under the same workflow id: another run chain.
        (
            "bearer_of_an_earlier_approval",
            {"body": ping, "headers": bearer(TOKENS.issue(handle.id, str(uuid.uuid4())))},
        ),
        ("unknown_auth_req_id", {"body": {"auth_req_id": "no-such-request"}, "headers": bearer(token_for(handle))}),
    ]
    for name, request in cases:
        assert (await post(callback, tls, **request)).status_code == 204, name
    for approval, signals in ((handle, 2), (other, 1)):
        await wait_for(lambda a=approval, n=signals: handled_signals(a, n), what="the notices to be handled")
        state = await approval.query(CibaApprovalWorkflow.status)
        assert (state.status, state.polls) == ("pending", 0)
    assert op.token_requests(auth_req_id) == [] and op.token_requests(other_auth_req_id) == []
    await other.cancel()


async def handled_signals(handle: WorkflowHandle, count: int) -> bool | None:
    """True once `count` signals are in the history and a workflow task completed after them."""
    events = [event.event_type async for event in handle.fetch_history_events()]
    signalled = [i for i, kind in enumerate(events) if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    if len(signalled) < count:
        return None
    done = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[signalled[count - 1] :]
    return True if done else None


async def test_ping_is_accepted_once_and_replays_change_nothing(
    callback: str, tls: TlsFiles, op: TestOP, waiting: tuple[WorkflowHandle, str]
) -> None:
    handle, auth_req_id = waiting
    op.approve(auth_req_id)  # the OP pings (and the callback answers 204)
    outcome = await handle.result()
    assert outcome.status == "approved"
    after = await events(handle)
    for _ in range(3):  # the OP retrying, or an attacker replaying a captured ping
        response = await post(callback, tls, body={"auth_req_id": auth_req_id}, headers=bearer(token_for(handle)))
        assert response.status_code == 204
    assert await events(handle) == after


async def test_duplicate_pings_are_harmless(
    callback: str, tls: TlsFiles, op: TestOP, waiting: tuple[WorkflowHandle, str]
) -> None:
    handle, auth_req_id = waiting
    for _ in range(3):
        response = await post(callback, tls, body={"auth_req_id": auth_req_id}, headers=bearer(token_for(handle)))
        assert response.status_code == 204
    op.approve(auth_req_id)
    assert (await handle.result()).status == "approved"


# Property: random bodies and headers never get a 3xx or 5xx -----------------------------------

# Text with lone surrogates too (json.dumps writes them as "\ud800" escapes: valid JSON, no Unicode).
TEXT = st.text(max_size=40) | st.text(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**53) | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
# Numbers beyond what I-JSON (RFC 7493) allows, and the non-JSON constants Python's json accepts.
ODD_NUMBERS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999999",
        "-1e400",
        "9" * 5000,
        "-" + "9" * 4400,
        str(2**53),
        str(-(2**53)),
        str(2**63),
        str(-(2**64)),
        "1" + "0" * 30,
    ]
)
# Byte sequences that are not UTF-8: a stray continuation, an overlong form, an encoded surrogate, beyond U+10FFFF.
INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\x80", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
)
LONE_SURROGATE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800"])


def malformed_bodies(auth_req_id: str) -> st.SearchStrategy[tuple[bytes, bool]]:
    """Bodies each malformed in one way, many around the waiting approval's real auth_req_id (so that
    only the malformation stands between them and the workflow), and whether to send them chunked."""
    real = json.dumps(auth_req_id)[1:-1].encode()
    around = st.sampled_from([b"", real])
    push_member = st.sampled_from(["error", "error_description", "access_token", "id_token", "token_type", "x"])
    surrogate_ids = st.tuples(around, LONE_SURROGATE, around).map(
        lambda t: json.dumps({"auth_req_id": t[0].decode() + t[1] + t[2].decode()}).encode()
    )
    surrogate_members = st.tuples(push_member, LONE_SURROGATE, st.booleans()).map(
        lambda t: json.dumps({"auth_req_id": auth_req_id, **({t[0]: t[1]} if t[2] else {t[1]: t[0]})}).encode()
    )
    odd_numbers = st.tuples(st.sampled_from(["auth_req_id", "expires_in", "x"]), ODD_NUMBERS).map(
        lambda t: (
            b'{"auth_req_id":"%s","%s":%s}' % (real, t[0].encode(), t[1].encode())
            if t[0] != "auth_req_id"
            else b'{"auth_req_id":%s}' % t[1].encode()
        )
    )
    invalid_utf8 = st.tuples(around, INVALID_UTF8, around).map(lambda t: b'{"auth_req_id":"%s%s%s"}' % t)
    over_the_limit = st.integers(min_value=64 * 1024 - 10, max_value=3 * 64 * 1024).map(
        lambda n: b'{"auth_req_id":"%s","padding":"%s"}' % (real, b"x" * n)
    )
    # Which auth_req_id would count? And JSON in an encoding other than UTF-8 (RFC 8259 §8.1).
    duplicate_ids = st.just(b'{"auth_req_id":"someone-else","auth_req_id":"%s"}' % real)
    not_utf8 = st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]).map(
        lambda encoding: json.dumps({"auth_req_id": auth_req_id}).encode(encoding)
    )
    return st.tuples(
        st.one_of(surrogate_ids, surrogate_members, odd_numbers, invalid_utf8, over_the_limit, duplicate_ids, not_utf8),
        st.booleans(),
    )


def is_notice(authorization: str | None, content_type: str, content: bytes, valid: str) -> bool:
    """A notification the service must pass on (204): our bearer, JSON, an object with an auth_req_id."""
    if authorization != f"Bearer {valid}" or content_type.split(";")[0] != JSON_TYPE:
        return False
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("auth_req_id"), str) and value["auth_req_id"] != ""


async def test_random_input_never_gets_3xx_or_5xx(
    callback: str, tls: TlsFiles, op: TestOP, waiting: tuple[WorkflowHandle, str]
) -> None:
    """No input gets a 3xx or a 5xx, and none moves the waiting approval.

    Only a well-formed notice with our bearer gets a 2xx, and none of them (never the waiting
    approval's own auth_req_id) moves the approval: it still waits, and never polled."""
    handle, auth_req_id = waiting
    valid = token_for(handle)
    authorization = st.one_of(
        st.none(),
        st.text(max_size=60),
        st.just(f"Bearer {valid}"),
        st.just(f"bearer {altered(valid)}"),
        st.text(alphabet="ABCDEFabcdef0123456789-_", min_size=1, max_size=200).map(lambda t: f"Bearer {t}"),
    )
    body = st.one_of(
        st.tuples(
            st.one_of(
                st.binary(max_size=300),
                JSON.map(lambda value: json.dumps(value).encode()),
                st.dictionaries(
                    st.sampled_from(["auth_req_id", "access_token", "id_token", "error", "token_type"]),
                    JSON,
                    max_size=5,
                ).map(lambda value: json.dumps(value).encode()),
            ),
            st.just(False),
        ),
        malformed_bodies(auth_req_id),
    )
    content_type = st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded"]
    )
    seen: set[int] = set()

    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls.ca)), timeout=10) as http:

        @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
        @given(authorization=authorization, body=body, content_type=content_type, addressed=st.booleans())
        def check(authorization: str | None, body: tuple[bytes, bool], content_type: str, addressed: bool) -> None:
            if addressed:  # a valid bearer and JSON: the body itself is judged
                authorization, content_type = f"Bearer {valid}", "application/json"
            headers = {"content-type": content_type.encode()}
            if authorization is not None:
                headers["authorization"] = authorization.encode()  # any bytes, not only ASCII
            content, chunked = body
            try:  # chunked: no content-length, the service finds the size while it reads
                response = http.post(callback, content=iter([content]) if chunked else content, headers=headers)
            except httpx.LocalProtocolError:
                return  # a header httpx itself refuses to send never reaches the service
            seen.add(response.status_code)
            if 200 <= response.status_code < 300:
                assert is_notice(authorization, content_type, content, valid), response.status_code
            else:
                assert 400 <= response.status_code < 500, response.status_code

        await asyncio.to_thread(check)
    assert {400, 401, 413} <= seen
    state = await handle.query(CibaApprovalWorkflow.status)
    assert (state.status, state.polls) == ("pending", 0)
    assert op.token_requests(auth_req_id) == []


async def test_a_refused_notification_is_logged_once_per_cause_with_its_fix_and_never_its_token(
    temporal_server: DevServer, tls: TlsFiles, tmp_path: Path
) -> None:
    """A ping whose bearer does not open (the worker issued it under another CIBA_TOKEN_KEY) is answered 401.

    The OP logs nothing, so the callback's log is where the operator looks: one warning naming
    the setting to compare, at most one per cause per interval however many pings arrive, and
    never the token."""
    foreign = NotificationTokens(b"k" * 32).issue("approval-" + uuid.uuid4().hex, uuid.uuid4().hex)
    log = tmp_path / "callback.log"
    with run_callback(temporal_server, tls, tmp_path) as url:
        for _ in range(3):
            response = await post(url, tls, body={"auth_req_id": "ar-1"}, headers=bearer(foreign))
            assert response.status_code == 401
        assert (await post(url, tls, body={"auth_req_id": "ar-1"})).status_code == 401

        def lines() -> list[str]:
            return [line for line in log.read_text().splitlines() if "refused (401)" in line]

        await wait_for(lambda: len(lines()) >= 2, what="the refusals in the callback's log")
    refused = lines()
    bad_bearer = [line for line in refused if "CIBA_TOKEN_KEY" in line]
    assert len(bad_bearer) == 1, refused
    assert "do CIBA_TOKEN_KEY of the callback and the worker match?" in bad_bearer[0]
    assert len([line for line in refused if "without a bearer token" in line]) == 1, refused
    assert foreign not in log.read_text()

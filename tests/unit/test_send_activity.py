"""The approval activities' own rules, in an activity context over an in-process HTTP transport.

Whom an approval is pinned to, never asking the user twice, and naming a lost grant."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import BaseModel, Field, ValidationError, model_validator
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from temporal_ciba._activities import GRANT_LOST, REQUEST_OUTCOME_UNKNOWN, CibaActivities
from temporal_ciba._activities import send as send_module
from temporal_ciba._activities.redeem import GRANT_LOST_REASON
from temporal_ciba._activities.send import ID_TOKEN_HINT_INVALID
from temporal_ciba._activities.send import _one_line as one_line
from temporal_ciba._models import (
    ApprovalRequest,
    RevokeTokensInput,
    SendRequestInput,
    TokenRequestInput,
    ValidateTokensInput,
)
from temporal_ciba.ciba import BindingMessageRule, CibaClient, ClientSecretBasic, DeliveryMode, RequestDialect
from temporal_ciba.crypto import TokenSealer, tokens_context
from tests.support.mock_op import MockOP, env
from tests.support.tokens import (
    ACCESS_TOKEN,
    AUTH_REQ_ID,
    CLIENT_ID,
    DETAILS,
    ISSUER,
    METADATA,
    NOW,
    REFRESH_TOKEN,
    claims,
    token_response,
)


def activities(
    bc_answer: httpx.Response | Exception,
    *,
    delivery_mode: DeliveryMode = "poll",
    sent: list[dict[str, str]] | None = None,
    modes: tuple[str, ...] = ("poll", "ping"),
    **options: object,
) -> CibaActivities:
    """The activities against an OP offering `modes` whose backchannel endpoint answers
    `bc_answer`; the forms it received go to `sent`."""

    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**METADATA, "backchannel_token_delivery_modes_supported": list(modes)})
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": []})
        if sent is not None:
            sent.append(dict(parse_qsl(request.content.decode())))
        if isinstance(bc_answer, Exception):
            raise bc_answer
        return bc_answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    ciba = CibaClient(
        issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), delivery_mode=delivery_mode, http=http
    )
    return CibaActivities(ciba, TokenSealer(os.urandom(32)), **options)  # type: ignore[arg-type]


def send_input(**request: object) -> SendRequestInput:
    approval = ApprovalRequest(**{"login_hint": "alice@example.com", "binding_message": "Approve it", **request})  # type: ignore[arg-type]
    return SendRequestInput(request=approval, workflow_id="wf", first_run_id="run")


ACK = httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120})


def notification_token(workflow_id: str, first_run_id: str) -> str:
    return hashlib.sha256(f"{workflow_id}/{first_run_id}".encode()).hexdigest()


async def test_the_acknowledgement_is_returned_whole_with_the_request_it_answers() -> None:
    """What the workflow waits with: the OP's auth_req_id, expires_in and interval, the mode, the
    binding message as sent, and the binding that later checks the tokens against the request."""
    sent: list[dict[str, str]] = []
    answer = httpx.Response(200, json={"auth_req_id": "req-7", "expires_in": 300, "interval": 9})
    acts = activities(answer, delivery_mode="ping", sent=sent, notification_token=notification_token)
    result = await env().run(acts.send_authentication_request, send_input())
    assert (result.auth_req_id, result.expires_in, result.interval, result.delivery_mode, result.error) == (
        "req-7",
        300,
        9,
        "ping",
        None,
    )
    assert result.binding_message_sent == "Approve it" == sent[0]["binding_message"]
    assert result.binding is not None and result.binding.auth_req_id == "req-7"
    assert (result.records, result.poll_activity) == (True, True)
    # CIBA §7.1: in ping mode the request carries the token the callback proves pings with, made
    # for this approval's workflow and first run.
    assert sent[0]["client_notification_token"] == notification_token("wf", "run")


async def test_a_poll_mode_request_carries_no_notification_token() -> None:
    sent: list[dict[str, str]] = []
    acts = activities(ACK, sent=sent, notification_token=notification_token)
    assert (await env().run(acts.send_authentication_request, send_input())).auth_req_id == "req-1"
    assert "client_notification_token" not in sent[0]


async def test_ping_mode_without_a_notification_token_factory_is_a_bug_not_a_request() -> None:
    sent: list[dict[str, str]] = []
    acts = activities(ACK, delivery_mode="ping", sent=sent)
    with pytest.raises(RuntimeError, match="ping mode needs a notification token factory"):
        await env().run(acts.send_authentication_request, send_input())
    assert sent == []


@pytest.mark.parametrize(
    ("answer", "request_fields", "error", "reason"),
    [
        (
            httpx.Response(400, json={"error": "unknown_user_id", "error_description": "no such user"}),
            {},
            "unknown_user_id",
            "no such user",
        ),
        (httpx.ReadTimeout("no answer"), {}, REQUEST_OUTCOME_UNKNOWN, "did not answer in time; not sent again"),
        (ACK, {"id_token_hint": "not-a-jwt"}, ID_TOKEN_HINT_INVALID, "the id_token_hint is refused: "),
    ],
    ids=["refused", "outcome-unknown", "id-token-hint"],
)
async def test_a_request_that_ends_without_an_acknowledgement_says_why_in_its_mode(
    answer: httpx.Response | Exception, request_fields: dict[str, str], error: str, reason: str
) -> None:
    """A refusal is data the workflow ends the approval with: the spec's error code (or ours), the
    reason, and the mode the approval was asked in; never an auth_req_id."""
    acts = activities(answer, delivery_mode="ping", notification_token=notification_token)
    fields: dict[str, object] = {"login_hint": "alice@example.com", "binding_message": "Approve it", **request_fields}
    if "id_token_hint" in request_fields:
        del fields["login_hint"]
    approval = ApprovalRequest(**fields)  # type: ignore[arg-type]
    result = await env().run(
        acts.send_authentication_request, SendRequestInput(request=approval, workflow_id="wf", first_run_id="run")
    )
    assert (result.error, result.delivery_mode, result.auth_req_id) == (error, "ping", None)
    assert result.reason is not None and reason in result.reason


async def test_a_binding_message_the_ops_rule_cannot_fit_is_not_sent() -> None:
    sent: list[dict[str, str]] = []
    dialect = RequestDialect(binding_message=BindingMessageRule(max_length=8, pattern=r"^[A-Za-z ]{1,8}$"))
    acts = activities(ACK, delivery_mode="ping", sent=sent, notification_token=notification_token, dialect=dialect)
    result = await env().run(acts.send_authentication_request, send_input(binding_message="Pay EUR 120.00 now"))
    assert (result.error, result.delivery_mode, result.auth_req_id, sent) == ("binding_message_unfit", "ping", None, [])
    assert result.reason is not None and "Pay EUR 120.00 now" in result.reason


async def test_an_op_that_does_not_offer_the_mode_is_not_asked() -> None:
    """No error code of the spec's: the reason names the mode; nothing reached the OP."""
    sent: list[dict[str, str]] = []
    acts = activities(ACK, delivery_mode="ping", sent=sent, modes=("poll",), notification_token=notification_token)
    result = await env().run(acts.send_authentication_request, send_input())
    assert (result.error, result.delivery_mode, result.auth_req_id) == (None, "ping", None)
    assert result.reason is not None and "ping" in result.reason and "\n" not in result.reason
    assert sent == []


async def test_a_request_that_breaks_ciba_is_not_sent_and_its_reason_names_the_rule() -> None:
    """CIBA §7.1: a client_notification_token carries at least 128 bits of entropy."""
    sent: list[dict[str, str]] = []
    acts = activities(ACK, delivery_mode="ping", sent=sent, notification_token=lambda workflow_id, run_id: "short")
    result = await env().run(acts.send_authentication_request, send_input())
    assert (result.error, result.auth_req_id, sent) == (None, None, [])
    assert (
        result.reason
        == "client_notification_token: client_notification_token is too short to carry 128 bits of entropy"
    )


@pytest.mark.parametrize(
    "subjects,expected_subject,pinned_to",
    [
        ({}, None, None),
        ({"alice@example.com": "sub-alice"}, None, "sub-alice"),
        ({"alice@example.com": "sub-alice"}, "sub-other", "sub-other"),  # the caller's own wins
        ({"bob@example.com": "sub-bob"}, None, None),
    ],
)
async def test_the_approver_is_pinned_where_the_worker_knows_the_subject(
    subjects: dict[str, str], expected_subject: str | None, pinned_to: str | None
) -> None:
    acts = activities(ACK, login_hint_subjects=subjects)
    result = await env().run(acts.send_authentication_request, send_input(expected_subject=expected_subject))
    assert result.binding is not None and result.binding.expected_subject == pinned_to


async def test_a_request_that_may_have_reached_the_op_is_not_sent_again() -> None:
    acts = activities(httpx.ReadTimeout("no answer"))
    result = await env().run(acts.send_authentication_request, send_input())
    assert result.error == REQUEST_OUTCOME_UNKNOWN and result.auth_req_id is None
    assert result.reason is not None and "not sent again" in result.reason


async def test_a_request_unanswered_within_its_attempt_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer that trickles in under httpx's per-read timeout still ends within the attempt's
    limit (here shortened), as an unknown outcome: the user may have been prompted already."""
    monkeypatch.setattr(send_module, "ATTEMPT_SECONDS", 0.05)
    requests: list[httpx.Request] = []

    async def silent_op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**METADATA, "backchannel_token_delivery_modes_supported": ["ping"]})
        requests.append(request)
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    http = httpx.AsyncClient(transport=httpx.MockTransport(silent_op))
    ciba = CibaClient(
        issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), delivery_mode="ping", http=http
    )
    acts = CibaActivities(ciba, TokenSealer(os.urandom(32)), notification_token=notification_token)
    result = await env().run(acts.send_authentication_request, send_input())
    assert (result.error, result.auth_req_id, len(requests)) == (REQUEST_OUTCOME_UNKNOWN, None, 1)
    assert result.delivery_mode == "ping"
    assert result.reason == "the OP did not answer within 0.05 s; not sent again"


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.Response(503)])
async def test_a_request_that_never_reached_the_op_is_retried(
    failure: httpx.Response | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Raised, so that Temporal's retry policy sends it again; logged in one line, no traceback.

    BENIGN: the SDK logs the failure at DEBUG instead of a warning with the traceback, per attempt."""
    acts = activities(failure)
    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError) as raised:
        await env().run(acts.send_authentication_request, send_input())
    assert raised.value.type == "TransportError" and not raised.value.non_retryable
    assert raised.value.category == ApplicationErrorCategory.BENIGN
    said = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].exc_info is None
    assert "is unreachable" in said[0].getMessage() and "retrying" in said[0].getMessage()


@pytest.mark.parametrize("attempt,error", [(1, "invalid_grant"), (2, GRANT_LOST)])
async def test_invalid_grant_on_a_retry_is_a_lost_grant(attempt: int, error: str) -> None:
    """invalid_grant on a retried token request is a lost grant, on a first attempt an error.

    A retry meets invalid_grant when the attempt before it got the tokens and died before
    recording them (the OP then refuses the auth_req_id)."""
    acts = activities(httpx.Response(400, json={"error": "invalid_grant"}))
    result = await env(attempt).run(acts.request_token, TokenRequestInput(auth_req_id="req-1"))
    assert (result.kind, result.error) == ("failed", error)
    assert result.reason == (GRANT_LOST_REASON if error == GRANT_LOST else "invalid_grant")


async def test_a_rejected_grant_has_its_refresh_token_revoked_too() -> None:
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    tokens = token_response(op.keys.sign(claims()))  # with a refresh token
    sealed = sealer.seal(tokens.model_dump_json(), context=tokens_context(AUTH_REQ_ID, "wf"))  # env()'s workflow
    acts = op.activities(sealer, requested_at=NOW - 30)
    assert await env().run(acts.revoke_tokens, RevokeTokensInput(sealed_tokens=sealed, auth_req_id=AUTH_REQ_ID))
    assert [(form["token"], form["token_type_hint"]) for form in op.revoked] == [
        (ACCESS_TOKEN, "access_token"),
        (REFRESH_TOKEN, "refresh_token"),
    ]


async def test_the_binding_records_when_the_request_was_sent() -> None:
    acts = activities(ACK, clock=lambda: 1234.5)
    result = await env().run(acts.send_authentication_request, send_input())
    assert result.binding is not None and result.binding.requested_at == 1234.5


@pytest.mark.parametrize(
    "issued,error",
    [
        (NOW - 5, None),  # after the request: the binding is otherwise a match
        (NOW - 300, "iat_before_request"),  # recent enough, but before the request: a replay
    ],
)
async def test_tokens_issued_before_the_request_are_rejected(issued: float, error: str | None) -> None:
    """End to end through the activities.

    The binding that send_authentication_request makes carries the time it sent the request, and
    validate_tokens rejects tokens older than that."""
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    sent = await env().run(
        acts.send_authentication_request,
        send_input(scope="openid payments", authorization_details=DETAILS, expected_subject="alice"),
    )
    assert sent.binding is not None
    id_token = op.keys.sign(claims(iat=int(issued), auth_time=int(issued) - 10, acr=None))
    sealed = sealer.seal(token_response(id_token).model_dump_json(), context=tokens_context(AUTH_REQ_ID, "wf"))
    validation = ValidateTokensInput(
        sealed_tokens=sealed, binding=sent.binding, holder_workflow_id="wf", holder_run_id="run"
    )
    result = await env().run(acts.validate_tokens, validation)
    assert result.error == error, result.reason
    assert (result.approval is None) == (error is not None)


def test_a_reason_names_the_parameter_path_or_only_the_rule_of_the_whole_request() -> None:
    class Nested(BaseModel):
        limit: int = Field(gt=0)

    class Request(BaseModel):
        nested: Nested | None = None
        hint: str | None = None

        @model_validator(mode="after")
        def _one_hint(self) -> Request:
            if self.hint == "two":
                raise ValueError("give exactly one hint")
            return self

    with pytest.raises(ValidationError) as nested:
        Request.model_validate({"nested": {"limit": 0}})
    assert one_line(nested.value) == "nested.limit: Input should be greater than 0"
    with pytest.raises(ValidationError) as whole:
        Request.model_validate({"hint": "two"})
    assert one_line(whole.value) == "give exactly one hint"
    assert one_line(ValueError("first line\nsecond")) == "first line"

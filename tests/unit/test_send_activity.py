"""The approval activities' own rules, in an activity context over an in-process HTTP
transport: whom an approval is pinned to, never asking the user twice, and naming a lost grant."""

from __future__ import annotations

import dataclasses
import os

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba.activities import GRANT_LOST, REQUEST_OUTCOME_UNKNOWN, CibaActivities
from temporal_ciba.ciba import CibaClient, ClientSecretBasic, TransportError
from temporal_ciba.crypto import TokenSealer
from temporal_ciba.models import ApprovalRequest, SendRequestInput, TokenRequestInput
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA


def activities(bc_answer: httpx.Response | Exception, **options: object) -> CibaActivities:
    async def op(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        if isinstance(bc_answer, Exception):
            raise bc_answer
        return bc_answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(op))
    ciba = CibaClient(issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http)
    return CibaActivities(ciba, TokenSealer(os.urandom(32)), **options)  # type: ignore[arg-type]


def send_input(**request: object) -> SendRequestInput:
    approval = ApprovalRequest(login_hint="alice@example.com", binding_message="Approve it", **request)  # type: ignore[arg-type]
    return SendRequestInput(request=approval, workflow_id="wf", first_run_id="run")


def env(attempt: int = 1) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, workflow_id="wf", workflow_run_id="run", attempt=attempt)
    return environment


ACK = httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120})


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


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.Response(503)])
async def test_a_request_that_never_reached_the_op_is_retried(failure: httpx.Response | Exception) -> None:
    acts = activities(failure)
    with pytest.raises(TransportError):  # raised: Temporal's retry policy sends it again
        await env().run(acts.send_authentication_request, send_input())


@pytest.mark.parametrize("attempt,error", [(1, "invalid_grant"), (2, GRANT_LOST)])
async def test_invalid_grant_on_a_retry_is_a_lost_grant(attempt: int, error: str) -> None:
    """A retried token request meets invalid_grant when the attempt before it got the tokens and
    died before recording them (the OP then refuses the auth_req_id)."""
    acts = activities(httpx.Response(400, json={"error": "invalid_grant"}))
    result = await env(attempt).run(acts.request_token, TokenRequestInput(auth_req_id="req-1"))
    assert (result.kind, result.error) == ("failed", error)

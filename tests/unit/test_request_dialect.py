"""The OP's dialect, applied by the send activity before anything is sent.

The binding message fitted to the OP's rule (or a clear error, nothing sent), the login_hint in
the OP's format, required and default parameters, RFC 8707 resources, claims, and the approver
pinned by an id_token_hint proven to be this OP's ID token for this client."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba._activities import ID_TOKEN_HINT_INVALID, SUBJECT_CONFLICT, CibaActivities
from temporal_ciba._models import ApprovalRequest, SendRequestInput
from temporal_ciba.ciba import CibaClient, ClientSecretBasic
from temporal_ciba.ciba._binding_message import BindingMessageRule
from temporal_ciba.ciba._dialect import RequestDialect
from temporal_ciba.crypto import TokenSealer
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW, Keys, claims

DIGEST = "ab" * 32  # its code: the first 4 base32 characters of 0xababab -> "VOV2"
OIDC_PROVIDER_RULE = BindingMessageRule(max_length=20, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,20}$")


class RecordingOP:
    """An OP at ISSUER that acknowledges every request and records the forms sent to it."""

    def __init__(self) -> None:
        self.keys = Keys()
        self.sent: list[list[tuple[str, str]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=METADATA)
        if request.url.path == "/jwks":
            return httpx.Response(200, json=self.keys.jwks_document())
        self.sent.append(httpx.QueryParams(request.content.decode()).multi_items())
        return httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 120})

    def form(self) -> dict[str, list[str]]:
        assert len(self.sent) == 1
        form: dict[str, list[str]] = {}
        for name, value in self.sent[0]:
            form.setdefault(name, []).append(value)
        return form

    async def send(self, dialect: RequestDialect | None = None, **request: Any) -> Any:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        ciba = CibaClient(
            issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW
        )
        acts = CibaActivities(ciba, TokenSealer(os.urandom(32)), dialect=dialect)
        approval = ApprovalRequest(**{"binding_message": "Approve it", **request})
        environment = ActivityEnvironment()
        environment.info = dataclasses.replace(environment.info, workflow_id="wf", workflow_run_id="run")
        return await environment.run(
            acts.send_authentication_request, SendRequestInput(request=approval, workflow_id="wf", first_run_id="run")
        )


async def test_the_generic_dialect_sends_the_message_as_asked() -> None:
    op = RecordingOP()
    result = await op.send(login_hint="alice", binding_message="Pay EUR 120.00 to ACME GmbH, code VOV2")
    assert op.form()["binding_message"] == ["Pay EUR 120.00 to ACME GmbH, code VOV2"]
    assert op.form()["login_hint"] == ["alice"]
    assert result.binding_message_sent == "Pay EUR 120.00 to ACME GmbH, code VOV2"


@pytest.mark.parametrize(
    "request_fields,sent",
    [
        ({"action_digest": DIGEST}, "Pay-EUR-120.00-VOV2"),
        ({"binding_code": "7Q4K"}, "Pay-EUR-120.00-7Q4K"),
    ],
    ids=["code_from_action_digest", "binding_code"],
)
async def test_a_message_the_rule_refuses_is_shortened_keeping_the_code(
    request_fields: dict[str, Any], sent: str
) -> None:
    op = RecordingOP()
    dialect = RequestDialect(binding_message=OIDC_PROVIDER_RULE)
    message = f"Pay EUR 120.00 to ACME GmbH, code {request_fields.get('binding_code', 'VOV2')}"
    result = await op.send(dialect, login_hint="alice", binding_message=message, **request_fields)
    assert op.form()["binding_message"] == [sent]
    assert result.binding_message_sent == sent and result.auth_req_id == "req-1"


async def test_a_message_that_cannot_fit_is_an_error_and_nothing_is_sent() -> None:
    op = RecordingOP()
    dialect = RequestDialect(binding_message=OIDC_PROVIDER_RULE)
    result = await op.send(dialect, login_hint="alice", binding_message="Pay EUR 120.00 to ACME GmbH")
    assert (result.auth_req_id, result.error) == (None, "binding_message_unfit")
    assert result.reason is not None and "Pay EUR 120.00 to ACME GmbH" in result.reason
    assert op.sent == []


async def test_iss_sub_login_hint_is_sent_as_json_and_pins_the_approver() -> None:
    op = RecordingOP()
    result = await op.send(RequestDialect(login_hint_format="iss_sub"), login_hint="auth0|123")
    assert json.loads(op.form()["login_hint"][0]) == {"format": "iss_sub", "iss": ISSUER, "sub": "auth0|123"}
    assert result.binding.expected_subject == "auth0|123"


async def test_required_parameter_missing_is_refused_and_a_default_fills_it() -> None:
    op = RecordingOP()
    result = await op.send(RequestDialect(required_parameters=frozenset({"audience"})), login_hint="alice")
    assert result.auth_req_id is None and "requires audience" in (result.reason or "")
    assert op.sent == []
    dialect = RequestDialect(required_parameters=frozenset({"audience"}), default_audience="https://api.example")
    assert (await op.send(dialect, login_hint="alice")).auth_req_id == "req-1"
    assert op.form()["audience"] == ["https://api.example"]


async def test_extra_parameters_reach_the_op() -> None:
    op = RecordingOP()
    await op.send(
        login_hint="alice",
        audience="https://api.example",
        resource=["https://payments.example/", "https://ledger.example/"],
        claims={"id_token": {"email": {"essential": True}}},
    )
    form = op.form()
    assert form["audience"] == ["https://api.example"]
    assert form["resource"] == ["https://payments.example/", "https://ledger.example/"]
    assert json.loads(form["claims"][0]) == {"id_token": {"email": {"essential": True}}}


async def test_login_hint_token_is_sent_instead_of_a_login_hint() -> None:
    op = RecordingOP()
    await op.send(login_hint_token="lht-opaque")
    assert op.form()["login_hint_token"] == ["lht-opaque"] and "login_hint" not in op.form()


@pytest.mark.parametrize(
    "hints",
    [{}, {"login_hint": "alice", "login_hint_token": "t"}, {"login_hint": "alice", "id_token_hint": "a.b.c"}],
    ids=["none", "login_hint_and_token", "login_hint_and_id_token_hint"],
)
def test_exactly_one_hint(hints: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one of login_hint"):
        ApprovalRequest(binding_message="x", **hints)  # type: ignore[arg-type]


def test_resource_must_be_absolute_without_fragment() -> None:
    for resource in ("payments", "https://api.example/#x"):
        with pytest.raises(ValueError, match="RFC 8707"):
            ApprovalRequest(login_hint="alice", binding_message="x", resource=[resource])


def _hint(op: RecordingOP, **overrides: Any) -> str:
    return op.keys.sign(claims(**{"iat": int(NOW) - 86400, "exp": int(NOW) - 3600, **overrides}))


async def test_id_token_hint_of_this_op_for_this_client_pins_its_subject_even_when_expired() -> None:
    op = RecordingOP()
    result = await op.send(id_token_hint=_hint(op, sub="alice-sub"))
    assert result.auth_req_id == "req-1" and result.binding.expected_subject == "alice-sub"
    assert op.form()["id_token_hint"] == [_hint(op, sub="alice-sub")]


@pytest.mark.parametrize(
    "overrides,forged",
    [
        ({"iss": "https://evil.example"}, False),
        ({"aud": "another-client"}, False),
        ({"sub": None}, False),
        ({}, True),
    ],
    ids=["another_issuer", "another_client", "no_sub", "signed_by_another_key"],
)
async def test_id_token_hint_not_issued_by_this_op_to_this_client_is_refused(
    overrides: dict[str, Any], forged: bool
) -> None:
    op = RecordingOP()
    hint = Keys().sign(claims()) if forged else _hint(op, **overrides)
    result = await op.send(id_token_hint=hint)
    assert (result.auth_req_id, result.error) == (None, ID_TOKEN_HINT_INVALID)
    assert op.sent == []


async def test_id_token_hint_and_expected_subject_must_agree() -> None:
    op = RecordingOP()
    result = await op.send(id_token_hint=_hint(op, sub="alice-sub"), expected_subject="bob-sub")
    assert (result.auth_req_id, result.error) == (None, SUBJECT_CONFLICT)
    assert result.reason == "the approver is named differently by expected_subject, the id_token_hint"
    assert op.sent == []


async def test_an_iss_sub_login_hint_and_expected_subject_must_agree() -> None:
    """The iss_sub login_hint is the approver's `sub` itself: a caller's other subject is a conflict."""
    op = RecordingOP()
    iss_sub = RequestDialect(login_hint_format="iss_sub")
    result = await op.send(iss_sub, login_hint="auth0|123", expected_subject="auth0|456")
    assert (result.auth_req_id, result.error, op.sent) == (None, SUBJECT_CONFLICT, [])
    assert result.reason == "the approver is named differently by expected_subject, the iss_sub login_hint"
    agreeing = RecordingOP()
    result = await agreeing.send(iss_sub, login_hint="auth0|123", expected_subject="auth0|123")
    assert result.error is None and result.binding.expected_subject == "auth0|123"

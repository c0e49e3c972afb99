"""The example payment API's rules, one test each, with its app in the test process.

`create_app` runs over `httpx.ASGITransport` (or raw ASGI, where a test counts what the app reads),
its OP a crafted double behind `httpx.MockTransport` (tests/support/payment_api.py): token
introspection, the action digest in the token's authorization_details, the DPoP and certificate
sender constraints, one payment per grant, Idempotency-Keys, the body limit, hostile input, the
operator token and the settings. tests/security/test_payment_api.py drives the real process."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from uvicorn.config import Config
from uvicorn.server import ServerState

from temporal_ciba.ciba import PROOF_MAX_AGE_SECONDS, certificate_thumbprint
from temporal_ciba.ciba._dpop import DPoPKey, access_token_hash
from temporal_ciba_examples.payment_agent import payment_api as payment_api_module
from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest
from temporal_ciba_examples.payment_agent.payment_api import (
    MAX_BODY_BYTES,
    MAX_TOKEN_CHARS,
    OP_TIMEOUT,
    REVOCATION_TIMEOUT,
    ClientCertificateH11Protocol,
    PaymentStore,
    SeenProofs,
    create_app,
    presented_certificate_thumbprint,
    valid_access_token,
    valid_action_digest,
    valid_idempotency_key,
    with_client_certificate,
)
from tests.support.mtls import self_signed_client_certificate
from tests.support.payment_api import (
    AGENT,
    API,
    API_CLIENT,
    API_SECRET,
    INVOICE,
    OPERATOR,
    CraftedOP,
    api_settings,
    body_of,
    granted,
    payment_api,
)

OTHER = INVOICE.model_copy(update={"reference": "INV-2026-119"})
KEY = "idem-key-0001"


def bearer(token: str, key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "idempotency-key": key}


async def pay(client: httpx.AsyncClient, token: str, key: str = KEY, action: PaymentAction = INVOICE) -> httpx.Response:
    return await client.post("/payments", json=body_of(action), headers=bearer(token, key))


# Introspection: active, the agent's client, the scope, this action ---------------------------------


async def test_a_granted_token_pays_once_and_is_revoked(tmp_path: Path) -> None:
    """The whole path: introspected with the API's credentials, paid (201), then revoked at the OP."""
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        paid = await pay(client, "tok-1")
    assert paid.status_code == 201, paid.text
    assert paid.json()["duplicate"] is False and paid.json()["payment_id"].startswith("pay_")
    assert len(paid.json()["payment_id"]) == len("pay_") + 20
    assert op.introspected == ["tok-1"] and op.revoked == ["tok-1"]
    assert [form["token_type_hint"] for form in op.forms] == [["access_token"], ["access_token"]]
    basic = httpx.BasicAuth(API_CLIENT, API_SECRET)._auth_header
    assert op.authorizations == [basic, basic]
    assert op.discoveries == 1


async def test_a_token_inactive_at_introspection_is_401(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": {**granted(), "active": False}, "tok-2": {**granted(), "active": "true"}})
    async with payment_api(api_settings(tmp_path), op) as client:
        answers = [await pay(client, token, f"idem-key-{token}") for token in ("tok-1", "tok-2", "unknown")]
    for answer in answers:
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_token", answer.text
    assert op.revoked == []


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic dG9rLTE=", "Bearer", "Bearer ", "tok-1", "Bearer tok 1", "Bearer tök", "Bearer " + "a" * 4097],
)
async def test_no_bearer_or_dpop_token_of_b64token_syntax_is_401_before_the_op(
    tmp_path: Path, authorization: str | None
) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    headers: dict[str, Any] = {"idempotency-key": KEY}
    if authorization is not None:
        headers["authorization"] = authorization.encode("latin-1")
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=body_of(INVOICE), headers=headers)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_token"
    assert answer.headers["www-authenticate"] == 'Bearer realm="payments", DPoP algs="ES256 PS256"'
    assert op.introspected == []


async def test_the_scheme_is_case_insensitive_and_the_token_at_most_max_token_chars(tmp_path: Path) -> None:
    longest = "a" * MAX_TOKEN_CHARS
    op = CraftedOP(tokens={"tok-1": granted(), longest: granted(OTHER)})
    async with payment_api(api_settings(tmp_path), op) as client:
        lower = await client.post(
            "/payments", json=body_of(INVOICE), headers=bearer("tok-1") | {"authorization": "bEARER  tok-1 "}
        )
        long = await pay(client, longest, "idem-key-0002", OTHER)
    assert lower.status_code == 201 and long.status_code == 201
    assert op.introspected == ["tok-1", longest]


async def test_a_token_of_another_client_is_403(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"t1": granted(client_id="someone"), "t2": granted(client_id=["agent-app"])})
    settings_ = api_settings(tmp_path, agent_client_ids="other-agent, agent-app ,")
    async with payment_api(settings_, op) as client:
        refused = [await pay(client, token, f"idem-key-{token}") for token in ("t1", "t2")]
        op.tokens["t3"] = granted()
        paid = await pay(client, "t3", "idem-key-t3")
    assert [(r.status_code, r.json()["error"], r.json()["error_description"]) for r in refused] == [
        (403, "insufficient_scope", "the access token was issued to another client")
    ] * 2
    assert paid.status_code == 201


@pytest.mark.parametrize("scope", ["openid", "payments:read", "openid paymentsx", 7, None])
async def test_a_token_without_the_payments_scope_is_403(tmp_path: Path, scope: Any) -> None:
    op = CraftedOP(tokens={"tok-1": granted(scope=scope), "tok-2": granted(OTHER, scope="payments")})
    async with payment_api(api_settings(tmp_path), op) as client:
        refused = await pay(client, "tok-1")
        paid = await pay(client, "tok-2", "idem-key-0002", OTHER)
    assert refused.status_code == 403 and refused.json() == {
        "error": "insufficient_scope",
        "error_description": "the access token lacks the payments scope",
    }
    assert paid.status_code == 201


async def test_a_token_granted_for_another_action_digest_is_403(tmp_path: Path) -> None:
    """authorization_details must name exactly this action and its digest; other types are ignored."""
    details = granted()["authorization_details"]
    other_digest = [{**details[0], "action_digest": action_digest(OTHER)}]
    op = CraftedOP(
        tokens={
            "other-action": granted(OTHER),
            "other-digest": granted(authorization_details=other_digest),
            "twice": granted(authorization_details=details * 2),
            "none": granted(authorization_details=None),
            "not-a-list": granted(authorization_details=details[0]),
            "extra-type": granted(authorization_details=[{"type": "other"}, 5, *details]),
        }
    )
    async with payment_api(api_settings(tmp_path), op) as client:
        answers = {token: await pay(client, token, f"idem-key-{token}") for token in op.tokens}
    assert {token: answer.status_code for token, answer in answers.items()} == {
        "other-action": 403,
        "other-digest": 403,
        "twice": 403,
        "none": 403,
        "not-a-list": 403,
        "extra-type": 201,
    }
    assert answers["other-digest"].json()["error"] == "insufficient_authorization"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, json={"error": "temporarily_unavailable"}),
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=["active"]),
        httpx.ConnectError("down"),
    ],
)
async def test_an_introspection_that_fails_is_503(tmp_path: Path, failure: Any) -> None:
    op = CraftedOP(tokens={"tok-1": granted()}, introspection=failure)
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await pay(client, "tok-1")
    assert answer.status_code == 503 and answer.json()["error"] == "temporarily_unavailable"


async def test_an_op_without_an_introspection_endpoint_is_503(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted()}, metadata={"introspection_endpoint": None})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await pay(client, "tok-1")
    assert answer.status_code == 503 and op.introspected == []


async def test_each_request_to_the_op_carries_its_timeout(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        assert (await pay(client, "tok-1")).status_code == 201
    assert op.timeouts == {
        "/.well-known/openid-configuration": [OP_TIMEOUT.as_dict()],
        "/introspect": [OP_TIMEOUT.as_dict()],
        "/revoke": [REVOCATION_TIMEOUT.as_dict()],
    }


async def test_without_a_client_given_the_app_builds_one_that_follows_no_redirect_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own client: OP_TIMEOUT, no redirects (the API's credentials go to the OP's endpoints
    alone), closed when the app shuts down."""
    built: list[tuple[dict[str, Any], httpx.AsyncClient]] = []
    real = httpx.AsyncClient

    def client(**options: Any) -> httpx.AsyncClient:
        made = real(transport=httpx.MockTransport(CraftedOP(tokens={"tok-1": granted()})), **options)
        built.append((options, made))
        return made

    monkeypatch.setattr(payment_api_module.httpx, "AsyncClient", client)
    app = create_app(api_settings(tmp_path))
    monkeypatch.undo()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as api:
            assert (await pay(api, "tok-1")).status_code == 201
        ((options, made),) = built
        assert not made.is_closed
    assert options == {"timeout": OP_TIMEOUT, "follow_redirects": False}
    assert made.is_closed


async def test_a_client_given_to_the_app_stays_open(tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(CraftedOP())) as http:
        app = create_app(api_settings(tmp_path), http=http)
        async with app.router.lifespan_context(app):
            pass
        assert not http.is_closed


# Revocation once paid ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "revocation", [httpx.Response(400, json={"error": "unauthorized_client"}), httpx.ConnectError("down"), None]
)
async def test_a_refused_revocation_is_logged_and_the_grant_stays_used(
    tmp_path: Path, revocation: Any, caplog: pytest.LogCaptureFixture
) -> None:
    op = CraftedOP(tokens={"tok-1": granted()}, revocation=revocation)
    if revocation is None:
        op.metadata["revocation_endpoint"] = None
    async with payment_api(api_settings(tmp_path), op) as client:
        with caplog.at_level(logging.WARNING):
            paid = await pay(client, "tok-1")
        op.revoked.clear()  # still active at the OP
        again = await pay(client, "tok-1", "idem-key-0002")
    assert paid.status_code == 201 and again.status_code == 409
    expected = {
        httpx.Response: "the OP refused to revoke a used access token: HTTP 400",
        httpx.ConnectError: "revoking a used access token failed: ConnectError",
        type(None): "the OP has no revocation_endpoint: tokens stay active after they paid",
    }[type(revocation)]
    assert expected in caplog.messages
    assert "tok-1" not in caplog.text


async def test_a_revocation_the_op_accepts_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        with caplog.at_level(logging.WARNING):
            assert (await pay(client, "tok-1")).status_code == 201
    assert op.revoked == ["tok-1"] and caplog.messages == []


# One payment per grant ----------------------------------------------------------------------------


async def test_a_second_payment_with_the_same_token_is_409_whatever_the_key(tmp_path: Path) -> None:
    """Answered before the OP is asked, whatever the token's state there."""
    op = CraftedOP(tokens={"tok-1": granted()}, revocation=httpx.Response(503))
    async with payment_api(api_settings(tmp_path), op) as client:
        paid = await pay(client, "tok-1")
        replays = [await pay(client, "tok-1", f"idem-key-000{n}") for n in (2, 3)]
        other_body = await pay(client, "tok-1", "idem-key-0004", OTHER)
    assert paid.status_code == 201
    for answer in [*replays, other_body]:
        assert answer.status_code == 409 and answer.json()["error"] == "grant_already_used", answer.text
    assert op.introspected == ["tok-1"]


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ({"jti": "grant-1"}, {"jti": "grant-1"}, True),
        ({"jti": "grant-1"}, {"jti": "grant-2"}, False),
        ({"jti": ""}, {"jti": ""}, False),
        ({"auth_req_id": "req-1"}, {"auth_req_id": "req-1"}, True),
        ({"auth_req_id": "req-1"}, {"urn:openid:params:jwt:claim:auth_req_id": "req-1"}, True),
        ({"urn:openid:params:jwt:claim:auth_req_id": "req-1"}, {"auth_req_id": "req-1"}, True),
        ({"auth_req_id": "req-1", "urn:openid:params:jwt:claim:auth_req_id": "req-1"}, {"auth_req_id": "req-2"}, False),
        ({"auth_req_id": ""}, {"auth_req_id": ""}, False),
        ({"jti": 5, "auth_req_id": 5}, {"jti": 5, "auth_req_id": 5}, False),
    ],
)
async def test_another_token_of_the_same_grant_is_409(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], refused: bool
) -> None:
    """The grant is the token, its jti, or its auth_req_id (under either claim name): another token
    of the same grant pays nothing more, for another action too (one payment per action off)."""
    op = CraftedOP(tokens={"tok-1": granted(**first), "tok-2": granted(OTHER, **second)})
    async with payment_api(api_settings(tmp_path, one_payment_per_action=False), op) as client:
        paid = await pay(client, "tok-1")
        again = await pay(client, "tok-2", "idem-key-0002", OTHER)
    assert paid.status_code == 201
    assert again.status_code == (409 if refused else 201), again.text


async def test_the_same_action_approved_again_is_409_unless_switched_off(tmp_path: Path) -> None:
    """By default one payment per action digest and agent client, across grants."""
    tokens = {"tok-1": granted(jti="a"), "tok-2": granted(jti="b"), "tok-3": granted(jti="c", client_id="agent-2")}
    answers: dict[bool, list[int]] = {}
    for per_action in (True, False):
        directory = tmp_path / str(per_action)
        directory.mkdir()
        settings_ = api_settings(directory, one_payment_per_action=per_action, agent_client_ids=[AGENT, "agent-2"])
        async with payment_api(settings_, CraftedOP(tokens=dict(tokens))) as client:
            answers[per_action] = [
                (await pay(client, token, f"idem-key-{token}")).status_code for token in ("tok-1", "tok-2", "tok-3")
            ]
    assert answers == {True: [201, 409, 201], False: [201, 201, 201]}


async def test_a_grant_consumed_while_the_request_was_at_the_op_is_409(tmp_path: Path) -> None:
    """Two tokens of one grant at once: the second to record finds the grant consumed."""
    op = CraftedOP(tokens={"tok-1": granted(jti="g"), "tok-2": granted(jti="g")})
    async with payment_api(api_settings(tmp_path), op) as client:
        op.hold = release = asyncio.Event()
        late = asyncio.create_task(pay(client, "tok-1", "idem-key-0001"))
        await op.holding.wait()
        first = await pay(client, "tok-2", "idem-key-0002")
        release.set()
        second = await late
    assert first.status_code == 201
    assert second.status_code == 409 and second.json()["error"] == "grant_already_used"


# Idempotency-Keys ----------------------------------------------------------------------------------


async def test_a_retried_key_answers_the_recorded_receipt(tmp_path: Path) -> None:
    """The same key, token and body: the receipt (200, duplicate), without asking the OP again."""
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        paid = await pay(client, "tok-1")
        op.introspection = httpx.ConnectError("down")
        retry = await pay(client, "tok-1")
    assert paid.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == {"payment_id": paid.json()["payment_id"], "duplicate": True}
    assert op.introspected == ["tok-1"]


async def test_a_retry_racing_its_first_attempt_gets_the_receipt(tmp_path: Path) -> None:
    """The retry reaches the OP after the first attempt paid and revoked: the receipt, not 401."""
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        op.hold = release = asyncio.Event()
        retry = asyncio.create_task(pay(client, "tok-1"))
        await op.holding.wait()
        first = await pay(client, "tok-1")
        release.set()
        answer = await retry
    assert first.status_code == 201
    assert answer.status_code == 200 and answer.json()["payment_id"] == first.json()["payment_id"]


async def test_the_same_key_and_token_with_another_body_is_422(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        await pay(client, "tok-1")
        other = await pay(client, "tok-1", KEY, OTHER)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"


async def test_the_same_key_under_another_grant_is_409_or_with_another_body_422(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted(), "tok-2": granted(), "tok-3": granted(OTHER)})
    async with payment_api(api_settings(tmp_path, one_payment_per_action=False), op) as client:
        paid = await pay(client, "tok-1")
        same_body = await pay(client, "tok-2")
        other_body = await pay(client, "tok-3", KEY, OTHER)
    assert paid.status_code == 201
    assert same_body.status_code == 409 and same_body.json()["error"] == "grant_mismatch"
    assert other_body.status_code == 422 and other_body.json()["error"] == "idempotency_key_reused"
    assert op.revoked == ["tok-1"]


@pytest.mark.parametrize(
    ("key", "valid"), [("k" * 7, False), ("k" * 8, True), ("k " * 1024, True), ("k" * 2049, False)]
)
async def test_the_idempotency_key_is_8_to_2048_visible_ascii_characters(tmp_path: Path, key: str, valid: bool) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await pay(client, "tok-1", key)
    assert answer.status_code == (201 if valid else 400)
    assert answer.json().get("error") == (None if valid else "invalid_request")
    assert valid_idempotency_key(key) is valid


def test_keys_tokens_and_digests_are_matched_whole() -> None:
    assert not valid_idempotency_key("key-0001\n") and not valid_idempotency_key("key-000\x7f1")
    assert not valid_idempotency_key("ключ-0001-ключ") and valid_idempotency_key("~ !key-0001")
    assert valid_access_token("aZ09-._~+/==") and not valid_access_token("tok\n") and not valid_access_token("=tok")
    assert not valid_access_token("") and valid_access_token("a" * MAX_TOKEN_CHARS)
    assert not valid_access_token("a" * (MAX_TOKEN_CHARS + 1))
    digest = action_digest(INVOICE)
    assert valid_action_digest(digest) and not valid_action_digest(digest + "\n")
    assert not valid_action_digest(digest.upper()) and not valid_action_digest(digest[:-1])
    assert not valid_action_digest(None)


async def test_no_idempotency_key_is_400_before_the_op(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=body_of(INVOICE), headers={"authorization": "Bearer tok-1"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert op.introspected == []


# DPoP (RFC 9449) -----------------------------------------------------------------------------------


def dpop_headers(key: DPoPKey, token: str, *, proof: str | None = None, **claims: Any) -> dict[str, str]:
    made = proof or key.proof(
        htm=claims.get("htm", "POST"),
        htu=claims.get("htu", f"{API}/payments"),
        now=claims.get("now", time.time()),
        access_token=claims.get("ath", token),
    )
    return {"authorization": f"DPoP {token}", "dpop": made, "idempotency-key": claims.get("idem", KEY)}


def new_key() -> DPoPKey:
    return DPoPKey(ec.generate_private_key(ec.SECP256R1()))


async def test_a_dpop_bound_token_pays_with_a_proof_of_its_key(tmp_path: Path) -> None:
    key = new_key()
    op = CraftedOP(tokens={"tok-1": granted(cnf={"jkt": key.thumbprint})})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=body_of(INVOICE), headers=dpop_headers(key, "tok-1"))
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"htm": "GET"}, "the DPoP proof is for another request (htm, htu)"),
        ({"htu": "http://other/payments"}, "the DPoP proof is for another request (htm, htu)"),
        ({"htu": "http://api/payments/x"}, "the DPoP proof is for another request (htm, htu)"),
        ({"now": time.time() - PROOF_MAX_AGE_SECONDS - 60}, "the DPoP proof is too old or from the future (iat)"),
        ({"ath": "another-token"}, "the DPoP proof is for another access token (ath)"),
    ],
)
async def test_a_dpop_proof_for_another_request_is_refused(
    tmp_path: Path, claims: dict[str, Any], description: str
) -> None:
    key = new_key()
    op = CraftedOP(tokens={"tok-1": granted(cnf={"jkt": key.thumbprint})})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=body_of(INVOICE), headers=dpop_headers(key, "tok-1", **claims))
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_dpop_proof", "error_description": description}
    assert answer.headers["www-authenticate"] == 'DPoP error="invalid_dpop_proof"'
    assert op.introspected == []


async def test_a_dpop_proof_is_accepted_once(tmp_path: Path) -> None:
    """RFC 9449 §11.1: the same proof (its jti) again is refused, even for a request that failed."""
    key = new_key()
    op = CraftedOP(tokens={"tok-1": granted(cnf={"jkt": key.thumbprint})})
    proof = key.proof(htm="POST", htu=f"{API}/payments", now=time.time(), access_token="tok-1")
    async with payment_api(api_settings(tmp_path), op) as client:
        first = await client.post("/payments", json=body_of(INVOICE), headers=dpop_headers(key, "tok-1", proof=proof))
        again = await client.post(
            "/payments", json=body_of(INVOICE), headers=dpop_headers(key, "tok-1", proof=proof, idem="idem-key-0002")
        )
    assert first.status_code == 201
    assert again.status_code == 401
    assert again.json()["error_description"] == "this DPoP proof was used before (jti)"


@pytest.mark.parametrize("proofs", [[], ["a.b.c", "a.b.c"]])
async def test_the_dpop_scheme_needs_exactly_one_proof(tmp_path: Path, proofs: list[str]) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    headers = [("authorization", "DPoP tok-1"), ("idempotency-key", KEY), *(("dpop", p) for p in proofs)]
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=body_of(INVOICE), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error_description"] == "exactly one DPoP header is required with the DPoP scheme"


async def test_a_dpop_bound_token_pays_only_with_a_proof_of_its_own_key(tmp_path: Path) -> None:
    """cnf.jkt must be the proof's key; a bound token is refused as a bearer token, and the DPoP
    scheme is refused for a token bound to no key."""
    key, other = new_key(), new_key()
    op = CraftedOP(
        tokens={
            "bound": granted(cnf={"jkt": key.thumbprint}),
            "unbound": granted(OTHER),
            "garbled": granted(cnf={"jkt": "\u00e9" * 43}),
        }
    )
    async with payment_api(api_settings(tmp_path), op) as client:
        answers = [
            await client.post("/payments", json=body_of(INVOICE), headers=dpop_headers(other, "bound")),
            await pay(client, "bound", "idem-key-0002"),
            await client.post(
                "/payments", json=body_of(OTHER), headers=dpop_headers(key, "unbound", idem="idem-key-0003")
            ),
            await client.post(
                "/payments", json=body_of(INVOICE), headers=dpop_headers(key, "garbled", idem="idem-key-0004")
            ),
        ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "invalid_token"
        assert answer.headers["www-authenticate"] == 'DPoP error="invalid_token"'
    assert op.revoked == []


async def test_one_jti_is_refused_again_only_for_the_same_key(tmp_path: Path) -> None:
    """Replay is a key's proof seen again: another key's proof with the same jti is its own."""
    keys = [new_key(), new_key()]
    op = CraftedOP(
        tokens={
            f"tok-{n}": granted(action, cnf={"jkt": key.thumbprint})
            for n, (key, action) in enumerate(zip(keys, (INVOICE, OTHER), strict=True))
        }
    )
    async with payment_api(api_settings(tmp_path, one_payment_per_action=False), op) as client:
        answers = []
        for n, (key, action) in enumerate(zip(keys, (INVOICE, OTHER), strict=True)):
            claims = {
                "jti": "one-jti",
                "htm": "POST",
                "htu": f"{API}/payments",
                "iat": int(time.time()),
                "ath": access_token_hash(f"tok-{n}"),
            }
            proof = jwt.encode(
                claims, key.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": key.public_jwk}
            )
            headers = dpop_headers(key, f"tok-{n}", proof=proof, idem=f"idem-key-000{n}")
            answers.append((await client.post("/payments", json=body_of(action), headers=headers)).status_code)
    assert answers == [201, 201]


def test_seen_proofs_forget_a_jti_only_after_its_window() -> None:
    seen = SeenProofs()
    window = 2 * PROOF_MAX_AGE_SECONDS + 10
    assert seen.first_use("jkt", "jti", 1000.0)
    assert not seen.first_use("jkt", "jti", 1000.0 + window - 0.5)
    assert seen.first_use("other-jkt", "jti", 1000.0 + window - 0.5)
    assert seen.first_use("jkt", "jti", 1000.0 + window)
    short = SeenProofs(window=5)
    assert short.first_use("k", "j", 0.0) and short.first_use("k", "j", 5.0)


# Certificate-bound tokens (RFC 8705) ---------------------------------------------------------------


async def test_a_certificate_bound_token_pays_only_over_that_certificate(tmp_path: Path) -> None:
    agent = self_signed_client_certificate(tmp_path, "agent")
    stranger = self_signed_client_certificate(tmp_path, "stranger")
    bound = {"x5t#S256": certificate_thumbprint(agent.der())}
    op = CraftedOP(tokens={"tok-1": granted(cnf=bound), "tok-2": granted(cnf=bound)})
    answers: dict[str, httpx.Response] = {}
    for name, certificate in {"none": None, "stranger": stranger, "agent": agent}.items():
        directory = tmp_path / name
        directory.mkdir()
        wrap = functools.partial(with_client_certificate, pem=certificate.cert.read_text()) if certificate else None
        async with payment_api(api_settings(directory), op, wrap=wrap) as client:
            answers[name] = await pay(client, "tok-1")
    for name in ("none", "stranger"):
        assert answers[name].status_code == 401, name
        assert answers[name].headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert answers[name].json()["error"] == "invalid_token"
    assert answers["agent"].status_code == 201


async def test_the_certificate_joins_the_scopes_tls_extension(tmp_path: Path) -> None:
    agent = self_signed_client_certificate(tmp_path, "agent")
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    wrapped = with_client_certificate(app, agent.cert.read_text())
    await wrapped({"type": "http", "extensions": {"tls": {"server_cert": "x"}, "other": {}}}, None, None)
    await wrapped({"type": "http"}, None, None)
    assert seen[0]["extensions"] == {
        "tls": {"server_cert": "x", "client_cert_chain": [agent.cert.read_text()], "client_cert_error": None},
        "other": {},
    }
    assert seen[1]["extensions"]["tls"]["client_cert_chain"] == [agent.cert.read_text()]

    class Scoped:
        def __init__(self, scope: dict[str, Any]) -> None:
            self.scope = scope

    assert presented_certificate_thumbprint(Scoped(seen[0])) == certificate_thumbprint(agent.der())  # type: ignore[arg-type]
    assert presented_certificate_thumbprint(Scoped({"extensions": {"tls": {"client_cert_chain": []}}})) is None  # type: ignore[arg-type]
    assert presented_certificate_thumbprint(Scoped({})) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("tls", "presents"), [(True, True), (True, False), (False, False)])
async def test_the_protocol_hands_the_presented_certificate_to_the_app(
    tmp_path: Path, tls: bool, presents: bool
) -> None:
    """ClientCertificateH11Protocol tells the app the TLS connection's certificate, if it had one."""
    agent = self_signed_client_certificate(tmp_path, "agent")
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    class SSLObject:
        def getpeercert(self, binary_form: bool = False) -> bytes | None:
            return agent.der() if presents and binary_form else None

    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {
                "ssl_object": SSLObject() if tls else None,
                "peername": ("127.0.0.1", 1),
                "sockname": ("127.0.0.1", 2),
            }.get(name)

        def is_closing(self) -> bool:
            return False

    config = Config(app=app)
    config.load()
    protocol = ClientCertificateH11Protocol(config, ServerState(), app_state={})
    protocol.app = app
    protocol.connection_made(Transport())  # type: ignore[arg-type]
    if protocol.timeout_keep_alive_task is not None:
        protocol.timeout_keep_alive_task.cancel()
    await protocol.app({"type": "http"}, None, None)
    tls = seen[0].get("extensions", {}).get("tls")
    assert tls == (
        {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(agent.der())], "client_cert_error": None} if presents else None
    )


# The body: its limit, and no input a 5xx -------------------------------------------------------------


async def asgi_post(app: Any, headers: dict[str, str], chunks: list[bytes] | None) -> tuple[int, int]:
    """POST /payments straight to the ASGI app: the status, and how many receive() calls it made.

    Every answer here is a refusal: its error code is invalid_request.

    `chunks` None: the client goes away at the first receive."""
    reads = 0
    sent: list[dict[str, Any]] = []
    pending = list(chunks or [])

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if chunks is None:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/payments",
        "raw_path": b"/payments",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    await app(scope, receive, send)
    assert json.loads(sent[1]["body"])["error"] == "invalid_request"
    return sent[0]["status"], reads


async def test_a_declared_length_over_the_limit_is_413_before_reading(tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(CraftedOP())) as http:
        app = create_app(api_settings(tmp_path), http=http)
        over = bearer("tok-1") | {"content-length": str(MAX_BODY_BYTES + 1)}
        assert await asgi_post(app, over, [b"x"] * 10) == (413, 0)
        at_limit = bearer("tok-1") | {"content-length": str(MAX_BODY_BYTES)}
        status, reads = await asgi_post(app, at_limit, [b" " * MAX_BODY_BYTES])
        assert status == 400 and reads == 1  # read, then refused as not a payment
        odd = bearer("tok-1") | {"content-length": "\u0661" * 6}  # Arabic-Indic digits are not a length
        assert (await asgi_post(app, odd, [b"{}"]))[0] == 400


async def test_a_streamed_body_is_413_the_moment_it_passes_the_limit(tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(CraftedOP())) as http:
        app = create_app(api_settings(tmp_path), http=http)
        chunk = b" " * 4096
        status, reads = await asgi_post(app, bearer("tok-1"), [chunk] * 20)
        assert (status, reads) == (413, MAX_BODY_BYTES // 4096 + 1)
        exact = [chunk] * (MAX_BODY_BYTES // 4096)
        assert (await asgi_post(app, bearer("tok-1"), exact))[0] == 400  # not too large: not a payment


async def test_a_client_gone_while_sending_the_body_is_400(tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(CraftedOP())) as http:
        app = create_app(api_settings(tmp_path), http=http)
        assert (await asgi_post(app, bearer("tok-1"), None))[0] == 400


async def test_a_body_of_exactly_the_limit_pays(tmp_path: Path) -> None:
    text = json.dumps(body_of(INVOICE)).encode()
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", content=text.ljust(MAX_BODY_BYTES), headers=bearer("tok-1"))
    assert answer.status_code == 201, answer.text


DIGEST = action_digest(INVOICE)
GOOD = json.dumps(body_of(INVOICE))
NOT_A_PAYMENT = "the body must be a payment action with its action_digest"


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b"", "the body must be a payment action with its action_digest"),
        (b"[]", "the body must be a payment action with its action_digest"),
        (json.dumps(INVOICE.model_dump()).encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace(DIGEST, DIGEST.upper()).encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace(DIGEST, DIGEST + "\\n").encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace(DIGEST, "0" * 64).encode(), "action_digest does not match the action"),
        (GOOD.replace('"120.00"', "NaN").encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace('"120.00"', "Infinity").encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace('"120.00"', "1" * 5000).encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace('"120.00"', "1e999").encode(), "the body must be a payment action with its action_digest"),
        (GOOD.replace("ACME", "\\ud800").encode(), "the body must be a payment action with its action_digest"),
        (
            GOOD.replace("ACME", "AC\udcffME").encode("utf-8", "surrogateescape"),
            "the body must be a payment action with its action_digest",
        ),
        (GOOD.encode("utf-16"), "the body must be a payment action with its action_digest"),
        (GOOD.replace("{", '{"extra": NaN, ', 1).encode(), "the body must be a payment action with its action_digest"),
        (
            GOOD.replace("{", '{"extra": -Infinity, ', 1).encode(),
            "the body must be a payment action with its action_digest",
        ),
        (
            GOOD.replace('"INV-2026-118"', "[" * 3000 + "]" * 3000).encode(),
            "the body must be a payment action with its action_digest",
        ),
    ],
)
async def test_a_body_that_is_not_exactly_a_payment_is_400(tmp_path: Path, body: bytes, description: str) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", content=body, headers=bearer("tok-1"))
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_request", "error_description": description}
    assert op.introspected == []


async def test_two_spellings_of_one_payment_are_one_action(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted()})
    spelled = body_of(INVOICE, creditor_iban="de02 1001 0010 9307 1186 03", creditor_name="ACME  GmbH ")
    async with payment_api(api_settings(tmp_path), op) as client:
        answer = await client.post("/payments", json=spelled, headers=bearer("tok-1"))
    assert answer.status_code == 201, answer.text


VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def payment_bodies(draw: st.DrawFn) -> bytes:
    """Payment-shaped JSON with odd values, NaN, huge numbers, lone surrogates, UTF-16, or bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=256))
    document: dict[str, Any] = body_of(INVOICE)
    for name in draw(st.sets(st.sampled_from([*document, "extra"]), max_size=3)):
        document[name] = draw(VALUES)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.booleans()):
        text = text.replace('"120.00"', draw(st.sampled_from(["1" * 4500, "1e400", "-0", '"\\udc00"'])), 1)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16"])), "surrogatepass")


async def test_no_body_or_header_makes_the_app_answer_5xx(tmp_path: Path) -> None:
    """Property: malformed JSON, wrong types, huge numbers, invalid unicode, odd headers are a 4xx."""
    loop = asyncio.get_running_loop()
    seen: set[int] = set()
    op = CraftedOP(tokens={"tok-1": granted()})
    header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=40)
    async with payment_api(api_settings(tmp_path), op) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            body=payment_bodies(),
            token=st.one_of(st.just("tok-1"), header_text),
            key=st.one_of(st.just(KEY), header_text),
        )
        def check(body: bytes, token: str, key: str) -> None:
            headers = {
                "authorization": f"Bearer {token}".strip().encode("latin-1"),
                "idempotency-key": key.strip().encode("latin-1"),
            }
            post = client.post("/payments", content=body, headers=headers)
            response = asyncio.run_coroutine_threadsafe(post, loop).result()
            seen.add(response.status_code)
            assert response.status_code < 500, (response.status_code, response.text)

        await asyncio.to_thread(check)
    assert {400, 401} <= seen


# The operator's listing ----------------------------------------------------------------------------


async def test_listing_payments_needs_the_operator_token(tmp_path: Path) -> None:
    op = CraftedOP(tokens={"tok-1": granted(), "tok-2": granted(OTHER, sub=5)})
    async with payment_api(api_settings(tmp_path), op) as client:
        paid = await pay(client, "tok-1")
        await pay(client, "tok-2", "idem-key-0002", OTHER)
        refused = [
            await client.get("/payments", headers=headers)
            for headers in (
                {},
                {"authorization": f"Basic {OPERATOR}"},
                {"authorization": f"Bearer {OPERATOR}x"},
                {"authorization": f"Digest {OPERATOR}"},
                {"authorization": f"Bearer  {OPERATOR[1:]}"},
                {"authorization": "Bearer tok-1"},
            )
        ]
        listed = await client.get("/payments", headers={"authorization": f"bearer   {OPERATOR} "})
        exact = await client.get("/payments", headers={"authorization": f"Bearer {OPERATOR}"})
    for answer in refused:
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == 'Bearer realm="operator"'
        assert answer.json()["error"] == "invalid_token"
    assert exact.status_code == 200 and exact.json() == listed.json()
    assert listed.status_code == 200
    first, second = listed.json()
    assert time.time() - 60 < first.pop("created_at") <= time.time()
    assert first == {
        "idempotency_key": KEY,
        "payment_id": paid.json()["payment_id"],
        "action": INVOICE.model_dump(),
        "sub": "alice",
        "action_digest": action_digest(INVOICE),
        "client_id": AGENT,
    }
    assert second["sub"] is None and "tok-1" not in listed.text


async def test_without_an_operator_token_listing_is_off(tmp_path: Path) -> None:
    async with payment_api(api_settings(tmp_path, operator_token=""), CraftedOP()) as client:
        answer = await client.get("/payments", headers={"authorization": "Bearer "})
        health = await client.get("/healthz")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert health.status_code == 200 and health.json() == {"status": "ok"}


# The store ---------------------------------------------------------------------------------------


def test_a_store_of_an_earlier_version_gains_the_columns_and_digests(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE payments (idempotency_key TEXT PRIMARY KEY, payment_id TEXT NOT NULL, "
        "action TEXT NOT NULL, sub TEXT, created_at REAL NOT NULL)"
    )
    db.execute("INSERT INTO payments VALUES ('old-key-2', 'pay_2', '{\"amount\": \"x\"}', 'alice', 1.0)")
    db.execute("INSERT INTO payments VALUES ('old-key-1', 'pay_1', ?, 'alice', 1.0)", (INVOICE.model_dump_json(),))
    db.commit()
    db.close()
    store = PaymentStore(path)
    assert store.find("old-key-1") == type(store.find("old-key-1"))("old-key-1", "pay_1", action_digest(INVOICE), None)  # type: ignore[misc]
    legacy = store.find("old-key-2")
    assert legacy is not None and legacy.action_digest == "" and legacy.token_sha256 is None
    assert store.find("missing") is None
    PaymentStore(path)  # opened again: nothing left to add


async def test_the_store_answers_from_another_thread_than_the_one_that_opened_it(tmp_path: Path) -> None:
    """uvicorn may build the app in one thread and serve it from another's event loop."""
    store = await asyncio.to_thread(PaymentStore, tmp_path / "payments.sqlite3")
    assert store.find(KEY) is None and not store.consumed("token:x") and store.all() == []


async def test_a_payment_recorded_before_tokens_were_fingerprinted_answers_its_receipt(tmp_path: Path) -> None:
    path = tmp_path / "payments.sqlite3"
    store = PaymentStore(path)
    store._db.execute(
        "INSERT INTO payments (idempotency_key, payment_id, action, sub, created_at, action_digest) "
        "VALUES (?, 'pay_old', '{}', NULL, 1.0, ?)",
        (KEY, action_digest(INVOICE)),
    )
    op = CraftedOP(tokens={"tok-1": granted()})
    async with payment_api(api_settings(tmp_path, db=path), op) as client:
        answer = await pay(client, "tok-1")
    assert answer.status_code == 200 and answer.json() == {"payment_id": "pay_old", "duplicate": True}


# Settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "setting", "problem"),
    [
        ({"issuer": "http://op.example"}, "issuer", "issuer must be an https URL"),
        ({"client_id": ""}, "client_id", "at least 1 character"),
        ({"agent_client_ids": " , "}, "agent_client_ids", "at least 1 item"),
        ({"port": 65536}, "port", "less than or equal to 65535"),
        ({"port": -1}, "port", "greater than or equal to 0"),
        ({"operator_token": "short"}, "operator_token", "operator_token must be at least 16 characters"),
        ({"tls_client_ca": "ca.pem"}, "tls_client_ca", "tls_client_ca needs tls_cert and tls_key"),
        ({"tls_client_ca": "ca.pem", "tls_cert": "c.pem"}, "tls_client_ca", "tls_client_ca needs tls_cert and tls_key"),
        ({"public_url": None, "host": "0.0.0.0"}, "public_url", "public_url is required when host is a wildcard"),  # noqa: S104
        ({"public_url": None, "host": "[::]"}, "public_url", "public_url is required when host is a wildcard"),
        ({"public_url": None, "host": ""}, "public_url", "public_url is required when host is a wildcard"),
        ({"public_url": "https://api.example/payments"}, "public_url", "without a path"),
        ({"public_url": "ftp://api.example"}, "public_url", "http(s)://HOST"),
        ({"public_url": "https://"}, "public_url", "http(s)://HOST"),
        ({"public_url": "https://api.example?x=1"}, "public_url", "without a query"),
        ({"public_url": "https://api.example#x"}, "public_url", "without a query"),
        ({"public_url": "https://user@api.example"}, "public_url", "credentials"),
        ({"public_url": "https://:pw@api.example"}, "public_url", "credentials"),
    ],
)
def test_settings_errors_name_the_setting(
    tmp_path: Path, overrides: dict[str, Any], setting: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        api_settings(tmp_path, **overrides)
    assert problem in str(raised.value)
    assert setting in str(raised.value)


def test_settings_read_what_they_are_given(tmp_path: Path) -> None:
    plain = api_settings(tmp_path, public_url=None, host="127.0.0.1", port=8701)
    assert plain.base_url() == "http://127.0.0.1:8701"
    assert api_settings(tmp_path, public_url=None, host="::1").base_url() == "http://[::1]:8700"
    tls = api_settings(tmp_path, public_url=None, tls_cert="c.pem", tls_key="k.pem", tls_client_ca="ca.pem")
    assert tls.base_url() == "https://127.0.0.1:8700"
    assert api_settings(tmp_path, public_url="https://api.example:8443/").base_url() == "https://api.example:8443"
    assert api_settings(tmp_path, public_url="http://api.example").base_url() == "http://api.example"
    assert api_settings(tmp_path, agent_client_ids="a, b ,,c").agent_client_ids == ["a", "b", "c"]
    assert api_settings(tmp_path, operator_token="").operator_token is None
    token = api_settings(tmp_path, operator_token="x" * 16).operator_token
    assert token is not None and token.get_secret_value() == "x" * 16
    assert api_settings(tmp_path, operator_token=SecretStr("")).operator_token is None
    with pytest.raises(ValidationError, match="operator_token must be at least 16"):
        api_settings(tmp_path, operator_token=SecretStr("x" * 15))
    assert api_settings(tmp_path).one_payment_per_action is True
    defaults = api_settings(tmp_path)
    assert (defaults.host, defaults.port, defaults.db.name) == ("127.0.0.1", 8700, "payments.sqlite3")

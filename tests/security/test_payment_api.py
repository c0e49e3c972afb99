"""Attacks on the payment API through the real processes.

The oidc-provider test OP, the payment API (`temporal-ciba payment-api`), and for the first one the
real worker running the payment agent on a Temporal dev server.

- One approval's token posted again with fresh Idempotency-Keys pays once: 409, once per grant.
- A retry of a recorded payment after its token was revoked gets the recorded receipt, not 401.
- Bad input gets a 4xx, never a 500; a body is refused at the size limit before it is read whole;
  GET /payments needs the operator token."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from temporal_ciba._settings import WorkerSettings
from temporal_ciba.ciba import AuthenticationRequest, CibaClient, ClientSecretBasic
from temporal_ciba.ciba._dpop import DPoPKey
from temporal_ciba_examples.payment_agent.models import (
    PaymentAction,
    action_digest,
    authorization_details,
    binding_message,
    canonical_json,
)
from temporal_ciba_examples.payment_agent.payment_api import (
    MAX_BODY_BYTES,
    PaymentApiSettings,
    create_app,
    with_client_certificate,
)
from tests.support.flows import INVOICE, approval_handle, pending_auth_req_id, start_agent
from tests.support.mtls import self_signed_client_certificate
from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, OPERATOR_TOKEN, PAYMENT_API_CLIENT, SECRET, payments, run_payment_api


def fresh_action(amount: str = "42.00") -> PaymentAction:
    """A payment no other test pays (its reference is new)."""
    return PaymentAction(
        amount=amount,
        currency="EUR",
        creditor_name="ACME GmbH",
        creditor_iban="DE02 1001 0010 9307 1186 03",
        reference=f"SEC-{uuid.uuid4().hex[:16]}",
    )


def body_of(action: PaymentAction) -> dict[str, Any]:
    return {**action.model_dump(), "action_digest": action_digest(action)}


async def approved_token(op: TestOP, action: PaymentAction) -> str:
    """An access token for `action`, approved by alice, through the protocol client and the real OP."""
    digest = action_digest(action)
    return await approved_details(op, authorization_details(action, digest), binding_message(action, digest))


async def approved_details(op: TestOP, details: list[dict[str, Any]], message: str) -> str:
    """An access token for these authorization_details, whatever an agent's model would refuse."""
    request = AuthenticationRequest(
        scope="openid payments", login_hint="alice", binding_message=message, authorization_details=details
    )
    async with CibaClient(issuer=op.issuer, client_auth=ClientSecretBasic(AGENT_CLIENT, SECRET)) as agent:
        ack = await agent.authenticate(request)
        await asyncio.to_thread(op.approve, ack.auth_req_id)
        tokens = await agent.poll(ack)
    return tokens.access_token.get_secret_value()


async def active_at_op(op: TestOP, token: str) -> bool:
    """What the OP says of the token, asked (RFC 7662) as the payment API."""
    async with CibaClient(issuer=op.issuer, client_auth=ClientSecretBasic(PAYMENT_API_CLIENT, SECRET)) as rs:
        return (await rs.introspect(token)).get("active") is True


async def revoke_as_agent(op: TestOP, token: str) -> None:
    """RFC 7009 revocation by the token's own client: what expiry looks like to the payment API."""
    async with CibaClient(issuer=op.issuer, client_auth=ClientSecretBasic(AGENT_CLIENT, SECRET)) as agent:
        assert await agent.revoke(token)


async def pay(api: str, token: str, key: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            api + "/payments", json=body, headers={"authorization": f"Bearer {token}", "idempotency-key": key}
        )


@pytest.fixture(scope="module")
def strict_payment_api(op: TestOP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The payment API with its default settings (one payment per action and client), and no
    operator token (so GET /payments is off)."""
    with run_payment_api(op, tmp_path_factory.mktemp("strict-payment-api"), PAYMENT_API_OPERATOR_TOKEN="") as url:
        yield url


# One approval, one payment -----------------------------------------------------------------------


async def test_replaying_a_paid_agents_token_with_new_keys_is_refused(
    temporal_client: Client, worker: WorkerSettings, op: TestOP, payment_api: str
) -> None:
    """A paid agent's token posted again under new Idempotency-Keys pays nothing more.

    The real agent pays; its token, taken from the OP, is posted again with Idempotency-Key
    replay-key-0001, then -0002: neither pays (a second 201 would be a second payment)."""
    agent = await start_agent(temporal_client, worker)
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    op.approve(auth_req_id)
    result = await agent.result()
    assert result.receipt is not None and not result.receipt.duplicate
    token = op.issued()[auth_req_id]["access_token"]
    suffix = uuid.uuid4().hex[:8]  # the session's API outlives this test
    for key in (f"replay-key-0001-{suffix}", f"replay-key-0002-{suffix}"):
        response = await pay(payment_api, token, key, body_of(INVOICE))
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "grant_already_used"
    assert payments(payment_api, "replay-key-") == []
    assert [p["payment_id"] for p in payments(payment_api, agent.id)] == [result.receipt.payment_id]


@pytest.mark.parametrize("api", ["payment_api", "strict_payment_api"])
async def test_one_token_pays_once_whatever_the_key(op: TestOP, api: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(api)
    action = fresh_action()
    token = await approved_token(op, action)
    first = await pay(url, token, f"first-{uuid.uuid4().hex}", body_of(action))
    assert first.status_code == 201, first.text
    for key in ("replay-key-0001", "replay-key-0002"):
        response = await pay(url, token, key, body_of(action))
        assert response.status_code == 409 and response.json()["error"] == "grant_already_used", response.text


async def test_concurrent_replays_of_one_token_pay_once(op: TestOP, payment_api: str) -> None:
    action = fresh_action()
    token = await approved_token(op, action)
    responses = await asyncio.gather(
        *(pay(payment_api, token, f"race-{uuid.uuid4().hex}", body_of(action)) for _ in range(12))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 11


async def test_concurrent_retries_of_one_payment_get_one_receipt(op: TestOP, payment_api: str) -> None:
    """The agent's retries racing its first attempt (same key, token and body).

    One payment, one receipt for all, even when a retry reaches the OP after the first attempt
    revoked the token."""
    action = fresh_action()
    token = await approved_token(op, action)
    key = f"racing-retry-{uuid.uuid4().hex}"
    responses = await asyncio.gather(*(pay(payment_api, token, key, body_of(action)) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [r.text for r in responses]
    assert len({r.json()["payment_id"] for r in responses}) == 1


async def test_the_same_action_approved_again_is_refused_by_default(
    op: TestOP, strict_payment_api: str, payment_api: str
) -> None:
    """A second approval of the very same payment pays nothing where the API pays once per action.

    The same payment is the same creditor, amount and reference; paying once per action is the
    default. The e2e suite's API, which pays once per grant only
    (PAYMENT_API_ONE_PAYMENT_PER_ACTION=false), pays it."""
    action = fresh_action()
    first, second = await approved_token(op, action), await approved_token(op, action)
    assert (await pay(strict_payment_api, first, f"a-{uuid.uuid4().hex}", body_of(action))).status_code == 201
    refused = await pay(strict_payment_api, second, f"b-{uuid.uuid4().hex}", body_of(action))
    assert refused.status_code == 409 and refused.json()["error"] == "grant_already_used"
    other = fresh_action()
    first, second = await approved_token(op, other), await approved_token(op, other)
    assert (await pay(payment_api, first, f"a-{uuid.uuid4().hex}", body_of(other))).status_code == 201
    assert (await pay(payment_api, second, f"b-{uuid.uuid4().hex}", body_of(other))).status_code == 201


async def test_an_iban_spelled_otherwise_is_the_same_payment_not_a_second_one(
    op: TestOP, strict_payment_api: str
) -> None:
    """A second approval of the same creditor, amount and reference pays nothing, however the IBAN
    is spelled: with a newline after it the action is refused (400: `$` no longer lets it through,
    so it is no other action digest), in lower case with spaces it is the same action (409)."""
    action = fresh_action()
    paid = await pay(strict_payment_api, await approved_token(op, action), f"a-{uuid.uuid4().hex}", body_of(action))
    assert paid.status_code == 201, paid.text
    # An agent's own model refuses the newline: this one sends the JSON it wants, granted as it is.
    newline = {**action.model_dump(), "creditor_iban": action.creditor_iban + "\n"}
    digest = hashlib.sha256(canonical_json(newline).encode()).hexdigest()
    details = [
        {
            **authorization_details(action, action_digest(action))[0],
            "creditorAccount": {"iban": newline["creditor_iban"]},
            "actionDigest": digest,
        }
    ]
    token = await approved_details(op, details, "Pay EUR 42.00 to ACME GmbH")
    refused = await pay(strict_payment_api, token, f"b-{uuid.uuid4().hex}", {**newline, "action_digest": digest})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", refused.text
    spelled = {**action.model_dump(), "creditor_iban": "de02 1001 0010 9307 1186 03"}
    assert PaymentAction.model_validate(spelled) == action
    token = await approved_token(op, PaymentAction.model_validate(spelled))
    again = await pay(
        strict_payment_api, token, f"c-{uuid.uuid4().hex}", {**spelled, "action_digest": action_digest(action)}
    )
    assert again.status_code == 409 and again.json()["error"] == "grant_already_used", again.text


async def test_the_token_is_revoked_at_the_op_after_paying(op: TestOP, payment_api: str) -> None:
    action = fresh_action()
    token = await approved_token(op, action)
    assert await active_at_op(op, token)
    assert (await pay(payment_api, token, f"pay-{uuid.uuid4().hex}", body_of(action))).status_code == 201
    assert not await active_at_op(op, token)


# A paid approval never turns into a 401 ----------------------------------------------------------


async def test_a_retry_after_the_token_was_revoked_gets_the_receipt(op: TestOP, payment_api: str) -> None:
    """The agent's retry (same key, same token, same body) after the token stopped being active.

    The recorded receipt answers it: were introspection asked first, it would answer 401 for a
    payment that was made, and the receipt would be lost."""
    action = fresh_action()
    token = await approved_token(op, action)
    key = f"agent-retry-{uuid.uuid4().hex}"
    paid = await pay(payment_api, token, key, body_of(action))
    assert paid.status_code == 201, paid.text
    await revoke_as_agent(op, token)
    assert not await active_at_op(op, token)
    retry = await pay(payment_api, token, key, body_of(action))
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"payment_id": paid.json()["payment_id"], "duplicate": True}
    assert len(payments(payment_api, key)) == 1
    # Under another key the used token is refused as used (409), not merely as inactive.
    replay = await pay(payment_api, token, f"replay-key-0003-{uuid.uuid4().hex[:8]}", body_of(action))
    assert replay.status_code == 409 and replay.json()["error"] == "grant_already_used", replay.text


async def test_the_receipt_is_only_for_the_same_grant_and_body(op: TestOP, payment_api: str) -> None:
    action = fresh_action()
    token = await approved_token(op, action)
    key = f"bound-{uuid.uuid4().hex}"
    assert (await pay(payment_api, token, key, body_of(action))).status_code == 201
    # The same key and token with another body: a key reused, not a receipt.
    other = fresh_action(amount="43.00")
    changed = await pay(payment_api, token, key, body_of(other))
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    # The same key with a token that is not the grant's: no receipt without introspection.
    stranger = await pay(payment_api, "not-the-token-" + uuid.uuid4().hex, key, body_of(action))
    assert stranger.status_code == 401
    # A valid token of another approval of the same action, under the paid key: paid under another grant.
    again = await approved_token(op, action)
    refused = await pay(payment_api, again, key, body_of(action))
    assert refused.status_code == 409 and refused.json()["error"] == "grant_mismatch"
    # A valid token for another payment, under the paid key: the key was used for another payment.
    reused = await pay(payment_api, await approved_token(op, other), key, body_of(other))
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
    assert len(payments(payment_api, key)) == 1


# Bad input is a 4xx, the body is limited while it streams, the listing is closed ----------------

VALID = json.dumps(body_of(INVOICE))
BAD_BODIES: dict[str, bytes] = {
    "amount abc": VALID.replace('"120.00"', '"abc"').encode(),
    "amount NaN string": VALID.replace('"120.00"', '"NaN"').encode(),
    "amount sNaN string": VALID.replace('"120.00"', '"sNaN"').encode(),
    "amount Infinity string": VALID.replace('"120.00"', '"Infinity"').encode(),
    "amount 1e999999 string": VALID.replace('"120.00"', '"1e999999"').encode(),
    "amount beyond precision": VALID.replace('"120.00"', '"' + "9" * 40 + '.00"').encode(),
    "amount NaN literal": VALID.replace('"120.00"', "NaN").encode(),
    "amount Infinity literal": VALID.replace('"120.00"', "-Infinity").encode(),
    "amount 1e999999 literal": VALID.replace('"120.00"', "1e999999").encode(),
    "amount huge int": VALID.replace('"120.00"', "1" * 5000).encode(),
    "NaN literal elsewhere": VALID.replace("{", '{"note": NaN, ', 1).encode(),
    "lone surrogate escaped": VALID.replace("ACME GmbH", "ACME \\ud800").encode(),
    "lone surrogate raw": VALID.replace("ACME GmbH", "ACME \ud800").encode("utf-8", "surrogatepass"),
    "invalid utf-8": VALID.encode().replace(b"ACME", b"\xff\xfe\xc3("),
    "utf-16": VALID.encode("utf-16"),
    "deeply nested array": b"[" * 8000 + b"]" * 8000,
    "deeply nested object": b'{"a":' * 2500 + b"1" + b"}" * 2500,
    "not an object": b'["amount"]',
    "digest missing": json.dumps(INVOICE.model_dump()).encode(),
    "digest not a string": VALID.replace(f'"{action_digest(INVOICE)}"', "1").encode(),
    "digest of another action": VALID.replace(f'"{action_digest(INVOICE)}"', '"' + "0" * 64 + '"').encode(),
    "empty": b"",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_input_is_a_4xx(payment_api: str, body: bytes) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            payment_api + "/payments",
            content=body,
            headers={"authorization": "Bearer some-token", "idempotency-key": f"bad-{uuid.uuid4().hex}"},
        )
    assert response.status_code == 400, (response.status_code, response.text)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"authorization": b"Bearer \xff\xfe-token", "idempotency-key": b"bad-header-0001"}, 401),
        ({"authorization": b"Basic dXNlcjpwYXNz", "idempotency-key": b"bad-header-0002"}, 401),
        ({"authorization": b"Bearer " + b"a" * 10_000, "idempotency-key": b"bad-header-0003"}, 401),
        ({"idempotency-key": b"bad-header-0004"}, 401),
        ({"authorization": b"Bearer some-token", "idempotency-key": b"key-\xff\xfe-0001"}, 400),
        ({"authorization": b"Bearer some-token", "idempotency-key": b"key-\x01-control"}, 400),
        ({"authorization": b"Bearer some-token", "idempotency-key": b"short"}, 400),
        ({"authorization": b"Bearer some-token", "idempotency-key": b"k" * 3000}, 400),
        ({"authorization": b"Bearer some-token"}, 400),
    ],
)
async def test_bad_headers_are_a_4xx(payment_api: str, headers: dict[str, bytes], status: int) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(payment_api + "/payments", content=VALID.encode(), headers=headers)
    assert response.status_code == status, (response.status_code, response.text)


async def _status_line(url: str, head: bytes, chunks: AsyncIterator[bytes]) -> bytes:
    """Send a request head, then body chunks slowly, and return the status line as soon as one
    comes, while the rest of the body is still unsent (the 0-chunk or the declared length never is)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    status = asyncio.create_task(reader.readline())
    try:
        writer.write(head)
        async for chunk in chunks:
            if status.done():
                break
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.005)
        return await asyncio.wait_for(status, timeout=10)
    finally:
        status.cancel()
        writer.close()


def _head(extra: str) -> bytes:
    return (
        "POST /payments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer some-token\r\n"
        f"Idempotency-Key: stream-{uuid.uuid4().hex}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


async def test_the_body_limit_holds_while_streaming(payment_api: str) -> None:
    """A chunked body with no length is refused at the size limit while it streams.

    The API answers 413 once it has read past the limit, while the body is still open, so its
    memory does not grow with the body (a 300 MB body read whole took 570 MB)."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4 * MAX_BODY_BYTES // 4096):
            yield b"1000\r\n" + b" " * 4096 + b"\r\n"  # never the closing 0-chunk

    assert (await _status_line(payment_api, _head("Transfer-Encoding: chunked\r\n"), chunks())).startswith(
        b"HTTP/1.1 413"
    )


async def test_a_declared_length_over_the_limit_is_refused_before_reading(payment_api: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b" " * 1024

    head = _head(f"Content-Length: {300 * 1024 * 1024}\r\n")
    assert (await _status_line(payment_api, head, chunks())).startswith(b"HTTP/1.1 413")


async def test_listing_payments_needs_the_operator_token(payment_api: str, strict_payment_api: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(payment_api + "/payments")).status_code == 401
        wrong = await http.get(payment_api + "/payments", headers={"authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401
        listed = await http.get(payment_api + "/payments", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert listed.status_code == 200 and isinstance(listed.json(), list)
        assert all("token" not in name for entry in listed.json() for name in entry)  # no token, no fingerprint
        # Without an operator token configured, there is no listing at all.
        off = await http.get(strict_payment_api + "/payments", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert off.status_code == 404


# Property tests: no input makes a 5xx ---------------------------------------------------------

LITERALS = ["NaN", "-Infinity", "Infinity", "1e999999", "-1e999999", "1" * 5000, "-0", "0.001", "1E+2", '"abc"']
STRINGS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4),
    st.sampled_from(["NaN", "sNaN", "Infinity", "-Infinity", "1e999999", "9" * 60, "120.00", "0", "-5.00", "1.005"]),
)
VALUES = st.one_of(
    STRINGS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """Payment-shaped JSON with odd values, NaN and friends, surrogates, sometimes a right digest."""
    document: dict[str, Any] = {**INVOICE.model_dump()}
    for field in draw(st.sets(st.sampled_from([*document, "action_digest", "extra"]), max_size=3)):
        document[field] = draw(VALUES)
    if "action_digest" not in document:
        try:
            document["action_digest"] = action_digest(PaymentAction.model_validate(document))
        except Exception:
            document["action_digest"] = "0" * 64
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.booleans()):
        text = text.replace('"120.00"', draw(st.sampled_from(LITERALS)), 1)
    # Lone surrogates go out raw (invalid UTF-8) unless ensure_ascii escaped them.
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16"])), "surrogatepass")


BODIES = st.one_of(
    st.binary(max_size=512),
    documents(),
    st.integers(1, 6000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(MAX_BODY_BYTES - 8, MAX_BODY_BYTES * 4).map(lambda size: VALID.encode().ljust(size)),
)
HEADER_BYTES = st.binary(max_size=60).map(lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F))


def _headers(token: str) -> st.SearchStrategy[dict[str, bytes]]:
    authorization = st.one_of(
        st.just(f"Bearer {token}".encode()),
        st.just(b"Bearer " + uuid.uuid4().hex.encode()),
        HEADER_BYTES.map(lambda raw: b"Bearer " + raw),
        HEADER_BYTES,
    )
    key = st.one_of(
        st.sampled_from([b"prop-key-0001", b"prop-key-0002", b"prop-key-0003"]), HEADER_BYTES, st.just(b"k" * 3000)
    )
    # h11 sends no header value with whitespace at its ends.
    return st.fixed_dictionaries(
        {"authorization": authorization.map(bytes.strip), "idempotency-key": key.map(bytes.strip)}
    )


async def test_no_input_makes_the_running_api_answer_5xx(op: TestOP, payment_api: str) -> None:
    token = await approved_token(op, INVOICE)  # a real grant for INVOICE, so some bodies pay
    seen: set[int] = set()

    def run() -> None:
        with httpx.Client(timeout=30) as http:

            @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
            @given(body=BODIES, headers=_headers(token), chunked=st.booleans())
            def check(body: bytes, headers: dict[str, bytes], chunked: bool) -> None:
                content = iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
                response = http.post(payment_api + "/payments", content=content, headers=headers)
                seen.add(response.status_code)
                assert response.status_code < 500, (response.status_code, response.text)

            check()

    await asyncio.to_thread(run)
    assert {400, 401, 413} <= seen


ISSUER_DOUBLE = "http://127.0.0.1:9"
VALID_TOKEN = "the-one-valid-token"


class OPDouble:
    """An OP that knows one token, granted for INVOICE, and honours its revocation.

    "garbage-*" tokens get broken answers. `down` makes introspection fail; `hold` keeps the next
    introspection waiting until it is set (it then answers as the token is by that time)."""

    def __init__(self) -> None:
        self.revoked = False
        self.down = False
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            endpoints = {"token_endpoint", "jwks_uri", "introspection_endpoint", "revocation_endpoint"}
            return httpx.Response(
                200, json={"issuer": ISSUER_DOUBLE, **{name: f"{ISSUER_DOUBLE}/{name}" for name in endpoints}}
            )
        token = dict(item.split("=", 1) for item in request.content.decode().split("&")).get("token", "")
        if request.url.path == "/revocation_endpoint":
            self.revoked = self.revoked or token == VALID_TOKEN
            return httpx.Response(200)
        if self.down:
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            await hold.wait()
        if token == VALID_TOKEN and not self.revoked:
            details = authorization_details(INVOICE, action_digest(INVOICE))
            claims = {"client_id": AGENT_CLIENT, "scope": "openid payments", "authorization_details": details}
            return httpx.Response(200, json={"active": True, "sub": "alice", **claims})
        broken = {
            "garbage-text": httpx.Response(200, text="<html>not json</html>"),
            "garbage-array": httpx.Response(200, json=["active"]),
            "garbage-500": httpx.Response(500, text="oops"),
            "garbage-details": httpx.Response(
                200,
                json={"active": True, "client_id": AGENT_CLIENT, "scope": "payments", "authorization_details": [1]},
            ),
            "garbage-client": httpx.Response(200, json={"active": True, "client_id": ["x"], "scope": "payments"}),
            "garbage-scope": httpx.Response(200, json={"active": True, "client_id": AGENT_CLIENT, "scope": 7}),
            # Confirmation members that are not ASCII (hmac.compare_digest refuses such str).
            "garbage-jkt": httpx.Response(200, json={"active": True, "cnf": {"jkt": "\u00e9" * 43}}),
            "garbage-x5t": httpx.Response(200, json={"active": True, "cnf": {"x5t#S256": "\u00e9" * 43}}),
        }
        return broken.get(token, httpx.Response(200, json={"active": False}))


def settings_with_op_double(tmp_path: Path) -> PaymentApiSettings:
    """The payment API's settings, its OP the double."""
    return PaymentApiSettings(
        issuer=ISSUER_DOUBLE,
        client_id=PAYMENT_API_CLIENT,
        client_secret=SECRET,  # type: ignore[arg-type]
        agent_client_ids=[AGENT_CLIENT],
        db=tmp_path / "payments.sqlite3",
        public_url="http://api",  # where app_client reaches it
    )


@asynccontextmanager
async def app_client(tmp_path: Path, op_double: OPDouble | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app in this process, its OP a double."""
    api_settings = settings_with_op_double(tmp_path)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(op_double or OPDouble())) as op,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(api_settings, http=op)), base_url="http://api"
        ) as client,
    ):
        yield client


def _post(client: httpx.AsyncClient, key: str) -> Any:
    headers = {"authorization": f"Bearer {VALID_TOKEN}", "idempotency-key": key}
    return client.post("/payments", json=body_of(INVOICE), headers=headers)


async def test_a_retry_gets_its_receipt_without_the_op(tmp_path: Path) -> None:
    """The key is looked up before the OP is asked: a retry is answered while the OP is down."""
    op_double = OPDouble()
    async with app_client(tmp_path, op_double) as client:
        paid = await _post(client, "retry-key-0001")
        assert paid.status_code == 201 and op_double.revoked
        op_double.down = True
        retry = await _post(client, "retry-key-0001")
        assert retry.status_code == 200 and retry.json() == {"payment_id": paid.json()["payment_id"], "duplicate": True}
        replay = await _post(client, "retry-key-0002")
        assert replay.status_code == 409 and replay.json()["error"] == "grant_already_used"


async def test_a_retry_racing_its_first_attempt_gets_the_receipt(tmp_path: Path) -> None:
    """The retry asks the OP while the first attempt pays and revokes the token.

    The OP then says "not active", and the API looks the key up again instead of answering 401."""
    op_double = OPDouble()
    async with app_client(tmp_path, op_double) as client:
        op_double.hold = release = asyncio.Event()
        retry = asyncio.create_task(_post(client, "race-key-0001"))
        await op_double.holding.wait()  # the retry is at the OP
        first = await _post(client, "race-key-0001")
        assert first.status_code == 201 and op_double.revoked
        release.set()
        answer = await retry
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"payment_id": first.json()["payment_id"], "duplicate": True}


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("garbage-text", 503),
        ("garbage-array", 503),
        ("garbage-500", 503),
        ("garbage-details", 403),
        ("garbage-client", 403),
        ("garbage-scope", 403),
    ],
)
async def test_an_op_answering_garbage_is_no_crash(tmp_path: Path, token: str, status: int) -> None:
    async with app_client(tmp_path) as client:
        response = await client.post(
            "/payments", json=body_of(INVOICE), headers={"authorization": f"Bearer {token}", "idempotency-key": "k" * 8}
        )
    assert response.status_code == status, response.text


async def test_a_confirmation_the_op_garbles_is_401_not_a_crash(tmp_path: Path) -> None:
    """A proof of a key, or a certificate, presented against a `cnf` that is not ASCII."""
    api_settings = settings_with_op_double(tmp_path)
    certificate = self_signed_client_certificate(tmp_path, "agent")
    key = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
    url = "http://api/payments"
    async with httpx.AsyncClient(transport=httpx.MockTransport(OPDouble())) as op:
        app = with_client_certificate(create_app(api_settings, http=op), certificate.cert.read_text())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            headers = {"idempotency-key": "k" * 8}
            proof = key.proof(htm="POST", htu=url, now=time.time(), access_token="garbage-jkt")
            jkt = await client.post(
                "/payments",
                json=body_of(INVOICE),
                headers={**headers, "authorization": "DPoP garbage-jkt", "dpop": proof},
            )
            x5t = await client.post(
                "/payments", json=body_of(INVOICE), headers={**headers, "authorization": "Bearer garbage-x5t"}
            )
    for answer in (jkt, x5t):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "invalid_token"


async def test_no_input_makes_the_app_answer_5xx_in_volume(tmp_path: Path) -> None:
    """More examples against the ASGI app in process, with the OP double."""
    loop = asyncio.get_running_loop()
    seen: set[int] = set()
    async with app_client(tmp_path) as client:

        @settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=BODIES, headers=_headers(VALID_TOKEN))
        def check(body: bytes, headers: dict[str, bytes]) -> None:
            post = client.post("/payments", content=body, headers=headers)
            response = asyncio.run_coroutine_threadsafe(post, loop).result()
            seen.add(response.status_code)
            assert response.status_code < 500, (response.status_code, response.text)

        await asyncio.to_thread(check)
    assert {200, 201, 400, 401, 409, 413} <= seen


# DPoP htu: the API's configured URL, not the caller's headers -----------------------------------


async def dpop_payment(url: str, proof_url: str, headers: dict[str, str]) -> httpx.Response:
    """A payment under the DPoP scheme, its proof made for `proof_url`, with an unknown token.

    A proof the API accepts gets as far as introspection (401 invalid_token: the OP does not know
    the token); one it refuses is answered 401 invalid_dpop_proof before that."""
    token = "unknown-dpop-bound-token-" + uuid.uuid4().hex
    proof = DPoPKey(ec.generate_private_key(ec.SECP256R1())).proof(
        htm="POST", htu=proof_url, now=time.time(), access_token=token
    )
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            url + "/payments",
            json=body_of(fresh_action()),
            headers={
                "authorization": f"DPoP {token}",
                "dpop": proof,
                "idempotency-key": uuid.uuid4().hex,
                **headers,
            },
        )


async def test_a_dpop_proof_for_another_server_is_refused_whatever_the_host_header(payment_api: str) -> None:
    """RFC 9449 §4.3: htu is checked against PAYMENT_API_PUBLIC_URL (here its default, the
    address it listens on), so a proof captured at another resource server does not pass here by
    naming that server in the Host header, or https in X-Forwarded-Proto (from loopback, which
    uvicorn trusts)."""
    own = urlsplit(payment_api)
    answers = {
        name: (await dpop_payment(payment_api, proof_url, headers)).json()["error"]
        for name, (proof_url, headers) in {
            "this server": (payment_api + "/payments", {}),
            "another server, its Host": ("https://other-rs.example/payments", {"host": "other-rs.example"}),
            "another server, its Host and scheme": (
                "https://other-rs.example/payments",
                {"host": "other-rs.example", "x-forwarded-proto": "https"},
            ),
            "this host, another scheme forwarded": (
                f"https://{own.netloc}/payments",
                {"x-forwarded-proto": "https"},
            ),
            "this server, another path": (payment_api + "/payments/other", {}),
        }.items()
    }
    assert answers == {
        "this server": "invalid_token",  # the proof passed; the token is unknown to the OP
        "another server, its Host": "invalid_dpop_proof",
        "another server, its Host and scheme": "invalid_dpop_proof",
        "this host, another scheme forwarded": "invalid_dpop_proof",
        "this server, another path": "invalid_dpop_proof",
    }


async def test_a_configured_public_url_is_what_proofs_must_name(op: TestOP, tmp_path: Path) -> None:
    """Behind a proxy the API is reached at its public URL: proofs name that, and nothing else."""
    public = "https://payments.example.test"
    with run_payment_api(op, tmp_path, PAYMENT_API_PUBLIC_URL=public) as url:
        listening = await dpop_payment(url, url + "/payments", {})
        configured = await dpop_payment(url, public + "/payments", {"host": "other-rs.example"})
    assert listening.json()["error"] == "invalid_dpop_proof"
    assert configured.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"host": "0.0.0.0"}, "public_url is required when host is a wildcard"),  # noqa: S104
        ({"public_url": "https://api.example/payments"}, "without a path"),
        ({"public_url": "ftp://api.example"}, "http(s)://HOST"),
        ({"public_url": "https://user:pw@api.example"}, "credentials"),
    ],
)
def test_a_public_url_that_cannot_be_what_proofs_name_is_refused(
    tmp_path: Path, settings: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        PaymentApiSettings(
            issuer=ISSUER_DOUBLE,
            client_id=PAYMENT_API_CLIENT,
            client_secret=SECRET,  # type: ignore[arg-type]
            agent_client_ids=[AGENT_CLIENT],
            db=tmp_path / "payments.sqlite3",
            **settings,  # type: ignore[arg-type]
        )


HOST_NAMES = st.one_of(
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}(:[0-9]{1,5})?", fullmatch=True),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), min_size=1, max_size=40),
)


async def test_no_host_or_forwarded_header_makes_a_foreign_proof_pass(tmp_path: Path) -> None:
    """Property: whatever Host, X-Forwarded-Host and X-Forwarded-Proto a caller sends (names,
    ports, latin-1 junk), a proof for any URL but http://api/payments is refused."""
    loop = asyncio.get_running_loop()
    async with app_client(tmp_path) as client:

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(host=HOST_NAMES, scheme=st.sampled_from(["http", "https"]), path_suffix=st.sampled_from(["", "/", "/x"]))
        def check(host: str, scheme: str, path_suffix: str) -> None:
            proof_url = f"{scheme}://{host}/payments{path_suffix}"
            if proof_url == "http://api/payments":
                return
            key = DPoPKey(ec.generate_private_key(ec.SECP256R1()))
            proof = key.proof(htm="POST", htu=proof_url, now=time.time(), access_token=VALID_TOKEN)
            headers = {
                "authorization": f"DPoP {VALID_TOKEN}",
                "dpop": proof,
                "idempotency-key": uuid.uuid4().hex,
                "host": host.encode("latin-1"),
                "x-forwarded-host": host.encode("latin-1"),
                "x-forwarded-proto": scheme,
            }
            post = client.post("/payments", json=body_of(INVOICE), headers=headers)
            response = asyncio.run_coroutine_threadsafe(post, loop).result()
            assert response.status_code == 401 and response.json()["error"] == "invalid_dpop_proof", response.text

        await asyncio.to_thread(check)

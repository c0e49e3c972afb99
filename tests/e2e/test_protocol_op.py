"""The protocol client against a real, independent OP: oidc-provider with CIBA (tests/op)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from temporal_ciba.ciba import (
    AccessDenied,
    AuthenticationRequest,
    CibaClient,
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    DiscoveryError,
    ExpiredToken,
    Granted,
    InvalidClient,
    InvalidGrant,
    InvalidUserCode,
    MissingUserCode,
    Pending,
    PrivateKeyJwt,
    RequestBinding,
    TokenRejected,
    UnknownUserId,
    load_client_signing_key,
)
from tests.support.op import TestOP
from tests.support.protocol import DETAILS
from tests.support.stack import SECRET, ClientKey
from tests.support.temporal import wait_for


def client(op: TestOP, auth: ClientAuth | None = None) -> CibaClient:
    return CibaClient(issuer=op.issuer, client_auth=auth or ClientSecretBasic("poll-basic", SECRET))


def payment_request(**overrides: Any) -> AuthenticationRequest:
    fields: dict[str, Any] = {
        "scope": "openid payments",
        "login_hint": "alice",
        "binding_message": "Pay EUR 120.00 to ACME GmbH, code 7Q4K",
        "acr_values": "urn:example:acr:mfa",
        "authorization_details": DETAILS,
    }
    fields.update(overrides)
    return AuthenticationRequest(**fields)


async def start(ciba: CibaClient, request: AuthenticationRequest, expected_subject: str | None = "alice"):
    requested_at = time.time()
    ack = await ciba.authenticate(request)
    binding = RequestBinding.for_request(
        request,
        ack,
        issuer=ciba.issuer,
        client_id=ciba.client_id,
        requested_at=requested_at,
        delivery_mode="poll",
        expected_subject=expected_subject,
    )
    return ack, binding


async def decide_later(op: TestOP, auth_req_id: str, approve: bool = True, **options: Any) -> None:
    """Decide once the client has polled and been told to wait (the OP's record of it)."""
    await wait_for(
        lambda: any(entry["status"] == 400 for entry in op.token_requests(auth_req_id)),
        what="a token request answered authorization_pending",
    )
    await asyncio.to_thread(op.approve if approve else op.deny, auth_req_id, **options)  # type: ignore[operator]


async def approve_and_validate(op: TestOP, ciba: CibaClient) -> None:
    ack, binding = await start(ciba, payment_request())
    decision = asyncio.create_task(decide_later(op, ack.auth_req_id))
    tokens = await ciba.poll(ack)
    await decision
    approval = await ciba.validate(tokens, binding)
    assert approval.sub == "alice"
    assert approval.acr == "urn:example:acr:mfa"
    assert approval.authorization_details == DETAILS
    assert approval.auth_time is not None and approval.auth_time >= int(binding.requested_at) - 1
    assert approval.scope == "openid payments"


async def test_approve_gives_tokens_that_validate(op: TestOP) -> None:
    async with client(op) as ciba:
        await approve_and_validate(op, ciba)


async def test_approve_without_binding_claims_validates_in_poll_mode(plain_op: TestOP) -> None:
    async with client(plain_op) as ciba:
        await approve_and_validate(plain_op, ciba)


async def test_client_secret_post(op: TestOP) -> None:
    async with client(op, ClientSecretPost("poll-post", SECRET)) as ciba:
        await approve_and_validate(op, ciba)


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
async def test_private_key_jwt(op: TestOP, client_keys: dict[str, ClientKey], alg: str) -> None:
    key = load_client_signing_key(client_keys[alg].path, alg=alg if alg != "ES256" else None)
    async with client(op, PrivateKeyJwt(f"poll-jwt-{alg.lower()}", key)) as ciba:
        await approve_and_validate(op, ciba)


async def test_deny_gives_access_denied(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request())
        decision = asyncio.create_task(decide_later(op, ack.auth_req_id, approve=False))
        with pytest.raises(AccessDenied) as caught:
            await ciba.poll(ack)
        await decision
        assert caught.value.final and caught.value.status == 400


async def test_expired_request_gives_expired_token(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request(requested_expiry=2))
        assert ack.expires_in == 2 and ack.interval == 1
        assert isinstance(await ciba.request_token(ack.auth_req_id), Pending)
        (entry,) = [entry for entry in op.requests() if entry["auth_req_id"] == ack.auth_req_id]
        await wait_for(lambda: time.time() > entry["expires_at"], what="the request to expire at the OP")
        with pytest.raises(ExpiredToken):
            await ciba.request_token(ack.auth_req_id)
        # The polling loop stops by itself once expires_in has passed, without another request.
        sent = len(op.token_requests(ack.auth_req_id))
        with pytest.raises(ExpiredToken):
            await ciba.poll(ack)
        assert len(op.token_requests(ack.auth_req_id)) == sent


async def test_unknown_user_gives_unknown_user_id(op: TestOP) -> None:
    async with client(op) as ciba:
        with pytest.raises(UnknownUserId) as caught:
            await ciba.authenticate(payment_request(login_hint="nobody@example.com"))
        assert caught.value.final


async def test_bad_client_secret_gives_invalid_client(op: TestOP) -> None:
    async with client(op, ClientSecretBasic("poll-basic", "wrong-secret")) as ciba:
        with pytest.raises(InvalidClient) as caught:
            await ciba.authenticate(payment_request())
        assert caught.value.status == 401
        assert "wrong-secret" not in str(caught.value)


async def test_user_code_required_and_checked(op: TestOP) -> None:
    async with client(op, ClientSecretBasic("poll-user-code", SECRET)) as ciba:
        with pytest.raises(MissingUserCode):
            await ciba.authenticate(payment_request())
        with pytest.raises(InvalidUserCode):
            await ciba.authenticate(payment_request(user_code="0000"))
        ack = await ciba.authenticate(payment_request(user_code="4711"))
        assert ack.auth_req_id


async def test_slow_down_grows_the_interval_for_every_later_request(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request())
        op.set_faults({"type": "slow_down", "auth_req_id": ack.auth_req_id, "remaining": 1})

        async def approve_after_second_request() -> None:
            while len(op.token_requests(ack.auth_req_id)) < 2:
                await asyncio.sleep(0.2)
            await asyncio.to_thread(op.approve, ack.auth_req_id)

        decision = asyncio.create_task(approve_after_second_request())
        await ciba.poll(ack)
        await decision
    times = [entry["at"] for entry in op.token_requests(ack.auth_req_id)]
    statuses = [entry["status"] for entry in op.token_requests(ack.auth_req_id)]
    assert statuses == [400, 400, 200]  # slow_down, authorization_pending, the tokens
    # The OP's log names each answer's error (the chaos run judges pacing by it).
    assert [entry["error"] for entry in op.token_requests(ack.auth_req_id)] == [
        "slow_down",
        "authorization_pending",
        None,
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # interval 1 s from the acknowledgement, +5 s after slow_down, kept for the request after.
    assert all(gap >= 6.0 - 0.01 for gap in gaps), gaps


async def test_retry_after_is_honoured(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request())
        op.approve(ack.auth_req_id)
        op.set_faults({"type": "unavailable", "auth_req_id": ack.auth_req_id, "retry_after": 3})
        await ciba.poll(ack)
    first, second = (entry["at"] for entry in op.token_requests(ack.auth_req_id))
    assert second - first >= 3.0 - 0.01
    answers = [(entry["status"], entry["error"], entry["retry_after"]) for entry in op.token_requests(ack.auth_req_id)]
    assert answers == [(503, "temporarily_unavailable", 3), (200, None, None)]


async def test_tokens_are_single_use(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request())
        op.approve(ack.auth_req_id)
        assert isinstance(await ciba.request_token(ack.auth_req_id), Granted)
        with pytest.raises(InvalidGrant) as caught:
            await ciba.request_token(ack.auth_req_id)
        assert caught.value.final


async def test_replayed_tokens_of_another_request_are_rejected(op: TestOP) -> None:
    async with client(op) as ciba:
        earlier, _ = await start(ciba, payment_request())
        op.approve(earlier.auth_req_id)
        assert isinstance(await ciba.request_token(earlier.auth_req_id), Granted)

        ack, binding = await start(ciba, payment_request())
        op.approve(ack.auth_req_id)
        op.set_faults({"type": "replay_tokens", "auth_req_id": ack.auth_req_id, "from": earlier.auth_req_id})
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(result.tokens, binding)
        assert caught.value.code == "auth_req_id_mismatch"


async def test_approval_signed_for_another_user_is_rejected(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, binding = await start(ciba, payment_request())
        op.approve(ack.auth_req_id, as_account="bob")
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        with pytest.raises(TokenRejected) as caught:
            await ciba.validate(result.tokens, binding)
        assert caught.value.code == "sub_mismatch"


async def test_weaker_acr_and_other_details_are_rejected(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, binding = await start(ciba, payment_request(acr_values="urn:example:acr:mfa"))
        op.approve(ack.auth_req_id, acr="urn:example:acr:basic")
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        with pytest.raises(TokenRejected, match="acr_not_requested"):
            await ciba.validate(result.tokens, binding)

        ack, binding = await start(ciba, payment_request())
        op.approve(ack.auth_req_id, authorization_details=[{**DETAILS[0], "creditorName": "Mallory Ltd"}])
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        with pytest.raises(TokenRejected, match="authorization_details_mismatch"):
            await ciba.validate(result.tokens, binding)


async def test_push_rules_need_the_binding_claims(plain_op: TestOP) -> None:
    async with client(plain_op) as ciba:
        ack, binding = await start(ciba, payment_request())
        plain_op.approve(ack.auth_req_id)
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        push_binding = binding.model_copy(update={"delivery_mode": "push"})
        with pytest.raises(TokenRejected, match="auth_req_id_missing"):
            await ciba.validate(result.tokens, push_binding)
        assert (await ciba.validate(result.tokens, binding)).sub == "alice"


async def test_introspection_and_revocation(op: TestOP) -> None:
    async with client(op) as ciba:
        ack, _ = await start(ciba, payment_request())
        op.approve(ack.auth_req_id)
        result = await ciba.request_token(ack.auth_req_id)
        assert isinstance(result, Granted)
        access_token = result.tokens.access_token.get_secret_value()
        info = await ciba.introspect(access_token)
        assert info["active"] is True and info["client_id"] == "poll-basic"
        assert info["authorization_details"] == DETAILS
        assert await ciba.revoke(access_token)
        assert (await ciba.introspect(access_token))["active"] is False


async def test_discovery_refuses_an_issuer_that_differs(op: TestOP) -> None:
    async with CibaClient(issuer=op.issuer + "/", client_auth=ClientSecretBasic("poll-basic", SECRET)) as ciba:
        with pytest.raises(DiscoveryError, match="not the configured issuer"):
            await ciba.authenticate(payment_request())
    async with CibaClient(
        issuer=op.issuer, client_auth=ClientSecretBasic("poll-basic", SECRET), delivery_mode="push"
    ) as ciba:
        with pytest.raises(DiscoveryError, match="push"):
            await ciba.metadata()

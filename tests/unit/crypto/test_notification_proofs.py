"""The callback's proof on what it signals, and the activities that check it.

Only a holder of the token key makes a proof; it binds the workflow, the run chain, the signal,
the auth_req_id and the push's content, so none of them can be changed, and a proof made with any
other key (the payload key, say) fails. A check answers, never raises."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from temporal_ciba._activities.activities import CibaActivities
from temporal_ciba._activities.redeem import push_content
from temporal_ciba._models import PingNotice, PushDelivery, RedeemInput, VerifyNotificationInput
from temporal_ciba.ciba import RequestBinding
from temporal_ciba.crypto import NotificationProofs, TokenSealer

TOKEN_KEY = os.urandom(32)
PROOFS = NotificationProofs(TOKEN_KEY)
GENUINE: dict[str, Any] = {
    "workflow_id": "wf-1",
    "first_run_id": "run-1",
    "signal": "ciba.deliver",
    "auth_req_id": "req-1",
    "content": (None, "access_denied", "the user said no"),
}


def test_a_proof_holds_for_exactly_what_it_was_made_for() -> None:
    proof = PROOFS.prove(**GENUINE)
    assert PROOFS.check(proof, **GENUINE)
    for field, other in [
        ("workflow_id", "wf-2"),
        ("first_run_id", "run-2"),
        ("signal", "ciba.notify"),
        ("auth_req_id", "req-2"),
        ("content", (None, "expired_token", "the user said no")),
        ("content", ("sealed", "access_denied", "the user said no")),
        ("content", (None, "access_denied", None)),
    ]:
        assert not PROOFS.check(proof, **{**GENUINE, field: other}), field


@pytest.mark.parametrize("proof", [None, "", "x" * 43, "A" * 500, "\ud800" * 43])
def test_no_proof_or_a_made_up_one_fails(proof: str | None) -> None:
    assert not PROOFS.check(proof, **GENUINE)


def test_no_run_chain_is_no_proof() -> None:
    """A notification that names no run chain is never trusted, whatever its proof."""
    proof = PROOFS.prove(**GENUINE)
    assert not PROOFS.check(proof, **{**GENUINE, "first_run_id": None})
    assert not PROOFS.check(proof, **{**GENUINE, "first_run_id": ""})
    # Not even a proof made for no run chain: it would name whatever waits under the workflow id.
    made_for_none = PROOFS.prove(**{**GENUINE, "first_run_id": ""})
    assert not PROOFS.check(made_for_none, **{**GENUINE, "first_run_id": ""})


def test_a_proof_under_another_key_fails() -> None:
    """Whoever holds the payload key (or any key but the token key) makes no proof that holds."""
    payload_key = os.urandom(32)
    assert not PROOFS.check(NotificationProofs(payload_key).prove(**GENUINE), **GENUINE)


@given(st.text(), st.text(), st.text(max_size=100))
def test_any_text_checks_without_raising(auth_req_id: str, error: str, proof: str) -> None:
    """Lone surrogates, control characters, anything: False, never an exception."""
    fields = {**GENUINE, "auth_req_id": auth_req_id, "content": (None, error, None)}
    assert not PROOFS.check(proof, **fields)
    assert PROOFS.check(PROOFS.prove(**fields), **fields)


# The activities that check them, for the calling workflow (activity.info().workflow_id) -----------

BINDING = RequestBinding(
    auth_req_id="req-1",
    issuer="https://op.example",
    client_id="agent",
    delivery_mode="ping",
    requested_at=0,
    scope="openid",
)


def activities() -> CibaActivities:
    # No OP is reached: an unproven notification is answered before any request.
    return CibaActivities(None, TokenSealer(TOKEN_KEY), notification_proofs=PROOFS)  # type: ignore[arg-type]


def proven_push(**fields: Any) -> PushDelivery:
    delivery = PushDelivery(auth_req_id="req-1", error="access_denied", first_run_id="run-1", **fields)
    proof = PROOFS.prove(
        workflow_id="test",  # ActivityEnvironment's workflow
        first_run_id="run-1",
        signal="ciba.deliver",
        auth_req_id="req-1",
        content=push_content(delivery),
    )
    return delivery.model_copy(update={"proof": proof})


async def test_the_verify_activity_proves_only_the_callbacks_push_for_this_run_chain() -> None:
    verify = activities().verify_notification
    env = ActivityEnvironment()
    genuine = proven_push()
    assert await env.run(verify, VerifyNotificationInput(delivery=genuine, first_run_id="run-1"))
    # Another run chain (an earlier approval under this workflow id), or none named.
    assert not await env.run(verify, VerifyNotificationInput(delivery=genuine, first_run_id="run-2"))
    unnamed = genuine.model_copy(update={"first_run_id": None})
    assert not await env.run(verify, VerifyNotificationInput(delivery=unnamed, first_run_id="run-1"))
    # The error changed under the proof; tokens put in its place; no proof at all.
    for forged in [
        genuine.model_copy(update={"error": "expired_token"}),
        genuine.model_copy(update={"error": None, "sealed_tokens": "sealed"}),
        genuine.model_copy(update={"proof": None}),
    ]:
        assert not await env.run(verify, VerifyNotificationInput(delivery=forged, first_run_id="run-1"))


async def test_a_pinged_redeem_without_the_callbacks_proof_asks_the_op_nothing() -> None:
    notice = PingNotice(auth_req_id="req-1", first_run_id="run-1", proof="forged")
    redeem = RedeemInput(
        binding=BINDING, holder_workflow_id="test", holder_run_id="r", notices=[notice], first_run_id="run-1"
    )
    result = await ActivityEnvironment().run(activities().redeem, redeem)
    assert result.kind == "unproven"  # the OP (None here) was never called


async def test_without_proofs_configured_nothing_is_proven() -> None:
    acts = CibaActivities(None, TokenSealer(TOKEN_KEY))  # type: ignore[arg-type]
    check = VerifyNotificationInput(delivery=proven_push(), first_run_id="run-1")
    assert not await ActivityEnvironment().run(acts.verify_notification, check)

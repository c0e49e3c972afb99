"""RFC 7009 revocation of the tokens nobody will use, in an activity context against an OP behind
an in-process transport: which token, opened only for whom, with which DPoP key."""

from __future__ import annotations

import os

import pytest

from temporal_ciba._models import RevokeAccessTokenInput, RevokeTokensInput
from temporal_ciba.crypto import TokenSealer, access_token_context, tokens_context
from tests.support.mock_op import MockOP, env
from tests.support.tokens import ACCESS_TOKEN, AUTH_REQ_ID, NOW, REFRESH_TOKEN, claims, token_response

DIGEST = "ef" * 32
HOLDER = {"auth_req_id": AUTH_REQ_ID, "action_digest": DIGEST, "holder_workflow_id": "agent", "holder_run_id": "run-a"}


def sealed_for(sealer: TokenSealer, **holder: str) -> str:
    """The access token as the redeem seals it: for the approval, the action and the run that may act."""
    fields = {**HOLDER, **holder}
    context = access_token_context(
        fields["auth_req_id"],
        action_digest=fields["action_digest"],
        workflow_id=fields["holder_workflow_id"],
        run_id=fields["holder_run_id"],
    )
    return sealer.seal(ACCESS_TOKEN, context=context)


async def test_a_late_access_token_is_opened_for_its_holder_and_revoked() -> None:
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer), **HOLDER)
    assert await env().run(acts.revoke_access_token, revoke) is True
    assert op.revoked == [{"token": ACCESS_TOKEN, "token_type_hint": "access_token"}]


@pytest.mark.parametrize(
    "sealed_for_other",
    [
        {"auth_req_id": "another-request"},
        {"action_digest": "00" * 32},
        {"holder_workflow_id": "another-agent"},
        {"holder_run_id": "run-b"},
    ],
    ids=["auth_req_id", "action", "workflow", "run"],
)
async def test_an_access_token_sealed_for_another_holder_is_not_opened(sealed_for_other: dict[str, str]) -> None:
    """The revocation activity opens the token only with the whole context it was sealed under:
    a token of another approval, action or run is not this activity's to spend."""
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer, **sealed_for_other), **HOLDER)
    assert await env().run(acts.revoke_access_token, revoke) is False
    assert op.revoked == []


async def test_every_revocation_of_a_dpop_bound_approval_proves_the_approvals_key() -> None:
    """RFC 9449 §5: the tokens are bound to the approval's DPoP key, so each revocation request
    carries a proof made with that key, the same every worker derives for the auth_req_id."""
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30, dpop=True)
    key = sealer.dpop_keys.for_approval(AUTH_REQ_ID).public_jwk
    tokens = token_response(op.keys.sign(claims()))  # with a refresh token
    sealed_tokens = sealer.seal(tokens.model_dump_json(), context=tokens_context(AUTH_REQ_ID, "wf"))
    assert await env().run(acts.revoke_tokens, RevokeTokensInput(sealed_tokens=sealed_tokens, auth_req_id=AUTH_REQ_ID))
    revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer), **HOLDER)
    assert await env().run(acts.revoke_access_token, revoke)
    assert [form["token"] for form in op.revoked] == [ACCESS_TOKEN, REFRESH_TOKEN, ACCESS_TOKEN]
    assert op.revocation_proof_keys == [key, key, key]


async def test_without_dpop_a_revocation_carries_no_proof() -> None:
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer), **HOLDER)
    assert await env().run(acts.revoke_access_token, revoke)
    assert op.revocation_proof_keys == [None]


async def test_an_op_without_a_revocation_endpoint_revokes_nothing_and_says_so() -> None:
    op, sealer = MockOP(revocation=False), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer), **HOLDER)
    assert await env().run(acts.revoke_access_token, revoke) is False
    sealed_tokens = sealer.seal(
        token_response(op.keys.sign(claims())).model_dump_json(), context=tokens_context(AUTH_REQ_ID, "wf")
    )
    revoke_all = RevokeTokensInput(sealed_tokens=sealed_tokens, auth_req_id=AUTH_REQ_ID)
    assert await env().run(acts.revoke_tokens, revoke_all) is False
    assert op.revoked == []


@pytest.mark.parametrize("case", ["refused", "sealed-for-another-workflow"])
async def test_tokens_not_revoked_say_so(case: str) -> None:
    """Best effort, but never claimed: an OP that refuses, or tokens this workflow cannot open."""
    op, sealer = MockOP(refuse_revocation=case == "refused"), TokenSealer(os.urandom(32))
    acts = op.activities(sealer, requested_at=NOW - 30)
    workflow = "another-workflow" if case == "sealed-for-another-workflow" else "wf"
    tokens = token_response(op.keys.sign(claims()))
    sealed_tokens = sealer.seal(tokens.model_dump_json(), context=tokens_context(AUTH_REQ_ID, workflow))
    revoke_all = RevokeTokensInput(sealed_tokens=sealed_tokens, auth_req_id=AUTH_REQ_ID)
    assert await env().run(acts.revoke_tokens, revoke_all) is False
    assert len(op.revoked) == (1 if case == "refused" else 0)  # the refresh token only after the access token
    if case == "refused":
        revoke = RevokeAccessTokenInput(sealed_access_token=sealed_for(sealer), **HOLDER)
        assert await env().run(acts.revoke_access_token, revoke) is False

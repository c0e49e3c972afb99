"""The redeem activity (token request and validation in one step, the decision path's local activity).

Only the claims and the sealed access token leave it, rejected and unneeded tokens are revoked
inside it, and invalid_grant for our own auth_req_id is a lost grant."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from temporal_ciba._activities import GRANT_LOST, CibaActivities, Redemptions
from temporal_ciba._activities import redeem as redeem_module
from temporal_ciba._activities.redeem import REDEEM_GRANT_LOST_REASON, DecisionOnRecord
from temporal_ciba._models import (
    ApprovalOutcome,
    PingNotice,
    RedeemInput,
    RedeemResult,
    TokenRequestInput,
    ValidateTokensInput,
)
from temporal_ciba.ciba import CibaClient, ClientSecretBasic, TransportError
from temporal_ciba.crypto import (
    NotificationProofs,
    SealError,
    TokenSealer,
    access_token_context,
    id_token_context,
    tokens_context,
)
from tests.support.mock_op import MockOP, env
from tests.support.temporal import wait_for
from tests.support.tokens import (
    ACCESS_TOKEN,
    AUTH_REQ_ID,
    CLIENT_ID,
    ISSUER,
    NOW,
    REFRESH_TOKEN,
    binding,
    claims,
    token_response,
)

DIGEST = "d" * 64
NOW_AT = datetime.fromtimestamp(NOW, UTC)


class TokenOP(MockOP):
    """MockOP whose token endpoint answers `answer` (a body and a status)."""

    def __init__(
        self, status: int, body: dict[str, Any] | bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.token_requests = 0
        self.token_proof_keys: list[dict[str, str] | None] = []
        self.token_forms: list[dict[str, str]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests += 1
            self.token_forms.append(dict(httpx.QueryParams(request.content.decode())))
            proof = request.headers.get("DPoP")
            self.token_proof_keys.append(jwt.get_unverified_header(proof)["jwk"] if proof else None)
            if isinstance(self.body, bytes):
                return httpx.Response(self.status, content=self.body, headers=self.headers)
            return httpx.Response(self.status, json=self.body, headers=self.headers)
        return await super().__call__(request)

    def redeem_activities(
        self,
        sealer: TokenSealer,
        decision_on_record: DecisionOnRecord | None = None,
        notification_proofs: NotificationProofs | None = None,
        dpop: bool = False,
    ) -> CibaActivities:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        ciba = CibaClient(
            issuer=ISSUER, client_auth=ClientSecretBasic(CLIENT_ID, "secret"), http=http, clock=lambda: NOW, dpop=dpop
        )
        return CibaActivities(
            ciba, sealer, decision_on_record=decision_on_record, notification_proofs=notification_proofs
        )


def granted(op: TokenOP, **claim_overrides: Any) -> dict[str, Any]:
    return {
        "access_token": ACCESS_TOKEN,
        "token_type": "Bearer",
        "id_token": op.keys.sign(claims(**claim_overrides)),
        "refresh_token": REFRESH_TOKEN,
        "expires_in": 600,
        "scope": "openid payments",
        "authorization_details": binding().authorization_details,
    }


REDEEM = RedeemInput(binding=binding(), holder_workflow_id="agent", holder_run_id="agent-run", action_digest=DIGEST)


async def test_an_approval_leaves_only_its_claims_and_the_access_token_sealed_for_the_holder() -> None:
    op, sealer = TokenOP(200), TokenSealer(os.urandom(32))
    op.body = granted(op)
    result = await env().run(op.redeem_activities(sealer).redeem, REDEEM)
    assert result.kind == "approved" and result.approval is not None and result.approval.sub == "alice"
    context = access_token_context(AUTH_REQ_ID, action_digest=DIGEST, workflow_id="agent", run_id="agent-run")
    assert result.sealed_access_token is not None
    assert sealer.unseal(result.sealed_access_token, context=context) == ACCESS_TOKEN
    # The ID token, the decision record's evidence, opens only for the approval workflow (env()'s).
    assert result.sealed_id_token is not None
    assert sealer.unseal(result.sealed_id_token, context=id_token_context(AUTH_REQ_ID, "wf")) == op.body["id_token"]
    leaving = result.model_dump_json()
    assert op.body["id_token"] not in leaving and ACCESS_TOKEN not in leaving and REFRESH_TOKEN not in leaving
    # One approval is one use: the refresh token is revoked at once, the access token kept.
    assert [(form["token"], form["token_type_hint"]) for form in op.revoked] == [(REFRESH_TOKEN, "refresh_token")]


async def test_rejected_tokens_are_revoked_inside_and_never_leave() -> None:
    op, sealer = TokenOP(200), TokenSealer(os.urandom(32))
    op.body = granted(op, sub="mallory")
    result = await env().run(op.redeem_activities(sealer).redeem, REDEEM)
    assert (result.kind, result.error, result.sealed_access_token) == ("rejected", "sub_mismatch", None)
    assert result.reason == "the ID token is for another user"
    assert [(form["token"], form["token_type_hint"]) for form in op.revoked] == [
        (ACCESS_TOKEN, "access_token"),
        (REFRESH_TOKEN, "refresh_token"),
    ]


@pytest.mark.parametrize(
    "status,body,kind,error",
    [
        (400, {"error": "authorization_pending"}, "pending", None),
        (400, {"error": "slow_down"}, "slow_down", None),
        (400, {"error": "access_denied"}, "failed", "access_denied"),
        (400, {"error": "expired_token"}, "failed", "expired_token"),
        # A local activity repeated after a worker crash starts at attempt 1 again: our own
        # auth_req_id refused is a lost grant whatever the attempt.
        (400, {"error": "invalid_grant"}, "failed", GRANT_LOST),
    ],
)
async def test_every_answer_of_the_token_endpoint_is_data(
    status: int, body: dict[str, Any], kind: str, error: str | None
) -> None:
    op = TokenOP(status, body)
    result = await env().run(op.redeem_activities(TokenSealer(os.urandom(32))).redeem, REDEEM)
    assert (result.kind, result.error) == (kind, error)
    assert op.token_requests == 1 and op.revoked == []
    assert json.loads(result.model_dump_json())["sealed_access_token"] is None


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "error", "reason", "retry_after"),
    [
        (
            400,
            {"error": "access_denied", "error_description": "the user said no"},
            {},
            "failed",
            "access_denied",
            "access_denied: the user said no",
            None,
        ),
        (503, {}, {"Retry-After": "7"}, "retry_later", None, None, 7.0),
        (429, {}, {"Retry-After": "9"}, "retry_later", None, None, 9.0),
        (200, b"{not json", {"content-type": "application/json"}, "failed", None, "response is not JSON", None),
        (200, {"token_type": "Bearer"}, {}, "failed", None, "token response has no access_token", None),
        (400, {"error": "authorization_pending"}, {}, "pending", None, None, None),
        (400, {"error": "slow_down"}, {}, "slow_down", None, None, None),
    ],
    ids=["refused", "503-retry-after", "429-retry-after", "not-json", "no-access-token", "pending", "slow-down"],
)
@pytest.mark.parametrize("path", ["redeem", "request_token"])
async def test_an_answer_without_tokens_is_data_with_the_ops_words_and_wait(
    path: str,
    status: int,
    body: dict[str, Any] | bytes,
    headers: dict[str, str],
    kind: str,
    error: str | None,
    reason: str | None,
    retry_after: float | None,
) -> None:
    """The outcome says what the OP said: the spec's error code and its description, or what was
    wrong with the response (a protocol error, no code of the OP's); an OP that asks to wait
    (Retry-After) is waited for. Both decision paths (redeem, and request_token before it)."""
    op = TokenOP(status, body, headers)
    acts = op.redeem_activities(TokenSealer(os.urandom(32)))
    if path == "redeem":
        result: Any = await env().run(acts.redeem, REDEEM)
    else:
        result = await env().run(acts.request_token, TokenRequestInput(auth_req_id=AUTH_REQ_ID))
    assert (result.kind, result.error, result.retry_after_seconds) == (kind, error, retry_after)
    assert result.reason == reason if reason is None else (result.reason is not None and reason in result.reason)
    # CIBA §10.1: one request, for this approval's auth_req_id.
    assert op.token_forms == [{"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": AUTH_REQ_ID}]


async def test_a_token_request_seals_the_tokens_for_the_workflow_that_asked() -> None:
    """request_token's tokens open only in the approval workflow that asked, for its auth_req_id."""
    op, sealer = TokenOP(200), TokenSealer(os.urandom(32))
    op.body = granted(op)
    result = await env().run(op.redeem_activities(sealer).request_token, TokenRequestInput(auth_req_id=AUTH_REQ_ID))
    assert result.kind == "granted" and result.sealed_tokens is not None
    opened = sealer.unseal(result.sealed_tokens, context=tokens_context(AUTH_REQ_ID, "wf"))  # env()'s workflow
    assert json.loads(opened)["access_token"] == ACCESS_TOKEN
    with pytest.raises(SealError):
        sealer.unseal(result.sealed_tokens, context=tokens_context(AUTH_REQ_ID, "another-workflow"))
    with pytest.raises(SealError):
        sealer.unseal(result.sealed_tokens, context=tokens_context("another-request", "wf"))


async def test_a_pending_answer_says_how_long_the_request_took() -> None:
    """The workflow shortens its next timer by this, so polls start an interval apart."""

    class SlowTokenOP(TokenOP):
        async def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/token":
                await asyncio.sleep(0.3)  # the OP's latency: the figure measured, not a path chosen
            return await super().__call__(request)

    op = SlowTokenOP(400, {"error": "authorization_pending"})
    result = await env().run(op.redeem_activities(TokenSealer(os.urandom(32))).redeem, REDEEM)
    assert result.kind == "pending" and result.request_seconds is not None
    assert 0.3 <= result.request_seconds < 10


async def test_a_repeated_redeem_joins_the_one_in_flight_and_gets_its_final_answer() -> None:
    redemptions, calls, release = Redemptions(), [], asyncio.Event()

    async def redeem() -> RedeemResult:
        calls.append(1)
        await release.wait()
        return RedeemResult(kind="approved", sealed_access_token="sealed")

    first = asyncio.create_task(redemptions.once(REDEEM, redeem))
    await asyncio.sleep(0)  # the first is in flight
    repeat = asyncio.create_task(redemptions.once(REDEEM, redeem))
    release.set()
    assert (await first) == (await repeat) == RedeemResult(kind="approved", sealed_access_token="sealed")
    assert await redemptions.once(REDEEM, redeem) == await first  # later: from memory
    assert len(calls) == 1


async def test_only_final_answers_are_remembered() -> None:
    redemptions, answers = Redemptions(), [RedeemResult(kind="pending"), RedeemResult(kind="approved")]

    async def redeem() -> RedeemResult:
        return answers.pop(0)

    assert (await redemptions.once(REDEEM, redeem)).kind == "pending"
    assert (await redemptions.once(REDEEM, redeem)).kind == "approved"  # asked again
    assert (await redemptions.once(REDEEM, redeem)).kind == "approved" and answers == []


@pytest.mark.parametrize("kind", ["approved", "rejected", "failed"])
async def test_each_final_answer_is_remembered_for_its_own_request_only(kind: str) -> None:
    redemptions, asked = Redemptions(), []

    async def redeem(label: str) -> RedeemResult:
        asked.append(label)
        return RedeemResult.model_validate({"kind": kind, "reason": label})

    other = REDEEM.model_copy(update={"holder_run_id": "another-run"})
    assert (await redemptions.once(REDEEM, lambda: redeem("first"))).reason == "first"
    assert (await redemptions.once(REDEEM, lambda: redeem("again"))).reason == "first"
    assert (await redemptions.once(other, lambda: redeem("other"))).reason == "other"
    assert asked == ["first", "other"]


async def test_the_oldest_final_answers_are_forgotten_past_the_limit() -> None:
    """A worker's memory of answers is bounded: past `remember`, the oldest go first."""
    redemptions, asked = Redemptions(remember=2), []
    inputs = [REDEEM.model_copy(update={"holder_run_id": f"run-{n}"}) for n in range(3)]

    async def redeem(n: int) -> RedeemResult:
        asked.append(n)
        return RedeemResult(kind="approved")

    for n, redeem_input in enumerate(inputs):
        await redemptions.once(redeem_input, lambda n=n: redeem(n))  # type: ignore[misc]
    asked.clear()
    for n, redeem_input in reversed(list(enumerate(inputs))):
        await redemptions.once(redeem_input, lambda n=n: redeem(n))  # type: ignore[misc]
    assert asked == [0]  # the last two are remembered, the first was forgotten


async def test_a_failed_redeem_is_not_remembered() -> None:
    redemptions = Redemptions()

    async def unreachable() -> RedeemResult:
        raise TransportError("the OP could not be reached")

    with pytest.raises(TransportError):
        await redemptions.once(REDEEM, unreachable)
    assert (await redemptions.once(REDEEM, lambda: _answer("pending"))).kind == "pending"


async def _answer(kind: str) -> RedeemResult:
    return RedeemResult.model_validate({"kind": kind})


async def test_a_decision_on_record_is_answered_without_a_token_request() -> None:
    """An earlier workflow task of this approval redeemed and recorded, then its worker died: asking
    again would meet invalid_grant, and the OP would revoke the tokens the first request got."""
    on_record = ApprovalOutcome(
        status="approved", workflow_id="approval", auth_req_id=AUTH_REQ_ID, reason="ok", decided_at=NOW_AT
    )
    asked: list[tuple[str, str, str]] = []

    async def decision_on_record(workflow_id: str, first_run_id: str, auth_req_id: str) -> ApprovalOutcome | None:
        asked.append((workflow_id, first_run_id, auth_req_id))
        return on_record if first_run_id == "run-1" else None

    op = TokenOP(400, {"error": "invalid_grant"})
    activities = op.redeem_activities(TokenSealer(os.urandom(32)), decision_on_record)
    activity_env = env()
    activity_env.info = dataclasses.replace(activity_env.info, workflow_id="approval")
    result = await activity_env.run(activities.redeem, REDEEM.model_copy(update={"first_run_id": "run-1"}))
    assert (result.kind, result.recorded) == ("recorded", on_record) and op.token_requests == 0
    assert asked == [("approval", "run-1", AUTH_REQ_ID)]
    # Nothing on record: the token request goes out.
    result = await activity_env.run(activities.redeem, REDEEM.model_copy(update={"first_run_id": "run-2"}))
    assert (result.kind, result.error, op.token_requests) == ("failed", GRANT_LOST, 1)
    assert result.reason == REDEEM_GRANT_LOST_REASON


async def test_a_decision_on_record_counts_the_unproven_pings_that_came_with_it() -> None:
    async def decision_on_record(workflow_id: str, first_run_id: str, auth_req_id: str) -> ApprovalOutcome | None:
        return ApprovalOutcome(
            status="approved", workflow_id="wf", auth_req_id=AUTH_REQ_ID, reason="ok", decided_at=NOW_AT
        )

    op = TokenOP(400, {"error": "invalid_grant"})
    acts = op.redeem_activities(TokenSealer(os.urandom(32)), decision_on_record, notification_proofs=PROOFS)
    forged = PingNotice(auth_req_id=AUTH_REQ_ID, first_run_id="run-1", proof="forged")
    pinged = REDEEM.model_copy(update={"notices": [ping(), forged], "first_run_id": "run-1"})
    result = await env().run(acts.redeem, pinged)
    assert (result.kind, result.unproven_notices, op.token_requests) == ("recorded", 1, 0)


def validation(
    sealer: TokenSealer, op: MockOP, *, sealed_for: str = "wf", **claim_overrides: Any
) -> ValidateTokensInput:
    tokens = token_response(op.keys.sign(claims(**claim_overrides)))
    sealed = sealer.seal(tokens.model_dump_json(), context=tokens_context(AUTH_REQ_ID, sealed_for))
    return ValidateTokensInput(
        sealed_tokens=sealed,
        binding=binding(),
        holder_workflow_id="agent",
        holder_run_id="agent-run",
        action_digest=DIGEST,
    )


async def test_validated_tokens_leave_sealed_for_the_holders_action_and_the_approvals_record() -> None:
    """validate_tokens (the path before redeem): the access token opens only for the run that may
    act and its action, the ID token only for the approval workflow that records it."""
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    result = await env().run(op.activities(sealer, requested_at=NOW - 30).validate_tokens, validation(sealer, op))
    assert result.error is None and result.approval is not None and result.approval.sub == "alice"
    holder = access_token_context(AUTH_REQ_ID, action_digest=DIGEST, workflow_id="agent", run_id="agent-run")
    assert result.sealed_access_token is not None and result.sealed_id_token is not None
    assert sealer.unseal(result.sealed_access_token, context=holder) == ACCESS_TOKEN
    id_token = sealer.unseal(result.sealed_id_token, context=id_token_context(AUTH_REQ_ID, "wf"))
    assert jwt.decode(id_token, options={"verify_signature": False})["sub"] == "alice"
    with pytest.raises(SealError):
        sealer.unseal(result.sealed_id_token, context=id_token_context(AUTH_REQ_ID, "agent"))


@pytest.mark.parametrize(
    ("sealed_for", "claim_overrides", "error", "reason"),
    [
        ("another-workflow", {}, "seal_invalid", "does not open with this key and context"),
        ("wf", {"sub": "mallory"}, "sub_mismatch", "another user"),
    ],
    ids=["sealed-for-another-workflow", "another-approver"],
)
async def test_tokens_that_do_not_validate_leave_nothing_but_the_reason(
    sealed_for: str, claim_overrides: dict[str, Any], error: str, reason: str
) -> None:
    op, sealer = MockOP(), TokenSealer(os.urandom(32))
    check = validation(sealer, op, sealed_for=sealed_for, **claim_overrides)
    result = await env().run(op.activities(sealer, requested_at=NOW - 30).validate_tokens, check)
    assert (result.error, result.approval, result.sealed_access_token, result.sealed_id_token) == (
        error,
        None,
        None,
        None,
    )
    assert result.reason and reason in result.reason


PROOFS = NotificationProofs(os.urandom(32))


def ping(*, first_run_id: str = "run-1", auth_req_id: str = AUTH_REQ_ID, workflow_id: str = "wf") -> PingNotice:
    """A ping as the callback signals it, with its proof for this workflow's run chain."""
    proof = PROOFS.prove(
        workflow_id=workflow_id, first_run_id=first_run_id, signal=NotificationProofs.PING, auth_req_id=auth_req_id
    )
    return PingNotice(auth_req_id=auth_req_id, first_run_id=first_run_id, proof=proof)


@pytest.mark.parametrize(
    ("notices", "asked", "unproven"),
    [
        ([ping()], True, 0),
        ([ping(), PingNotice(auth_req_id=AUTH_REQ_ID, first_run_id="run-1", proof="forged")], True, 1),
        ([ping(first_run_id="run-0")], False, 1),  # an earlier approval's run chain under this id
        ([ping(workflow_id="another-workflow")], False, 1),
        ([PingNotice(auth_req_id=AUTH_REQ_ID, first_run_id="run-1")], False, 1),
    ],
    ids=["proven", "one-of-two-proven", "another-run-chain", "another-workflow", "no-proof"],
)
async def test_a_pinged_redeem_asks_the_op_once_a_ping_is_proven_for_this_run_chain(
    notices: list[PingNotice], asked: bool, unproven: int
) -> None:
    """The callback's proof binds a ping to the workflow, its first run and the auth_req_id: any
    other asks the OP nothing; the unproven ones are counted (the status query shows them)."""
    op, sealer = TokenOP(400, {"error": "authorization_pending"}), TokenSealer(os.urandom(32))
    acts = op.redeem_activities(sealer, notification_proofs=PROOFS)
    redeem = REDEEM.model_copy(update={"notices": notices, "first_run_id": "run-1"})
    result = await env().run(acts.redeem, redeem)
    assert (result.kind, op.token_requests, result.unproven_notices) == (
        ("pending", 1, unproven) if asked else ("unproven", 0, unproven)
    )
    if not asked:
        assert result.reason == "the ping carries no valid proof from the callback"


async def test_redeems_pinged_by_different_pings_are_one_token_request() -> None:
    """Whatever pinged it, one approval has one token request in flight: a second redeem, pinged
    or not, joins the first (CIBA §7.3: never two at once for one auth_req_id)."""
    release = asyncio.Event()

    class HeldTokenOP(TokenOP):
        arrived = 0

        async def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/token":
                self.arrived += 1
                await release.wait()
            return await super().__call__(request)

    op = HeldTokenOP(400, {"error": "authorization_pending"})
    acts = op.redeem_activities(TokenSealer(os.urandom(32)), notification_proofs=PROOFS)
    first = REDEEM.model_copy(update={"notices": [ping()], "first_run_id": "run-1"})
    second = REDEEM  # unpinged: no notices, no run chain to prove them against
    both = asyncio.gather(env().run(acts.redeem, first), env().run(acts.redeem, second))
    await wait_for(lambda: op.arrived == 1, what="the first token request")
    release.set()
    assert [result.kind for result in await both] == ["pending", "pending"]
    assert op.arrived == 1


class SilentOP(TokenOP):
    """An OP that takes a token request and never answers it."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            await asyncio.Event().wait()
        return await super().__call__(request)


@pytest.mark.parametrize("path", ["redeem", "request_token"])
async def test_a_token_request_ends_within_its_attempt_whatever_the_op_does(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt ends before Temporal's start-to-close timeout retries it, so two token requests
    for one auth_req_id never overlap (CIBA §7.3); here the attempt's limit is shortened."""
    monkeypatch.setattr(redeem_module, "ATTEMPT_SECONDS", 0.05)
    acts = SilentOP(200).redeem_activities(TokenSealer(os.urandom(32)))
    with pytest.raises(TimeoutError):
        if path == "redeem":
            await env().run(acts.redeem, REDEEM)
        else:
            await env().run(acts.request_token, TokenRequestInput(auth_req_id=AUTH_REQ_ID))


@pytest.mark.parametrize(
    ("sub", "kind", "revoked"),
    [("alice", "approved", ["refresh_token"]), ("mallory", "rejected", ["access_token", "refresh_token"])],
)
async def test_a_dpop_bound_approvals_token_request_and_revocations_prove_its_key(
    sub: str, kind: str, revoked: list[str]
) -> None:
    """RFC 9449: the token request and every revocation the redeem makes (the refresh token at
    once, rejected tokens whole) carry proofs made with the approval's own DPoP key."""
    op, sealer = TokenOP(200), TokenSealer(os.urandom(32))
    op.body = {**granted(op, sub=sub), "token_type": "DPoP"}
    key = sealer.dpop_keys.for_approval(AUTH_REQ_ID).public_jwk
    result = await env().run(op.redeem_activities(sealer, dpop=True).redeem, REDEEM)
    assert result.kind == kind
    assert op.token_proof_keys == [key]
    # The path before redeem: its token request proves the same key.
    await env().run(op.redeem_activities(sealer, dpop=True).request_token, TokenRequestInput(auth_req_id=AUTH_REQ_ID))
    assert op.token_proof_keys == [key, key]
    assert [form["token_type_hint"] for form in op.revoked] == revoked
    assert op.revocation_proof_keys == [key] * len(revoked)

"""Redeeming an approval: the token request (CIBA §10.1) and the validation (CIBA §10.3.1).

Together (`redeem`, the decision path) or as two activities (`request_token` then
`validate_tokens`, DecisionPath.redeem False); the tokens are checked against the original request.

Final answers of the OP (error codes, malformed responses, rejected tokens) are returned as data
so the workflow can end with the matching outcome; only failures worth retrying (transport
errors, 5xx) are raised, for Temporal's retry policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from temporalio import activity

from temporal_ciba._activities.revocation import Revoker
from temporal_ciba._activities.sealing import ApprovalSeals
from temporal_ciba._models import (
    ApprovalOutcome,
    PingNotice,
    PushDelivery,
    RedeemInput,
    RedeemResult,
    TokenRequestInput,
    TokenRequestResult,
    ValidateTokensInput,
    ValidateTokensResult,
)
from temporal_ciba.ciba import (
    CibaClient,
    Granted,
    OAuthError,
    Pending,
    ProtocolError,
    RetryLater,
    SlowDown,
    TokenRejected,
)
from temporal_ciba.crypto import NotificationProofs, SealError

# The outcome on record for (workflow id, first run id, auth_req_id), or None (DecisionRecorder.decision_on_record).
DecisionOnRecord = Callable[[str, str, str], Awaitable[ApprovalOutcome | None]]


def push_content(delivery: PushDelivery) -> tuple[str | None, ...]:
    """What a push's proof covers besides its auth_req_id: its sealed tokens, or its error."""
    return (delivery.sealed_tokens, delivery.error, delivery.error_description)


# Every attempt ends within this, below the workflow's 45 s start-to-close timeout: an attempt
# is over before Temporal retries it, so two token requests for one auth_req_id never overlap
# (CIBA §7.3), even when the retry lands on another worker. The send activity keeps to it too.
ATTEMPT_SECONDS = 40.0
GRANT_LOST = "grant_lost"
GRANT_LOST_REASON = "tokens were issued but lost before they were recorded"
# A local activity repeated after a worker crash starts again at attempt 1, so for `redeem` an
# invalid_grant for our own recorded auth_req_id is read as a lost grant whatever the attempt.
REDEEM_GRANT_LOST_REASON = (
    "the OP no longer accepts this auth_req_id: its tokens were issued and lost (a worker stopped "
    "mid-request), or the OP dropped the request"
)


class Redemptions:
    """Each redeem once per worker.

    A local activity runs again when the workflow task that
    would record its result fails: a signal (a duplicate ping) that arrives as the approval
    completes makes the server refuse that completion. The repeat joins the token request still
    in flight, or gets its final answer, instead of asking the OP again: a second request would
    overlap the first (CIBA §7.3) or meet invalid_grant for tokens already issued."""

    def __init__(self, remember: int = 10_000) -> None:
        self._remember = remember
        self._final: OrderedDict[str, RedeemResult] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[RedeemResult]] = {}

    async def once(self, input: RedeemInput, redeem: Callable[[], Awaitable[RedeemResult]]) -> RedeemResult:
        key = hashlib.sha256(input.model_dump_json().encode()).hexdigest()
        if (final := self._final.get(key)) is not None:
            return final
        if (running := self._in_flight.get(key)) is not None:
            return await asyncio.shield(running)
        running = asyncio.get_running_loop().create_future()
        self._in_flight[key] = running
        try:
            result = await redeem()
        except BaseException as exc:
            running.set_exception(exc)
            running.exception()  # retrieved: a repeat may never come to read it
            raise
        finally:
            del self._in_flight[key]
        running.set_result(result)
        if result.kind in ("approved", "rejected", "failed"):
            self._final[key] = result
            while len(self._final) > self._remember:
                self._final.popitem(last=False)
        return result


class Redeemer:
    """Requests an approval's tokens and validates them; only sealed tokens and claims leave."""

    def __init__(
        self,
        ciba: CibaClient,
        seals: ApprovalSeals,
        revoker: Revoker,
        proofs: NotificationProofs | None = None,
        decision_on_record: DecisionOnRecord | None = None,
    ) -> None:
        self._ciba = ciba
        self._seals = seals
        self._revoker = revoker
        self._redemptions = Redemptions()
        # Without them no notification is proven: a pinged redeem answers "unproven".
        self._proofs = proofs
        self._decision_on_record = decision_on_record

    def proven_ping(self, notice: PingNotice, first_run_id: str | None) -> bool:
        """Whether the callback made this ping, for the calling workflow's run chain."""
        workflow_id = activity.info().workflow_id or ""
        proven = self._proofs is not None and self._proofs.check(
            notice.proof,
            workflow_id=workflow_id,
            first_run_id=notice.first_run_id if notice.first_run_id == first_run_id else None,
            signal=NotificationProofs.PING,
            auth_req_id=notice.auth_req_id,
        )
        if not proven:
            activity.logger.warning(
                "a ping for auth_req_id=%s without the callback's proof: dropped", notice.auth_req_id
            )
        return proven

    def proven_push(self, delivery: PushDelivery, first_run_id: str) -> bool:
        """Whether the callback made this push (its tokens or its error), for the calling workflow's run chain."""
        workflow_id = activity.info().workflow_id or ""
        proven = self._proofs is not None and self._proofs.check(
            delivery.proof,
            workflow_id=workflow_id,
            first_run_id=delivery.first_run_id if delivery.first_run_id == first_run_id else None,
            signal=NotificationProofs.PUSH,
            auth_req_id=delivery.auth_req_id,
            content=push_content(delivery),
        )
        if not proven:
            activity.logger.warning(
                "a push for auth_req_id=%s without the callback's proof: dropped", delivery.auth_req_id
            )
        return proven

    async def request_token(self, input: TokenRequestInput) -> TokenRequestResult:
        """One token request; granted tokens leave sealed, for validate_tokens."""
        info = activity.info()
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                result = await self._ciba.request_token(
                    input.auth_req_id, dpop_key=self._seals.dpop_key(input.auth_req_id)
                )
        except OAuthError as exc:
            if exc.error == "invalid_grant" and info.attempt > 1:
                # An earlier attempt may have received the tokens and died before recording
                # them; the OP then refuses the auth_req_id (and may revoke the grant).
                activity.logger.warning("auth_req_id=%s: grant lost after attempt %d", input.auth_req_id, info.attempt)
                return TokenRequestResult(kind="failed", error=GRANT_LOST, reason=GRANT_LOST_REASON)
            return TokenRequestResult(kind="failed", error=exc.error, reason=str(exc))
        except ProtocolError as exc:
            return TokenRequestResult(kind="failed", reason=str(exc))
        if isinstance(result, Granted):
            sealed = self._seals.seal_tokens(result.tokens, input.auth_req_id, info.workflow_id or "")
            return TokenRequestResult(kind="granted", sealed_tokens=sealed)
        if isinstance(result, RetryLater):
            return TokenRequestResult(kind="retry_later", retry_after_seconds=result.seconds)
        if isinstance(result, SlowDown):
            return TokenRequestResult(kind="slow_down")
        assert isinstance(result, Pending)
        return TokenRequestResult(kind="pending")

    async def validate_tokens(self, input: ValidateTokensInput) -> ValidateTokensResult:
        """Validate request_token's sealed tokens against the original request."""
        auth_req_id = input.binding.auth_req_id
        try:
            tokens = self._seals.unseal_tokens(input.sealed_tokens, auth_req_id)
            approval = await self._ciba.validate(tokens, input.binding)
        except SealError as exc:
            return ValidateTokensResult(error="seal_invalid", reason=str(exc))
        except TokenRejected as exc:
            activity.logger.warning("tokens rejected for auth_req_id=%s: %s", auth_req_id, exc)
            return ValidateTokensResult(error=exc.code, reason=exc.reason)
        return ValidateTokensResult(
            approval=approval,
            sealed_access_token=self._seals.seal_access_token(
                tokens, auth_req_id, input.action_digest, input.holder_workflow_id, input.holder_run_id
            ),
            sealed_id_token=self._seals.seal_id_token(tokens, auth_req_id),
        )

    async def redeem(self, input: RedeemInput) -> RedeemResult:
        """The token request and the validation in one step, once per worker (Redemptions).

        A pinged one (`input.notices`) first checks the pings' proofs: "unproven", and no token
        request, when the callback made none of them."""
        unproven = sum(not self.proven_ping(notice, input.first_run_id) for notice in input.notices)
        if input.notices and unproven == len(input.notices):
            reason = "the ping carries no valid proof from the callback"
            return RedeemResult(kind="unproven", reason=reason, unproven_notices=unproven)
        if (recorded := await self._recorded(input)) is not None:
            return RedeemResult(kind="recorded", recorded=recorded, unproven_notices=unproven)
        # One request per approval whatever pinged it: a repeat joins it (Redemptions).
        plain = input.model_copy(update={"notices": [], "first_run_id": None})
        result = await self._redemptions.once(plain, lambda: self._redeem(plain))
        return result.model_copy(update={"unproven_notices": unproven}) if unproven else result

    async def _recorded(self, input: RedeemInput) -> ApprovalOutcome | None:
        """The decision on record for this auth_req_id, taken by a workflow task that never completed.

        Its worker died after the redeem and the record write. Asking the OP again would meet
        invalid_grant, and an OP that sees an auth_req_id redeemed twice revokes the tokens it
        issued for it (RFC 6749 §4.1.2, for a reused code)."""
        if self._decision_on_record is None or input.first_run_id is None:
            return None
        workflow_id = activity.info().workflow_id or ""
        recorded = await self._decision_on_record(workflow_id, input.first_run_id, input.binding.auth_req_id)
        if recorded is not None:
            activity.logger.warning(
                "auth_req_id=%s: its decision is on record (%s); no token request",
                input.binding.auth_req_id,
                recorded.status,
            )
        return recorded

    async def redeem_once(self, input: RedeemInput) -> RedeemResult:
        """One token request and, when tokens come, their validation (the poll loop's step)."""
        return await self._redeem(input)

    async def _redeem(self, input: RedeemInput) -> RedeemResult:
        auth_req_id = input.binding.auth_req_id
        started = time.monotonic()
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                result = await self._ciba.request_token(auth_req_id, dpop_key=self._seals.dpop_key(auth_req_id))
        except OAuthError as exc:
            if exc.error == "invalid_grant":
                activity.logger.warning("auth_req_id=%s: invalid_grant, read as a lost grant", auth_req_id)
                return RedeemResult(kind="failed", error=GRANT_LOST, reason=REDEEM_GRANT_LOST_REASON)
            return RedeemResult(kind="failed", error=exc.error, reason=str(exc))
        except ProtocolError as exc:
            return RedeemResult(kind="failed", reason=str(exc))
        if isinstance(result, RetryLater):
            return RedeemResult(kind="retry_later", retry_after_seconds=result.seconds)
        if isinstance(result, SlowDown):
            return RedeemResult(kind="slow_down")
        if isinstance(result, Pending):
            return RedeemResult(kind="pending", request_seconds=time.monotonic() - started)
        assert isinstance(result, Granted)
        tokens = result.tokens
        try:
            approval = await self._ciba.validate(tokens, input.binding)
        except TokenRejected as exc:
            activity.logger.warning("tokens rejected for auth_req_id=%s: %s", auth_req_id, exc)
            await self._revoker.revoke_issued(tokens, auth_req_id, refresh_only=False)
            return RedeemResult(kind="rejected", error=exc.code, reason=exc.reason)
        if tokens.refresh_token is not None:
            await self._revoker.revoke_issued(tokens, auth_req_id, refresh_only=True)
        return RedeemResult(
            kind="approved",
            approval=approval,
            sealed_access_token=self._seals.seal_access_token(
                tokens, auth_req_id, input.action_digest, input.holder_workflow_id, input.holder_run_id
            ),
            sealed_id_token=self._seals.seal_id_token(tokens, auth_req_id),
        )

"""The approval activities: thin wrappers that run `temporal_ciba.ciba` for the workflow.

CibaActivities is the surface Temporal sees (the activity names, one typed input and result
each); every method hands its work to the module that holds that job: send.py the backchannel
request, subjects.py who may approve, redeem.py the token request and validation, revocation.py
the tokens nobody will use, sealing.py how tokens leave an activity.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from temporalio import activity

from temporal_ciba._activities.polling import PollLoop, PollRuns
from temporal_ciba._activities.redeem import DecisionOnRecord, Redeemer
from temporal_ciba._activities.revocation import Revoker
from temporal_ciba._activities.sealing import ApprovalSeals
from temporal_ciba._activities.send import NotificationTokenFactory, Sender
from temporal_ciba._activities.subjects import ApproverSubjects
from temporal_ciba._models import (
    PollInput,
    PollProgress,
    RedeemInput,
    RedeemResult,
    RevokeAccessTokenInput,
    RevokeTokensInput,
    SendRequestInput,
    SendRequestResult,
    TokenRequestInput,
    TokenRequestResult,
    ValidateTokensInput,
    ValidateTokensResult,
    VerifyNotificationInput,
)
from temporal_ciba.ciba import CibaClient, RequestDialect
from temporal_ciba.crypto import NotificationProofs, TokenSealer


class CibaActivities:
    """The activities of CibaApprovalWorkflow, sharing one CibaClient (one connection pool)."""

    def __init__(
        self,
        ciba: CibaClient,
        sealer: TokenSealer,
        *,
        notification_token: NotificationTokenFactory | None = None,
        login_hint_subjects: Mapping[str, str] | None = None,
        dialect: RequestDialect | None = None,
        clock: Callable[[], float] = time.time,
        notification_proofs: NotificationProofs | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        decision_on_record: DecisionOnRecord | None = None,
    ) -> None:
        # The OP's dialect (profile and settings): how requests are shaped before they are sent.
        dialect = dialect or RequestDialect()
        seals = ApprovalSeals(sealer, ciba)
        self._sender = Sender(
            ciba,
            ApproverSubjects(ciba, dialect, login_hint_subjects or {}),
            notification_token=notification_token,
            dialect=dialect,
            clock=clock,
        )
        self._revoker = Revoker(ciba, seals)
        # The callback's proofs on pings and pushes (CIBA_TOKEN_KEY); without them none is proven.
        # The decision records (DecisionRecorder.decision_on_record): a redeem whose decision is
        # on record already answers it, and asks the OP nothing.
        self._redeemer = Redeemer(ciba, seals, self._revoker, notification_proofs, decision_on_record)
        self._clock = clock
        # The poll loop's clock and sleep: the wall clock, or a test server's skipped time.
        self._sleep = sleep
        self._polls = PollRuns()

    @activity.defn(name="ciba.send_authentication_request")
    async def send_authentication_request(self, input: SendRequestInput) -> SendRequestResult:
        """CIBA §7.1: ask the OP to get the user's decision; a refusal is data, not an exception."""
        return (await self._sender.send(input)).model_copy(update={"records": True, "poll_activity": True})

    @activity.defn(name="ciba.request_token")
    async def request_token(self, input: TokenRequestInput) -> TokenRequestResult:
        """CIBA §10.1: one token request; the tokens leave this activity sealed."""
        return await self._redeemer.request_token(input)

    @activity.defn(name="ciba.validate_tokens")
    async def validate_tokens(self, input: ValidateTokensInput) -> ValidateTokensResult:
        """Validate the tokens against the original request (temporal_ciba.ciba._validation)."""
        return await self._redeemer.validate_tokens(input)

    @activity.defn(name="ciba.redeem")
    async def redeem(self, input: RedeemInput) -> RedeemResult:
        """CIBA §10.1 then §10.3.1 in one step, for the decision path (run as a local activity).

        Request the tokens and validate them against the original request. Rejected tokens are
        revoked here; a refresh token is revoked at once (one approval is one use); only the
        claims, the access token (sealed for the holder and the action) and the ID token (sealed,
        the decision record's evidence) leave."""
        return await self._redeemer.redeem(input)

    @activity.defn(name="ciba.verify_notification")
    async def verify_notification(self, input: VerifyNotificationInput) -> bool:
        """Whether the callback made this push (its proof, for this workflow's run chain); run as a local activity.

        The approval acts on a push, tokens or error, only when it is proven."""
        return self._redeemer.proven_push(input.delivery, input.first_run_id)

    @activity.defn(name="ciba.poll")
    async def poll(self, input: PollInput) -> RedeemResult:
        """Poll mode: redeem at the OP's interval until a final answer (polling.py), heartbeating.

        Returns what `redeem` returns for its final answer (approved, rejected, failed), or
        `pending` once the deadline passes; in between only the pacing leaves, in heartbeat
        details, never a token."""
        info = activity.info()

        def start(details: Sequence[Any], report: Callable[[PollProgress], None]) -> Awaitable[RedeemResult]:
            loop = PollLoop(self._redeemer.redeem_once, clock=self._clock, sleep=self._sleep, heartbeat=report)
            return loop.run(input, details=details, attempt=info.attempt)

        return await self._polls.attempt(
            (info.workflow_run_id or "", info.activity_id),
            start,
            attempt=info.attempt,
            details=info.heartbeat_details,
            heartbeat=_heartbeat,
        )

    @activity.defn(name="ciba.revoke_access_token")
    async def revoke_access_token(self, input: RevokeAccessTokenInput) -> bool:
        """RFC 7009: an approved access token that arrived after the approval was cancelled."""
        return await self._revoker.revoke_access_token(input)

    @activity.defn(name="ciba.revoke_tokens")
    async def revoke_tokens(self, input: RevokeTokensInput) -> bool:
        """RFC 7009: revoke tokens nobody will use (they arrived after cancellation or were rejected)."""
        return await self._revoker.revoke_tokens(input)

    @property
    def all(self) -> list[Callable[..., object]]:
        return [
            self.send_authentication_request,
            self.request_token,
            self.validate_tokens,
            self.revoke_tokens,
            self.redeem,
            self.revoke_access_token,
            self.verify_notification,
            self.poll,
        ]


def _heartbeat(progress: PollProgress) -> None:
    activity.heartbeat(progress.model_dump(mode="json"))

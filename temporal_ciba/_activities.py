"""The approval activities: thin wrappers that run `temporal_ciba.ciba` for the workflow.

Final answers of the OP (error codes, malformed responses, rejected tokens) are returned as
data so the workflow can end with the matching outcome; only failures worth retrying
(transport errors, 5xx) are raised, for Temporal's retry policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from temporalio import activity

from temporal_ciba._models import (
    ApprovalRequest,
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
)
from temporal_ciba.ciba import (
    AuthenticationRequest,
    BindingMessageUnfit,
    CibaClient,
    DiscoveryError,
    DPoPKey,
    Granted,
    InvalidAuthenticationRequest,
    OAuthError,
    Pending,
    ProtocolError,
    RequestBinding,
    RequestDialect,
    RetryLater,
    SlowDown,
    TokenRejected,
    TokenResponse,
    TransportError,
    shape_request,
)
from temporal_ciba.crypto import (
    SealError,
    TokenSealer,
    access_token_context,
    id_token_context,
    tokens_context,
)

# (workflow id, first run id) -> client_notification_token
NotificationTokenFactory = Callable[[str, str], str]
# Every attempt ends within this, below the workflow's 45 s start-to-close timeout: an attempt
# is over before Temporal retries it, so two token requests for one auth_req_id never overlap
# (CIBA §7.3), even when the retry lands on another worker.
ATTEMPT_SECONDS = 40.0
REQUEST_OUTCOME_UNKNOWN = "request_outcome_unknown"
# Refused before anything is sent: the id_token_hint is not an ID token the OP issued to us, or
# the request names two different approvers.
ID_TOKEN_HINT_INVALID = "id_token_hint_invalid"
SUBJECT_CONFLICT = "subject_conflict"
GRANT_LOST = "grant_lost"
GRANT_LOST_REASON = "tokens were issued but lost before they were recorded"
# A local activity repeated after a worker crash starts again at attempt 1, so for `redeem` an
# invalid_grant for our own recorded auth_req_id is read as a lost grant whatever the attempt.
REDEEM_GRANT_LOST_REASON = (
    "the OP no longer accepts this auth_req_id: its tokens were issued and lost (a worker stopped "
    "mid-request), or the OP dropped the request"
)


class SubjectConflict(ValueError):
    """Two sources name different approvers for one request."""


class Redemptions:
    """Each redeem once per worker. A local activity runs again when the workflow task that
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
    ) -> None:
        self._ciba = ciba
        self._sealer = sealer
        self._notification_token = notification_token
        self._login_hint_subjects = dict(login_hint_subjects or {})
        # The OP's dialect (profile and settings): how requests are shaped before they are sent.
        self._dialect = dialect or RequestDialect()
        self._clock = clock
        self._redemptions = Redemptions()

    @activity.defn(name="ciba.send_authentication_request")
    async def send_authentication_request(self, input: SendRequestInput) -> SendRequestResult:
        """CIBA §7.1: ask the OP to get the user's decision; a refusal is data, not an exception."""
        return (await self._send(input)).model_copy(update={"records": True})

    async def _send(self, input: SendRequestInput) -> SendRequestResult:
        mode = self._ciba.delivery_mode
        token = None
        if mode != "poll":
            if self._notification_token is None:
                raise RuntimeError(f"{mode} mode needs a notification token factory")
            token = self._notification_token(input.workflow_id, input.first_run_id)
        try:
            request = shape_request(
                input.request.authentication_request(token),
                self._dialect,
                issuer=self._ciba.issuer,
                code=input.request.code,
            )
            expected_subject = await self._expected_subject(input.request, request)
            requested_at = self._clock()
            async with asyncio.timeout(ATTEMPT_SECONDS):
                ack = await self._ciba.authenticate(request)
        except OAuthError as exc:
            activity.logger.info("backchannel request refused: %s", exc.error)
            return SendRequestResult(delivery_mode=mode, error=exc.error, reason=str(exc))
        except TransportError as exc:
            if not exc.request_sent:
                raise  # it never reached the OP: Temporal retries it
            # The OP may have prompted the user already; a retry would prompt again.
            activity.logger.warning("backchannel request outcome unknown: %s", exc)
            return SendRequestResult(delivery_mode=mode, error=REQUEST_OUTCOME_UNKNOWN, reason=f"{exc}; not sent again")
        except TokenRejected as exc:
            activity.logger.warning("id_token_hint refused, request not sent: %s", exc.code)
            return SendRequestResult(
                delivery_mode=mode, error=ID_TOKEN_HINT_INVALID, reason=f"the id_token_hint is refused: {exc}"
            )
        except BindingMessageUnfit as exc:
            activity.logger.warning("backchannel request not sent: %s", exc)
            return SendRequestResult(delivery_mode=mode, error=exc.error, reason=str(exc))
        except (ValueError, InvalidAuthenticationRequest, ProtocolError, DiscoveryError) as exc:
            activity.logger.warning("backchannel request not sent: %s", exc)
            error = SUBJECT_CONFLICT if isinstance(exc, SubjectConflict) else None
            return SendRequestResult(delivery_mode=mode, error=error, reason=str(exc).splitlines()[0])
        binding = RequestBinding.for_request(
            request,
            ack,
            issuer=self._ciba.issuer,
            client_id=self._ciba.client_id,
            requested_at=requested_at,
            delivery_mode=mode,
            expected_subject=expected_subject,
        )
        activity.logger.info("backchannel request acknowledged: auth_req_id=%s", ack.auth_req_id)
        return SendRequestResult(
            auth_req_id=ack.auth_req_id,
            expires_in=ack.expires_in,
            interval=ack.interval,
            binding=binding,
            delivery_mode=mode,
            binding_message_sent=request.binding_message,
        )

    def _dpop_key(self, auth_req_id: str) -> DPoPKey | None:
        """RFC 9449: the approval's DPoP key, the same on every worker (temporal_ciba.crypto._dpop_keys)."""
        return self._sealer.dpop_keys.for_approval(auth_req_id) if self._ciba.dpop else None

    async def _expected_subject(self, approval: ApprovalRequest, request: AuthenticationRequest) -> str | None:
        """Who may approve: the caller's expected_subject, an iss_sub login_hint (it is the
        `sub`) and a verified id_token_hint's `sub` must agree, or the request is refused before
        it is sent; without any of them, the configured subject of the login_hint."""
        sources = {
            "expected_subject": approval.expected_subject,
            "the iss_sub login_hint": approval.login_hint if self._dialect.login_hint_format == "iss_sub" else None,
            "the id_token_hint": (
                await self._ciba.id_token_hint_subject(request.id_token_hint.get_secret_value())
                if request.id_token_hint is not None
                else None
            ),
        }
        named = {source: subject for source, subject in sources.items() if subject is not None}
        if len(set(named.values())) > 1:
            raise SubjectConflict(f"the approver is named differently by {', '.join(named)}")
        if not named and approval.login_hint is not None:
            return self._login_hint_subjects.get(approval.login_hint)
        return next(iter(named.values()), None)

    @activity.defn(name="ciba.request_token")
    async def request_token(self, input: TokenRequestInput) -> TokenRequestResult:
        """CIBA §10.1: one token request; the tokens leave this activity sealed."""
        info = activity.info()
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                result = await self._ciba.request_token(input.auth_req_id, dpop_key=self._dpop_key(input.auth_req_id))
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
            context = tokens_context(input.auth_req_id, info.workflow_id or "")
            sealed = self._sealer.seal(result.tokens.model_dump_json(), context=context)
            return TokenRequestResult(kind="granted", sealed_tokens=sealed)
        if isinstance(result, RetryLater):
            return TokenRequestResult(kind="retry_later", retry_after_seconds=result.seconds)
        if isinstance(result, SlowDown):
            return TokenRequestResult(kind="slow_down")
        assert isinstance(result, Pending)
        return TokenRequestResult(kind="pending")

    def _unseal_tokens(self, sealed: str, auth_req_id: str) -> TokenResponse:
        """Sealed tokens open only in the approval workflow they were sealed for."""
        context = tokens_context(auth_req_id, activity.info().workflow_id or "")
        return TokenResponse.model_validate_json(self._sealer.unseal(sealed, context=context))

    @activity.defn(name="ciba.validate_tokens")
    async def validate_tokens(self, input: ValidateTokensInput) -> ValidateTokensResult:
        """Validate the tokens against the original request (temporal_ciba.ciba._validation)."""
        auth_req_id = input.binding.auth_req_id
        try:
            tokens = self._unseal_tokens(input.sealed_tokens, auth_req_id)
            approval = await self._ciba.validate(tokens, input.binding)
        except SealError as exc:
            return ValidateTokensResult(error="seal_invalid", reason=str(exc))
        except TokenRejected as exc:
            activity.logger.warning("tokens rejected for auth_req_id=%s: %s", auth_req_id, exc)
            return ValidateTokensResult(error=exc.code, reason=exc.reason)
        return ValidateTokensResult(
            approval=approval,
            sealed_access_token=self._seal_access_token(
                tokens, auth_req_id, input.action_digest, input.holder_workflow_id, input.holder_run_id
            ),
            sealed_id_token=self._seal_id_token(tokens, auth_req_id),
        )

    def _seal_access_token(
        self, tokens: TokenResponse, auth_req_id: str, action_digest: str | None, workflow_id: str, run_id: str
    ) -> str:
        """Bound to the action and to the workflow run that asked (temporal_ciba._grant)."""
        context = access_token_context(auth_req_id, action_digest=action_digest, workflow_id=workflow_id, run_id=run_id)
        return self._sealer.seal(tokens.access_token.get_secret_value(), context=context)

    def _seal_id_token(self, tokens: TokenResponse, auth_req_id: str) -> str:
        """The validated ID token, the OP-signed evidence of the decision (temporal_ciba.records),
        sealed for the approval workflow that validated it."""
        context = id_token_context(auth_req_id, activity.info().workflow_id or "")
        return self._sealer.seal(tokens.id_token.get_secret_value(), context=context)

    @activity.defn(name="ciba.redeem")
    async def redeem(self, input: RedeemInput) -> RedeemResult:
        """CIBA §10.1 then §10.3.1 in one step, for the decision path (run as a local activity):
        request the tokens and validate them against the original request. Rejected tokens are
        revoked here; a refresh token is revoked at once (one approval is one use); only the
        claims, the access token (sealed for the holder and the action) and the ID token (sealed,
        the decision record's evidence) leave."""
        return await self._redemptions.once(input, lambda: self._redeem(input))

    async def _redeem(self, input: RedeemInput) -> RedeemResult:
        auth_req_id = input.binding.auth_req_id
        started = time.monotonic()
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                result = await self._ciba.request_token(auth_req_id, dpop_key=self._dpop_key(auth_req_id))
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
            await self._revoke(tokens, auth_req_id, refresh_only=False)
            return RedeemResult(kind="rejected", error=exc.code, reason=exc.reason)
        if tokens.refresh_token is not None:
            await self._revoke(tokens, auth_req_id, refresh_only=True)
        return RedeemResult(
            kind="approved",
            approval=approval,
            sealed_access_token=self._seal_access_token(
                tokens, auth_req_id, input.action_digest, input.holder_workflow_id, input.holder_run_id
            ),
            sealed_id_token=self._seal_id_token(tokens, auth_req_id),
        )

    async def _revoke(self, tokens: TokenResponse, auth_req_id: str, *, refresh_only: bool) -> None:
        """RFC 7009, best effort: a failure is logged, the outcome stands (the tokens never leave)."""
        try:
            if not refresh_only:
                await self._ciba.revoke(tokens.access_token.get_secret_value(), dpop_key=self._dpop_key(auth_req_id))
            if tokens.refresh_token is not None:
                await self._ciba.revoke(
                    tokens.refresh_token.get_secret_value(),
                    token_type_hint="refresh_token",
                    dpop_key=self._dpop_key(auth_req_id),
                )
        except (OAuthError, TransportError, ProtocolError) as exc:
            activity.logger.warning("revocation failed for auth_req_id=%s: %s", auth_req_id, type(exc).__name__)

    @activity.defn(name="ciba.revoke_access_token")
    async def revoke_access_token(self, input: RevokeAccessTokenInput) -> bool:
        """RFC 7009: an approved access token that arrived after the approval was cancelled."""
        context = access_token_context(
            input.auth_req_id,
            action_digest=input.action_digest,
            workflow_id=input.holder_workflow_id,
            run_id=input.holder_run_id,
        )
        try:
            token = self._sealer.unseal(input.sealed_access_token, context=context)
            return await self._ciba.revoke(token, dpop_key=self._dpop_key(input.auth_req_id))
        except SealError:
            return False
        except OAuthError as exc:
            activity.logger.warning("revocation refused for auth_req_id=%s: %s", input.auth_req_id, exc.error)
            return False

    @activity.defn(name="ciba.revoke_tokens")
    async def revoke_tokens(self, input: RevokeTokensInput) -> bool:
        """RFC 7009: revoke tokens nobody will use (they arrived after cancellation or were rejected)."""
        try:
            tokens = self._unseal_tokens(input.sealed_tokens, input.auth_req_id)
        except SealError:
            return False
        try:
            dpop_key = self._dpop_key(input.auth_req_id)
            revoked = await self._ciba.revoke(tokens.access_token.get_secret_value(), dpop_key=dpop_key)
            if revoked and tokens.refresh_token is not None:
                await self._ciba.revoke(
                    tokens.refresh_token.get_secret_value(), token_type_hint="refresh_token", dpop_key=dpop_key
                )
        except OAuthError as exc:
            activity.logger.warning("revocation refused for auth_req_id=%s: %s", input.auth_req_id, exc.error)
            return False
        return revoked

    @property
    def all(self) -> list[Callable[..., object]]:
        return [
            self.send_authentication_request,
            self.request_token,
            self.validate_tokens,
            self.revoke_tokens,
            self.redeem,
            self.revoke_access_token,
        ]

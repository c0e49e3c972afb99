"""The backchannel authentication request (CIBA §7.1), shaped for the OP and sent once.

A refusal is data (SendRequestResult with its error), not an exception; only a request that never
reached the OP is raised, for Temporal to retry. One that may have reached it is not sent again:
the OP may have prompted the user already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from temporal_ciba._activities.redeem import ATTEMPT_SECONDS
from temporal_ciba._activities.subjects import SUBJECT_CONFLICT, ApproverSubjects, SubjectConflict
from temporal_ciba._models import SendRequestInput, SendRequestResult
from temporal_ciba.ciba import (
    BindingMessageUnfit,
    CibaClient,
    DiscoveryError,
    InvalidAuthenticationRequest,
    OAuthError,
    ProtocolError,
    RequestBinding,
    RequestDialect,
    TokenRejected,
    TransportError,
    shape_request,
)

# (workflow id, first run id) -> client_notification_token
NotificationTokenFactory = Callable[[str, str], str]
REQUEST_OUTCOME_UNKNOWN = "request_outcome_unknown"
# Refused before anything is sent: the id_token_hint is not an ID token the OP issued to us.
ID_TOKEN_HINT_INVALID = "id_token_hint_invalid"


class Sender:
    """Sends an approval's request and binds the OP's acknowledgement to it (RequestBinding)."""

    def __init__(
        self,
        ciba: CibaClient,
        subjects: ApproverSubjects,
        *,
        notification_token: NotificationTokenFactory | None,
        dialect: RequestDialect,
        clock: Callable[[], float],
    ) -> None:
        self._ciba = ciba
        self._subjects = subjects
        self._notification_token = notification_token
        # The OP's dialect (profile and settings): how requests are shaped before they are sent.
        self._dialect = dialect
        self._clock = clock

    async def send(self, input: SendRequestInput) -> SendRequestResult:
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
            expected_subject = await self._subjects.expected(input.request, request)
            requested_at = self._clock()
            async with asyncio.timeout(ATTEMPT_SECONDS):
                ack = await self._ciba.authenticate(request)
        except OAuthError as exc:
            activity.logger.info("backchannel request refused: %s", exc.error)
            return SendRequestResult(delivery_mode=mode, error=exc.error, reason=str(exc))
        except TransportError as exc:
            if not exc.request_sent:
                # It never reached the OP: Temporal retries it. One line per attempt, no traceback
                # (BENIGN): an OP that is down is a state to report, not a bug. The failure keeps
                # the type name TransportError.
                activity.logger.warning(
                    "the OP at %s is unreachable (%s): attempt %d, retrying",
                    self._ciba.issuer,
                    exc,
                    activity.info().attempt,
                )
                raise ApplicationError(
                    str(exc), type="TransportError", category=ApplicationErrorCategory.BENIGN
                ) from None
            # The OP may have prompted the user already; a retry would prompt again.
            activity.logger.warning("backchannel request outcome unknown: %s", exc)
            return SendRequestResult(delivery_mode=mode, error=REQUEST_OUTCOME_UNKNOWN, reason=f"{exc}; not sent again")
        except TimeoutError:
            # The attempt's limit passed with the request maybe sent (an answer trickling in under
            # httpx's per-read timeout): as above, the user may have been prompted already.
            activity.logger.warning("backchannel request outcome unknown: no answer within %.0f s", ATTEMPT_SECONDS)
            return SendRequestResult(
                delivery_mode=mode,
                error=REQUEST_OUTCOME_UNKNOWN,
                reason=f"the OP did not answer within {ATTEMPT_SECONDS:g} s; not sent again",
            )
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
            return SendRequestResult(delivery_mode=mode, error=error, reason=_one_line(exc))
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


def _one_line(exc: Exception) -> str:
    """Why a request was not sent, in one line: a request that breaks CIBA §7.1 names the
    parameter and the rule (pydantic's first line only says how many errors it found)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        rule = first["msg"].removeprefix("Value error, ")
        return f"{where}: {rule}" if where else rule
    return str(exc).splitlines()[0]

"""What the approval's activities (temporal_ciba._activities) take and return.

One input and one result per activity. Recorded in history: extend, never rename. Tokens travel
sealed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from temporal_ciba._models.contracts import ApprovalOutcome, ApprovalRequest, PollingPolicy
from temporal_ciba._models.signals import PingNotice, PushDelivery
from temporal_ciba.ciba import DeliveryMode, RequestBinding, ValidatedApproval


class SendRequestInput(BaseModel):
    request: ApprovalRequest
    workflow_id: str
    # The first run of the approval's run chain: the notification token names it.
    first_run_id: str


class SendRequestResult(BaseModel):
    """The acknowledgement and the request binding, or why the OP refused the request."""

    auth_req_id: str | None = None
    expires_in: int | None = None
    interval: int | None = None
    binding: RequestBinding | None = None
    delivery_mode: DeliveryMode = "poll"
    error: str | None = None
    reason: str | None = None
    # The binding message as sent, fitted to the OP's rule (it may be shorter than the one asked).
    binding_message_sent: str | None = None
    # Whether the approval writes a decision record of its outcome (temporal_ciba.records): the
    # send activity always says True; a history without records has False (the default) and
    # replays without the record's step. A result in history, not a patch: no marker.
    records: bool = False
    # Whether poll mode's token requests run in one activity (ciba.poll) rather than a timer and
    # a redeem per poll: the send activity always says True; a history recorded before the poll
    # activity has False (the default) and replays polling from workflow code. No marker: a
    # patch marker just after this local activity does not replay when the activity's result
    # arrived in a later workflow task than it started in.
    poll_activity: bool = False


class TokenRequestInput(BaseModel):
    auth_req_id: str


class TokenRequestResult(BaseModel):
    """One answer of the token endpoint (CIBA §10.1, §11), tokens sealed."""

    kind: Literal["granted", "pending", "slow_down", "retry_later", "failed"]
    sealed_tokens: str | None = Field(default=None, repr=False)
    retry_after_seconds: float | None = None
    error: str | None = None
    reason: str | None = None


class RedeemInput(BaseModel):
    """One token request and, when the tokens come, their validation (CIBA §10.1, §10.3.1)."""

    binding: RequestBinding
    # Who may use the approved access token (see ValidateTokensInput).
    holder_workflow_id: str
    holder_run_id: str
    action_digest: str | None = None
    # The pings that asked for this request (a few distinct ones): the activity checks their
    # proofs first, and answers "unproven" (no token request) when none holds. Empty for a poll.
    notices: list[PingNotice] = Field(default_factory=list)
    # The approval's run chain: what the pings' proofs name, and where its decision is recorded
    # (the activity answers "recorded", with no token request, when it already is).
    first_run_id: str | None = None


class VerifyNotificationInput(BaseModel):
    """A push to check before the approval acts on it: its proof for this approval's run chain."""

    delivery: PushDelivery
    first_run_id: str


class RedeemResult(BaseModel):
    """The token endpoint's answer, validated; no token leaves the activity in clear.

    Only the claims, the access token (sealed for the holder and the action) and the ID token
    (sealed, the evidence for the decision record) leave the activity; a refresh token never does."""

    # "unproven": the ping's proof failed; no token request was made. "recorded": the decision on
    # auth_req_id is on record already (`recorded`); no token request was made.
    kind: Literal["approved", "rejected", "pending", "slow_down", "retry_later", "failed", "unproven", "recorded"]
    approval: ValidatedApproval | None = None
    sealed_access_token: str | None = Field(default=None, repr=False)
    # crypto.sealing.id_token_context: opens only in the approval workflow, to be recorded.
    sealed_id_token: str | None = Field(default=None, repr=False)
    retry_after_seconds: float | None = None
    # How long a pending answer took (the worker's clock): the next poll's timer is shorter by
    # as much, so requests start an interval apart rather than an interval plus a round trip.
    request_seconds: float | None = None
    error: str | None = None
    reason: str | None = None
    # How many of the input's pings had no valid proof (dropped, whatever the answer).
    unproven_notices: int = 0
    # The poll activity's (ciba.poll): how many token requests it made, and the interval it
    # ended with (grown by the slow_down that ended it).
    polls: int | None = None
    interval_seconds: float | None = None
    # The outcome on record, taken by an earlier workflow task of this approval that never
    # completed (temporal_ciba.records): the approval's outcome.
    recorded: ApprovalOutcome | None = None


class PollInput(BaseModel):
    """Poll mode's token-request loop (ciba.poll): redeem every interval until a final answer.

    Times are the worker's wall clock and the workflow's, both UTC."""

    redemption: RedeemInput
    # The OP's interval (CIBA §7.3), grown by every slow_down so far.
    interval_seconds: float
    # When the backchannel request was acknowledged: the first token request waits an interval
    # after it, and the polling policy's long wait counts from it.
    requested_at: datetime
    # When the last token request before this activity was made, if any.
    last_request_at: datetime | None = None
    # An OP's Retry-After (RFC 9110 §10.2.3) that ended the last activity: no request before it.
    not_before: datetime | None = None
    # No token request after this: the activity answers `pending` and the approval expires.
    deadline: datetime
    polling: PollingPolicy = PollingPolicy()


class PollProgress(BaseModel):
    """The poll loop's pacing, in its heartbeat details: a retried attempt resumes from it.

    Epoch seconds of the worker's wall clock."""

    interval_seconds: float
    last_request_started: float | None = None
    # An OP's Retry-After (RFC 9110 §10.2.3): no request before this.
    not_before: float | None = None
    polls: int = 0


class RevokeAccessTokenInput(BaseModel):
    """An approved access token nobody will use (the approval was cancelled while it came)."""

    sealed_access_token: str = Field(repr=False)
    auth_req_id: str
    action_digest: str | None = None
    holder_workflow_id: str
    holder_run_id: str


class ValidateTokensInput(BaseModel):
    sealed_tokens: str = Field(repr=False)
    binding: RequestBinding
    # Who may use the approved access token: the workflow run that asked for the approval (the
    # approval workflow's parent, as the server reports it), for this action only.
    holder_workflow_id: str
    holder_run_id: str
    action_digest: str | None = None


class ValidateTokensResult(BaseModel):
    approval: ValidatedApproval | None = None
    sealed_access_token: str | None = Field(default=None, repr=False)
    sealed_id_token: str | None = Field(default=None, repr=False)
    error: str | None = None
    reason: str | None = None


class RevokeTokensInput(BaseModel):
    sealed_tokens: str = Field(repr=False)
    auth_req_id: str

"""The public contracts of an approval: what to ask, how it waits, how it ended, where it stands.

ApprovalRequest, PollingPolicy, ApprovalOutcome (with PolicyDecision and ApproverClaims) and
ApprovalState.

They are in every approval's history and in the docs: extend them with optional fields,
never rename a class or a field. No model here carries a token in clear: tokens travel sealed
(temporal_ciba.crypto).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from temporal_ciba.ciba import AuthenticationRequest, AuthorizationDetails, Secret

OutcomeStatus = Literal["approved", "denied", "expired", "cancelled", "rejected", "error"]
ApprovalPhase = Literal["requesting", "pending", "validating"] | OutcomeStatus
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = ("approved", "denied", "expired", "cancelled", "rejected", "error")


def short_code(digest: str) -> str:
    """Four characters the approver can compare between the agent's screen and the phone: the
    first 20 bits of the action digest, in base32."""
    return base64.b32encode(bytes.fromhex(digest)[:3]).decode()[:4]


class PollingPolicy(BaseModel):
    """How the approval waits for its decision; chosen so a long wait keeps history small.

    In poll mode one heartbeating activity (`ciba.poll`) makes every token request, an interval
    apart: the wait costs the history a handful of events however long it lasts, and the OP sees
    its requests on time. With `poll_in="workflow"`, and for the fallback poll of ping and push
    mode, each poll is a timer and a workflow task instead (about 11 history events), and the
    run continues as new every `polls_per_run` polls.

    Either way the approval polls at the OP's interval (grown by slow_down) for
    `long_wait_after_seconds`, then no faster than `long_wait_interval_seconds` (CIBA §7.3 sets
    a minimum interval, not a maximum).
    """

    model_config = ConfigDict(frozen=True)

    long_wait_after_seconds: float = Field(default=600.0, ge=0)
    long_wait_interval_seconds: float = Field(default=30.0, gt=0)
    polls_per_run: int = Field(default=200, ge=10, le=2000)
    # Ping and push mode: the notification is the normal path; this slow poll catches a lost one.
    notification_fallback_interval_seconds: float = Field(default=600.0, gt=0)
    # Poll mode: where the token-request loop runs. "activity": one heartbeating activity per
    # approval (a worker runs as many at once as its max_concurrent_activities allows);
    # "workflow": a timer and a workflow task per poll.
    poll_in: Literal["activity", "workflow"] = "activity"


class ApprovalRequest(BaseModel):
    """What to ask the human, and how (CIBA §7.1 parameters plus our own binding and policy)."""

    model_config = ConfigDict(frozen=True)

    # Who must approve (CIBA §7.1): exactly one of login_hint, login_hint_token, id_token_hint.
    login_hint: str | None = Field(default=None, min_length=1)
    login_hint_token: Secret | None = None
    # An ID token this OP issued to this client; its `sub` is then the only approver accepted.
    id_token_hint: Secret | None = None
    binding_message: str
    # What the approver compares between the agent's screen and the phone; kept when the OP's
    # binding-message rule makes the message shorter. Default: 4 characters of action_digest.
    binding_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,16}$")
    scope: str = "openid"
    acr_values: str | None = None
    authorization_details: AuthorizationDetails | None = None
    # RFC 8707 resource indicators, Auth0's audience, OIDC Core §5.5 claims (a JSON object).
    resource: list[str] | None = None
    audience: str | None = None
    claims: dict[str, Any] | None = None
    # How the application describes the action to operators (the Temporal UI's current
    # details), one plain-text line each; without it the authorization_details are listed.
    summary: list[Annotated[str, Field(max_length=200)]] | None = Field(default=None, max_length=20)
    requested_expiry: int | None = Field(default=None, gt=0)
    # Set by require_approval under a policy: what it decided, carried into the outcome and its record.
    policy: PolicyDecision | None = None
    user_code: Secret | None = None
    # SHA-256 (hex) of the canonical JSON of the action being approved; the approval is bound to it.
    action_digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # Our own limit: the approval expires at the OP's expires_in or at this time, whichever is first.
    policy_deadline: datetime | None = None
    # The OP's `sub` for the person asked, where known; any other approver is rejected.
    expected_subject: str | None = None
    polling: PollingPolicy = PollingPolicy()
    # Tokens issued but lost before they were recorded (a worker died mid-request; the OP then
    # answers invalid_grant): stop with error "grant_lost", or send one new request.
    on_lost_grant: Literal["stop", "ask_again"] = "stop"

    @model_validator(mode="after")
    def _valid_ciba_request(self) -> ApprovalRequest:
        self.authentication_request(None)
        if self.policy_deadline is not None and self.policy_deadline.tzinfo is None:
            raise ValueError("policy_deadline must carry a time zone")
        return self

    @property
    def approver(self) -> str:
        """Who was asked, for people (the Temporal UI, a denial's reason): never a token."""
        if self.login_hint is not None:
            return self.login_hint
        return (
            "the user of the login_hint_token" if self.login_hint_token is not None else "the user of the id_token_hint"
        )

    @property
    def code(self) -> str | None:
        """The binding code: binding_code, else the first 4 base32 characters of action_digest.

        What the example agents and temporal_ciba.agents print beside the message."""
        if self.binding_code is not None or self.action_digest is None:
            return self.binding_code
        return short_code(self.action_digest)

    def authentication_request(self, client_notification_token: str | None) -> AuthenticationRequest:
        """The CIBA request to send (raises ValueError when a parameter breaks CIBA §7.1)."""
        fields: dict[str, Any] = {
            "scope": self.scope,
            "login_hint": self.login_hint,
            "login_hint_token": self.login_hint_token,
            "id_token_hint": self.id_token_hint,
            "resource": tuple(self.resource or ()),
            "audience": self.audience,
            "claims": self.claims,
            "binding_message": self.binding_message,
            "acr_values": self.acr_values,
            "authorization_details": self.authorization_details,
            "requested_expiry": self.requested_expiry,
            "user_code": self.user_code,
            "client_notification_token": client_notification_token,
        }
        return AuthenticationRequest(**fields)


class PolicyDecision(BaseModel):
    """What the approval policy decided for an action, and why."""

    model_config = ConfigDict(frozen=True)
    rule: str  # the name of the policy rule that matched
    reason: str  # one line: why it applied
    approval: Literal["none", "one", "quorum"]
    approvers: list[str] = []  # the login hints asked
    quorum: int | None = None  # n, for n of m
    acr_values: str | None = None


class ApproverClaims(BaseModel):
    """One approver of a quorum: how their own approval ended, and their validated claims."""

    model_config = ConfigDict(frozen=True)
    login_hint: str
    status: OutcomeStatus
    workflow_id: str
    auth_req_id: str | None = None
    error: str | None = None
    sub: str | None = None
    acr: str | None = None
    amr: list[str] | None = None
    auth_time: int | None = None
    # Whether this approval counted towards the quorum (False: another approval by the same sub).
    counted: bool = False
    decided_at: datetime


class ApprovalOutcome(BaseModel):
    """How an approval ended; also the CLI's `--json` output."""

    status: OutcomeStatus
    workflow_id: str
    auth_req_id: str | None = None
    # The OAuth error code (unknown_user_id, access_denied, ...), or the validation rule that
    # rejected the tokens (iss_mismatch, sub_mismatch, ...).
    error: str | None = None
    reason: str
    sub: str | None = None
    acr: str | None = None
    amr: list[str] | None = None
    auth_time: int | None = None
    scope: str | None = None
    authorization_details: AuthorizationDetails | None = None
    action_digest: str | None = None
    # Whether the approver had to be a given person (expected_subject, or the worker's
    # login_hint mapping); False: anyone the OP authenticated for the login_hint could approve.
    subject_pinned: bool | None = None
    requested_at: datetime | None = None
    deadline: datetime | None = None
    decided_at: datetime
    # The access token, sealed for the approved action's activity; never shown by the CLI.
    sealed_access_token: str | None = Field(default=None, repr=False)
    # What the approval policy decided, where one was used.
    policy: PolicyDecision | None = None
    # A quorum: every approver's own outcome and claims; the fields above are those of the
    # approval whose access token this outcome carries.
    approvers: list[ApproverClaims] | None = None

    @model_validator(mode="after")
    def _unasked_carries_nothing(self) -> ApprovalOutcome:
        # An action the policy let through unasked: nothing may pass for a person's approval.
        if self.policy is not None and self.policy.approval == "none":
            asked = (self.auth_req_id, self.sub, self.sealed_access_token, self.approvers)
            if any(value is not None for value in asked):
                raise ValueError("an outcome the policy let through unasked carries no approval")
        return self

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def public_json(self) -> dict[str, Any]:
        """The outcome as printed and logged: everything but the sealed token."""
        return self.model_dump(mode="json", exclude={"sealed_access_token"})


class ApprovalState(BaseModel):
    """The `status` query: the same state the search attributes and current details show."""

    status: ApprovalPhase
    workflow_id: str
    # Who was asked: the login_hint, or which token names them (ApprovalRequest.approver).
    login_hint: str
    binding_message: str
    # What the approver's device shows, once sent (the OP's rule may shorten the message).
    binding_message_sent: str | None = None
    authorization_details: AuthorizationDetails | None = None
    summary: list[str] | None = None
    action_digest: str | None = None
    auth_req_id: str | None = None
    requested_at: datetime | None = None
    deadline: datetime | None = None
    polls: int = 0
    interval_seconds: float | None = None
    runs: int = 1
    outcome: ApprovalOutcome | None = None
    # Notifications dropped unread: a signal the codec refused (plaintext, another key, altered)
    # or one without the callback's proof; each is also logged with its signal name.
    dropped_notifications: int = 0

"""The typed inputs and outputs of the approval workflow and its activities (pydantic), by use.

    contracts.py       the public contracts: ApprovalRequest, ApprovalOutcome, ApprovalState, ...
    workflow_input.py  CibaApprovalWorkflow's input, and what a run hands the next (PendingState)
    activity_io.py     each activity's input and result
    signals.py         what the callback service signals: PingNotice, PushDelivery

Every one of them is in recorded histories: extend with optional fields, never rename.
"""

from temporal_ciba._models.activity_io import (
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
from temporal_ciba._models.contracts import (
    OUTCOME_STATUSES,
    ApprovalOutcome,
    ApprovalPhase,
    ApprovalRequest,
    ApprovalState,
    ApproverClaims,
    OutcomeStatus,
    PolicyDecision,
    PollingPolicy,
    short_code,
)
from temporal_ciba._models.signals import PingNotice, PushDelivery
from temporal_ciba._models.workflow_input import ApprovalWorkflowInput, PendingState

__all__ = [
    "OUTCOME_STATUSES",
    "ApprovalOutcome",
    "ApprovalPhase",
    "ApprovalRequest",
    "ApprovalState",
    "ApprovalWorkflowInput",
    "ApproverClaims",
    "OutcomeStatus",
    "PendingState",
    "PingNotice",
    "PolicyDecision",
    "PollInput",
    "PollProgress",
    "PollingPolicy",
    "PushDelivery",
    "RedeemInput",
    "RedeemResult",
    "RevokeAccessTokenInput",
    "RevokeTokensInput",
    "SendRequestInput",
    "SendRequestResult",
    "TokenRequestInput",
    "TokenRequestResult",
    "ValidateTokensInput",
    "ValidateTokensResult",
    "VerifyNotificationInput",
    "short_code",
]

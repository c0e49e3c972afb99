"""The input of CibaApprovalWorkflow: the request, and what a run hands the next.

A run that continues as new hands on its PendingState. Recorded in history: extend, never rename.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from temporal_ciba._models.contracts import ApprovalRequest
from temporal_ciba.ciba import RequestBinding


class PendingState(BaseModel):
    """What a run hands to the next when it continues as new."""

    auth_req_id: str
    binding: RequestBinding
    requested_at: datetime
    deadline: datetime
    interval_seconds: float
    polls: int = 0
    runs: int = 1
    notified: bool = False
    # When the last token request ended: the next one waits the interval, ping or no ping.
    last_token_request_at: datetime | None = None
    # A lost grant was already answered by asking again (ApprovalRequest.on_lost_grant).
    asked_again: bool = False
    # SendRequestResult.records, carried into the next run.
    records: bool = False
    # SendRequestResult.poll_activity, carried into the next run.
    poll_activity: bool = False


class ApprovalWorkflowInput(BaseModel):
    request: ApprovalRequest
    resume: PendingState | None = None

"""What the callback service signals: a verified ping (CIBA §10.2) or push (CIBA §10.3).

Recorded in history: extend, never rename. Pushed tokens travel sealed.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PingNotice(BaseModel):
    """A ping whose bearer the callback verified: the OP has a decision for this auth_req_id."""

    auth_req_id: str
    # The run chain the bearer names; the workflow checks it is its own (None: a callback that
    # checked it itself before signalling, in a recorded history).
    first_run_id: str | None = None


class PushDelivery(BaseModel):
    """A verified push: the sealed token response, or the error the OP pushed (CIBA §12)."""

    auth_req_id: str
    sealed_tokens: str | None = Field(default=None, repr=False)
    error: str | None = None
    error_description: str | None = None
    first_run_id: str | None = None

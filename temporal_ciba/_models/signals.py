"""What the callback service signals: a verified ping (CIBA §10.2) or push (CIBA §10.3).

Recorded in history: extend, never rename. Pushed tokens travel sealed. Each carries the
callback's proof (crypto.NotificationProofs), which only a holder of CIBA_TOKEN_KEY makes; the
approval acts on a notification only once an activity has checked it.

A signal whose payload the worker's codec refused (plaintext, another key, altered) reaches the
handler as `Notification.undecodable(reason)`: a notice that names no request, whose
`undecodable_reason` says why, so the approval drops it and counts it (temporal_ciba._plugin's
payload converter makes it; nothing in a payload can set it).
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, PrivateAttr


class Notification(BaseModel):
    """What the ping and push signals share: the auth_req_id, and a refusal by the codec."""

    auth_req_id: str
    _undecodable: str | None = PrivateAttr(default=None)

    @classmethod
    def undecodable(cls, reason: str) -> Self:
        """The stand-in for a signal whose payload the codec refused."""
        notice = cls.model_construct(auth_req_id="")
        notice._undecodable = reason
        return notice

    @property
    def undecodable_reason(self) -> str | None:
        """Why the codec refused this signal's payload; None for a decoded one."""
        return self._undecodable


class PingNotice(Notification):
    """A ping whose bearer the callback verified: the OP has a decision for this auth_req_id."""

    # The run chain the bearer names; the workflow checks it is its own (None: a callback that
    # checked it itself before signalling, in a recorded history).
    first_run_id: str | None = None
    # The callback's proof (crypto.NotificationProofs), checked by the redeem activity before
    # the token request; None in a recorded history from a callback that made none.
    proof: str | None = Field(default=None, repr=False)


class PushDelivery(Notification):
    """A verified push: the sealed token response, or the error the OP pushed (CIBA §12)."""

    sealed_tokens: str | None = Field(default=None, repr=False)
    error: str | None = None
    error_description: str | None = None
    first_run_id: str | None = None
    # The callback's proof (crypto.NotificationProofs) over the auth_req_id and this content,
    # checked by an activity before the approval acts on it.
    proof: str | None = Field(default=None, repr=False)

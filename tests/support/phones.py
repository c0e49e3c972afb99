"""The approval activities under their real names with one script per approver."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from temporalio import activity

from temporal_ciba._activities import Redemptions
from temporal_ciba._models import (
    ApprovalRequest,
    RedeemInput,
    RedeemResult,
    RevokeAccessTokenInput,
    SendRequestInput,
    SendRequestResult,
)
from temporal_ciba.ciba import RequestBinding
from temporal_ciba.records import RecordDecisionInput

KEY = os.urandom(32)


PENDING = RedeemResult(kind="pending")


def approved(sub: str, hint: str | None = None) -> RedeemResult:
    """An approval by `sub`, asked of `hint` (default: the same name); its token names the hint."""
    return RedeemResult(
        kind="approved",
        approval={"sub": sub, "scope": "openid", "issued_at": 1, "expires_at": 2},  # type: ignore[arg-type]
        sealed_access_token=f"sealed-{hint or sub}",
    )


class Phones:
    """The approval activities under their real names; each approver's answers in turn, then
    pending for ever."""

    def __init__(self, answers: dict[str, list[RedeemResult]]) -> None:
        self.answers = answers
        self.asked: list[ApprovalRequest] = []  # every backchannel request, as the workflow sent it
        self.revoked: list[str] = []
        self.recorded: list[RecordDecisionInput] = []  # every approver's own decision record
        self.redemptions = Redemptions()

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return [self.send, self.redeem, self.revoke_access_token, self.record]

    @activity.defn(name="ciba.send_authentication_request")
    async def send(self, input: SendRequestInput) -> SendRequestResult:
        self.asked.append(input.request)
        hint = input.request.login_hint
        binding = RequestBinding(
            issuer="https://op", client_id="c", auth_req_id=f"req-{hint}", requested_at=1, scope="openid"
        )
        return SendRequestResult(auth_req_id=f"req-{hint}", expires_in=3600, interval=5, binding=binding, records=True)

    @activity.defn(name="ciba.redeem")
    async def redeem(self, input: RedeemInput) -> RedeemResult:
        async def answer() -> RedeemResult:
            script = self.answers.get(input.binding.auth_req_id.removeprefix("req-"), [])
            return script.pop(0) if script else PENDING

        return await self.redemptions.once(input, answer)

    @activity.defn(name="ciba.revoke_access_token")
    async def revoke_access_token(self, input: RevokeAccessTokenInput) -> bool:
        self.revoked.append(input.sealed_access_token)
        return True

    @activity.defn(name="ciba.record_decision")
    async def record(self, input: RecordDecisionInput) -> str:
        self.recorded.append(input)
        return "record-id"

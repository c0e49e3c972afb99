"""An agent step that must not run on its own say-so: resetting a customer's account."""

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

from activities.accounts import ResetAccountInput, reset_account
from temporal_ciba import ApprovalRequest, require_approval


class ResetAccountRequest(BaseModel):
    account_id: str
    approver: str  # the login_hint of the person who must approve, at the OP


@workflow.defn
class ResetAccountWorkflow:
    @workflow.run
    async def run(self, request: ResetAccountRequest) -> str:
        outcome = await require_approval(
            ApprovalRequest(
                login_hint=request.approver,
                binding_message=f"Reset account {request.account_id}",
                authorization_details=[{"type": "account_reset", "account_id": request.account_id}],
            )
        )
        if not outcome.approved:
            return f"not reset: {outcome.status} ({outcome.reason})"
        return await workflow.execute_activity(
            reset_account,
            ResetAccountInput(account_id=request.account_id, approved_by=outcome.sub or "?"),
            start_to_close_timeout=timedelta(seconds=30),
        )

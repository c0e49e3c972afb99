"""This project's side effect: the account reset itself, run only after an approval."""

from pydantic import BaseModel
from temporalio import activity


class ResetAccountInput(BaseModel):
    account_id: str
    approved_by: str


@activity.defn
async def reset_account(input: ResetAccountInput) -> str:
    activity.logger.info("resetting account %s, approved by %s", input.account_id, input.approved_by)
    return f"account {input.account_id} reset, approved by {input.approved_by}"

"""Using an approval, once, from the activity that performs the approved action.

A validated approval's access token is sealed to one action (its digest) in one workflow run
(the run that called `require_approval`). The activity that acts opens it with
`open_access_token`, which takes the workflow id and run id from the activity's own
`activity.info()`, never from its input: an activity scheduled by any other workflow, or
for any other action, cannot open it, whatever its input says. `idempotency_key` derives the
key for the resource server from the same context, so a caller cannot choose it.

    @activity.defn
    async def pay(input: PayInput) -> Receipt:
        token = open_access_token(sealer, input.outcome, action_digest=digest_of(input.action))
        key = idempotency_key(input.outcome)
        ...  # call the resource server with the token and the key
"""

from __future__ import annotations

import hashlib

from temporalio import activity

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.crypto import SealError, TokenSealer, access_token_context


class GrantRefused(Exception):
    """The approval does not open the action here: not approved, another action, or another workflow run."""


def _caller() -> tuple[str, str]:
    info = activity.info()
    if info.workflow_id is None or info.workflow_run_id is None:
        raise GrantRefused("an approval is used only by an activity that a workflow scheduled")
    return info.workflow_id, info.workflow_run_id


def open_access_token(sealer: TokenSealer, outcome: ApprovalOutcome, *, action_digest: str | None) -> str:
    """The access token of `outcome`, opened for the action it was approved for.

    It opens if it was approved for `action_digest` in the calling workflow run; GrantRefused
    otherwise. Call it from inside the activity that acts."""
    if not outcome.approved or outcome.auth_req_id is None or outcome.sealed_access_token is None:
        raise GrantRefused(f"no approval to use: the outcome is {outcome.status}")
    if action_digest != outcome.action_digest:
        raise GrantRefused("the action differs from the one approved")
    workflow_id, run_id = _caller()
    context = access_token_context(
        outcome.auth_req_id, action_digest=action_digest, workflow_id=workflow_id, run_id=run_id
    )
    try:
        return sealer.unseal(outcome.sealed_access_token, context=context)
    except SealError:
        raise GrantRefused(
            "this approval was granted to another workflow run or action; ask for a new approval"
        ) from None


def idempotency_key(outcome: ApprovalOutcome) -> str:
    """A key for the resource server: the same for every retry of the action.

    Derived from the calling workflow run and the approval: the same for every retry of the
    action, different for anything else. It starts with the workflow id, so a resource server's
    records can be traced to the workflow."""
    workflow_id, run_id = _caller()
    material = "\n".join([workflow_id, run_id, outcome.auth_req_id or "", outcome.action_digest or ""])
    return f"{workflow_id}:{hashlib.sha256(material.encode()).hexdigest()[:32]}"

"""The two-person rule: n of m approvers, each asked through a CIBA approval of their own.

    require_approval(request, policy=...)  ── quorum rule ──▶  one child CibaApprovalWorkflow
                                                               per approver, all at once, one
                                                               deadline for all
        n distinct validated subs approved         ──▶ approved (the rest cancelled)
        a denial (on_denial "end")                 ──▶ denied   (the rest cancelled), whatever
                                                        came before it or with it, and also
                                                        while the rest are being cancelled
        no longer reachable (expiry, error, the same person twice)  ──▶ that status

The tally counts validated `sub`s, not login hints or children: two login hints that reach the
same person count once. The outcome carries one access token, of the first counted approver in
the policy's order; every other approved access token (surplus, or of a quorum that failed,
arriving late after the rest were cancelled) is revoked. A child cancelled while its token
request runs revokes what it brings (temporal_ciba._approval). All of this is workflow code in
the caller's workflow, deterministic, so a worker killed mid-quorum replays to the same state.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._approval import QUORUM_VETO_PATCH, revoke_access_token
    from temporal_ciba._models import (
        ApprovalOutcome,
        ApprovalRequest,
        ApproverClaims,
        OutcomeStatus,
        RevokeAccessTokenInput,
    )

# Without requested_expiry or a policy_deadline, how long a quorum waits for all its approvers.
DEFAULT_QUORUM_SECONDS = 600
QUORUM_NOT_MET = "quorum_not_met"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


def quorum_child_id(base: str, run_id: str, index: int, login_hint: str) -> str:
    """A child's workflow id, unique per asking run and approver.

    It holds the approval's base id, the asking run (a later run under the same id, after
    continue-as-new or a retry, starts children of its own while those of the run before are
    still being cancelled), the approver's position and login hint (made safe, hashed when
    long)."""
    safe = _UNSAFE.sub("_", login_hint)
    if safe != login_hint or len(safe) > 40:
        safe = safe[:24] + "-" + hashlib.sha256(login_hint.encode()).hexdigest()[:12]
    return f"{base}.q-{run_id}.{index}-{safe}"


def quorum_deadline(request: ApprovalRequest, now: datetime) -> datetime:
    """One deadline for every approver.

    The request's policy_deadline, else its requested expiry (or DEFAULT_QUORUM_SECONDS) from
    now."""
    if request.policy_deadline is not None:
        return request.policy_deadline
    return now + timedelta(seconds=request.requested_expiry or DEFAULT_QUORUM_SECONDS)


@dataclass
class QuorumTally:
    """Counts the approvers' outcomes as they end (pure; the workflow feeds it)."""

    login_hints: Sequence[str]
    needed: int
    end_on_denial: bool = True
    # False only for a run recorded before a denial vetoed a met quorum (compat.QUORUM_VETO_PATCH).
    veto_overrides_met: bool = True
    outcomes: dict[int, ApprovalOutcome] = field(default_factory=dict)
    # The order the outcomes came in (the first non-approval that makes the quorum fail names it).
    order: list[int] = field(default_factory=list)

    def record(self, index: int, outcome: ApprovalOutcome) -> None:
        if index not in self.outcomes:
            self.outcomes[index] = outcome
            self.order.append(index)

    def counted(self) -> list[int]:
        """The approvals that count, in the policy's order: the first per distinct sub."""
        seen: set[str] = set()
        counted = []
        for index in sorted(self.outcomes):
            outcome = self.outcomes[index]
            if outcome.approved and outcome.sub is not None and outcome.sub not in seen:
                seen.add(outcome.sub)
                counted.append(index)
        return counted

    def vetoed(self) -> bool:
        """Whether a denial ends the quorum: under end_on_denial, any denial recorded, however
        it was ordered or batched with the approvals that meet n (before them, in the same
        workflow task, or while the rest were being cancelled)."""
        return self.end_on_denial and any(o.status == "denied" for o in self.outcomes.values())

    def met(self) -> bool:
        """Whether n distinct subs approved and no veto holds."""
        if self.veto_overrides_met and self.vetoed():
            return False
        return len(self.counted()) >= self.needed

    def veto_overrode_met(self) -> bool:
        """Whether a veto turned what n distinct approvals met into a denial."""
        return self.vetoed() and len(self.counted()) >= self.needed

    def failed(self) -> bool:
        if self.vetoed():
            return True
        still_open = len(self.login_hints) - len(self.outcomes)
        return not self.met() and len(self.counted()) + still_open < self.needed

    def decided(self) -> bool:
        return self.met() or self.failed()

    def claims(self) -> list[ApproverClaims]:
        counted = set(self.counted())
        return [
            ApproverClaims(
                login_hint=hint,
                status=outcome.status,
                workflow_id=outcome.workflow_id,
                auth_req_id=outcome.auth_req_id,
                error=outcome.error,
                sub=outcome.sub,
                acr=outcome.acr,
                amr=outcome.amr,
                auth_time=outcome.auth_time,
                counted=index in counted,
                decided_at=outcome.decided_at,
            )
            for index, hint in enumerate(self.login_hints)
            if (outcome := self.outcomes.get(index)) is not None
        ]

    def outcome(
        self, *, workflow_id: str, action_digest: str | None, deadline: datetime, now: datetime
    ) -> ApprovalOutcome:
        """The quorum's outcome, once every approver's outcome is in."""
        claims = self.claims()
        counted = self.counted()
        of = f"{self.needed} of {len(self.login_hints)}"
        if self.met():
            primary = self.outcomes[counted[0]]
            names = " and ".join(str(self.outcomes[i].sub) for i in counted)
            return primary.model_copy(
                update={
                    "reason": f"approved by {names} ({of} distinct approvers)",
                    "subject_pinned": all(self.outcomes[i].subject_pinned for i in counted),
                    "deadline": deadline,
                    "decided_at": now,
                    "approvers": claims,
                }
            )
        status, decisive = self._failure()
        if decisive is None:
            subs = sorted({str(o.sub) for o in self.outcomes.values() if o.approved})
            reason = f"quorum {of} not met: only {len(counted)} distinct approver(s) ({', '.join(subs) or 'none'})"
            error: str | None = QUORUM_NOT_MET
            where, auth_req_id = workflow_id, None
        else:
            reason = f"{decisive.reason} (quorum {of} not met)"
            error, where, auth_req_id = decisive.error or QUORUM_NOT_MET, decisive.workflow_id, decisive.auth_req_id
        return ApprovalOutcome(
            status=status,
            workflow_id=where,
            auth_req_id=auth_req_id,
            error=error,
            reason=reason,
            action_digest=action_digest,
            deadline=deadline,
            decided_at=now,
            approvers=claims,
        )

    def _failure(self) -> tuple[OutcomeStatus, ApprovalOutcome | None]:
        ended = [self.outcomes[i] for i in self.order]
        denial = next((o for o in ended if o.status == "denied"), None)
        if denial is not None:
            return "denied", denial
        first = next((o for o in ended if not o.approved and o.status != "cancelled"), None)
        if first is not None:
            return first.status, first
        # Only approvals (some by the same person), or cancellations after the quorum failed.
        return "rejected", None


StartChild = Callable[[ApprovalRequest, str], Awaitable[workflow.ChildWorkflowHandle[Any, ApprovalOutcome]]]


async def run_quorum(
    requests: Sequence[ApprovalRequest],
    *,
    needed: int,
    end_on_denial: bool,
    base_id: str,
    deadline: datetime,
    start_child: StartChild,
    revoke_holder: tuple[str, str],
) -> ApprovalOutcome:
    """Ask every approver at once and wait until the quorum is met or cannot be.

    `start_child` is called with each request and its child id. Once the quorum is decided, the
    rest are cancelled and surplus tokens revoked."""
    info = workflow.info()
    tally = QuorumTally([r.approver for r in requests], needed, end_on_denial)
    waiting: dict[asyncio.Future[ApprovalOutcome], int] = {}
    cancelled = False
    try:
        # Started together (one workflow task), in the policy's order.
        started = await asyncio.gather(
            *(
                start_child(request, quorum_child_id(base_id, info.run_id, index, request.approver))
                for index, request in enumerate(requests)
            )
        )
        handles = dict(enumerate(started))
        waiting = {asyncio.ensure_future(handle): index for index, handle in handles.items()}
        while waiting and not tally.decided():
            done, _ = await asyncio.wait(list(waiting), return_when=asyncio.FIRST_COMPLETED)
            # In the order the children were started: the same on every replay.
            for future in sorted(done, key=lambda f: waiting[f]):
                index = waiting.pop(future)
                tally.record(index, await _ended(future, handles[index].id))
    except asyncio.CancelledError:
        cancelled = True
    # The quorum is decided (or this workflow was cancelled): cancel the rest, collect every end.
    for future in waiting:
        future.cancel()
    for future, index in sorted(waiting.items(), key=lambda item: item[1]):
        tally.record(index, await _ended(future, handles[index].id))
    if tally.veto_overrode_met() and not workflow.patched(QUORUM_VETO_PATCH):
        tally.veto_overrides_met = False  # recorded before the veto held: that run's outcome and revocations
    outcome = tally.outcome(
        workflow_id=base_id, action_digest=requests[0].action_digest, deadline=deadline, now=workflow.now()
    )
    if cancelled:
        outcome = ApprovalOutcome(
            status="cancelled",
            workflow_id=base_id,
            reason="the approval was cancelled before the quorum was reached",
            action_digest=requests[0].action_digest,
            deadline=deadline,
            decided_at=workflow.now(),
            approvers=tally.claims(),
        )
    # Every approved token but the one the outcome carries (by its auth_req_id): nobody will use it.
    kept = outcome.auth_req_id if outcome.sealed_access_token else None
    for index in sorted(tally.outcomes):
        approved = tally.outcomes[index]
        if approved.sealed_access_token and approved.auth_req_id != kept:
            await _revoke(approved, revoke_holder)
    return outcome


async def _ended(future: asyncio.Future[ApprovalOutcome], child_id: str) -> ApprovalOutcome:
    """A child's outcome, or an error outcome for a child that ended without one.

    A child may be terminated, time out or fail; the error outcome lets the quorum still decide
    instead of failing the caller's workflow."""
    try:
        return await future
    except (asyncio.CancelledError, ChildWorkflowError) as exc:
        workflow.logger.warning("quorum approval %s ended without an outcome: %s", child_id, type(exc).__name__)
        return ApprovalOutcome(
            status="error",
            workflow_id=child_id,
            error="approval_failed",
            reason=f"the approval workflow {child_id} ended without an outcome",
            decided_at=workflow.now(),
        )


async def _revoke(outcome: ApprovalOutcome, holder: tuple[str, str]) -> None:
    assert outcome.sealed_access_token is not None and outcome.auth_req_id is not None
    await revoke_access_token(
        RevokeAccessTokenInput(
            sealed_access_token=outcome.sealed_access_token,
            auth_req_id=outcome.auth_req_id,
            action_digest=outcome.action_digest,
            holder_workflow_id=holder[0],
            holder_run_id=holder[1],
        )
    )

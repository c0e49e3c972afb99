"""The quorum's tally on literal outcomes: distinct subs, denials, what fails it, and its outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from temporal_ciba._models import ApprovalOutcome, PolicyDecision
from temporal_ciba._quorum import QUORUM_NOT_MET, QuorumTally, quorum_child_id

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def ended(status: str, sub: str | None = None, n: int = 0) -> ApprovalOutcome:
    return ApprovalOutcome(
        status=status,  # type: ignore[arg-type]
        workflow_id=f"child-{n}",
        auth_req_id=f"req-{n}",
        reason=f"{status} {sub}",
        sub=sub,
        subject_pinned=True,
        error="access_denied" if status == "denied" else None,
        sealed_access_token=f"sealed-{n}" if status == "approved" else None,
        decided_at=NOW,
    )


def tally(*outcomes: ApprovalOutcome, m: int = 2, n: int = 2, end_on_denial: bool = True) -> QuorumTally:
    t = QuorumTally([f"hint{i}" for i in range(m)], n, end_on_denial)
    for index, outcome in enumerate(outcomes):
        if outcome is not None:
            t.record(index, outcome)
    return t


@pytest.mark.parametrize(
    ("outcomes", "m", "n", "end_on_denial", "decided", "met"),
    [
        ([ended("approved", "alice", 0)], 2, 2, True, False, False),
        ([ended("approved", "alice", 0), ended("approved", "bob", 1)], 2, 2, True, True, True),
        # The same person through two login hints counts once.
        ([ended("approved", "alice", 0), ended("approved", "alice", 1)], 2, 2, True, True, False),
        ([ended("approved", "alice", 0), ended("approved", "alice", 1)], 3, 2, True, False, False),
        ([ended("denied", None, 0)], 3, 2, True, True, False),
        # With on_denial "continue" a denial fails the quorum only when it can no longer be met.
        ([ended("denied", None, 0)], 3, 2, False, False, False),
        ([ended("denied", None, 0), ended("denied", None, 1)], 3, 2, False, True, False),
        ([ended("expired", None, 0)], 2, 2, True, True, False),
        ([ended("expired", None, 0), ended("approved", "bob", 1)], 3, 1, True, True, True),
        ([ended("approved", "alice", 0), ended("error", None, 1), ended("approved", "bob", 2)], 3, 2, True, True, True),
    ],
)
def test_when_a_quorum_is_decided(
    outcomes: list[ApprovalOutcome], m: int, n: int, end_on_denial: bool, decided: bool, met: bool
) -> None:
    t = tally(*outcomes, m=m, n=n, end_on_denial=end_on_denial)
    assert (t.decided(), t.met()) == (decided, met)


def test_a_met_quorum_carries_the_first_counted_approvers_token_and_every_claim() -> None:
    t = tally(ended("approved", "alice", 0), ended("approved", "bob", 1))
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)
    assert outcome.approved and outcome.sub == "alice" and outcome.sealed_access_token == "sealed-0"
    assert outcome.auth_req_id == "req-0"  # the token's auth_req_id: grant.open_access_token needs it
    assert [(a.sub, a.counted) for a in outcome.approvers or []] == [("alice", True), ("bob", True)]
    assert outcome.reason == "approved by alice and bob (2 of 2 distinct approvers)"


def test_the_same_person_twice_is_not_a_quorum() -> None:
    t = tally(ended("approved", "alice", 0), ended("approved", "alice", 1))
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)
    assert (outcome.status, outcome.error) == ("rejected", QUORUM_NOT_MET)
    assert outcome.sealed_access_token is None and outcome.sub is None
    assert [a.counted for a in outcome.approvers or []] == [True, False]
    assert "only 1 distinct approver(s) (alice)" in outcome.reason


def test_a_denial_names_the_denier() -> None:
    t = tally(ended("approved", "alice", 0), ended("denied", None, 1))
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)
    assert (outcome.status, outcome.error, outcome.workflow_id) == ("denied", "access_denied", "child-1")
    assert outcome.sealed_access_token is None


def test_an_expiry_fails_it_as_expired() -> None:
    t = tally(ended("expired", None, 1), ended("cancelled", None, 0))
    t.order.reverse()
    assert t.outcome(workflow_id="p", action_digest=None, deadline=NOW, now=NOW).status == "expired"


def test_child_ids_differ_by_run_position_and_approver() -> None:
    ids = {
        quorum_child_id("wf.approval-x", run, index, hint)
        for run in ("run-1", "run-2")
        for index, hint in enumerate(["alice", "alice@example.com"])
    }
    assert len(ids) == 4
    assert quorum_child_id("b", "r", 0, "a/b" * 30).startswith("b.q-r.0-a_b")


def test_an_unasked_outcome_cannot_carry_an_approval() -> None:
    none = PolicyDecision(rule="small", reason="small", approval="none")
    ApprovalOutcome(status="approved", workflow_id="w", reason="r", decided_at=NOW, policy=none)
    for field in ("auth_req_id", "sub", "sealed_access_token"):
        with pytest.raises(ValueError, match="carries no approval"):
            ApprovalOutcome(status="approved", workflow_id="w", reason="r", decided_at=NOW, policy=none, **{field: "x"})

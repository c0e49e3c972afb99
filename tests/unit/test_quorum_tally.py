"""The quorum's tally on literal outcomes: distinct subs, denials, what fails it, and its outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_denial_before_the_approvals_that_meet_n_in_one_activation_ends_it_denied() -> None:
    """alice denies, then bob and carol approve, all three recorded before the tally is asked."""
    t = QuorumTally(["alice", "bob", "carol"], 2, end_on_denial=True)
    t.record(0, ended("denied", None, 0))
    t.record(1, ended("approved", "bob", 1))
    t.record(2, ended("approved", "carol", 2))
    assert t.decided() and not t.met()
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)
    assert (outcome.status, outcome.error, outcome.workflow_id) == ("denied", "access_denied", "child-0")
    assert outcome.sealed_access_token is None and outcome.sub is None
    assert "(quorum 2 of 3 not met)" in outcome.reason


def test_a_denial_while_the_rest_are_cancelled_still_vetoes_a_met_quorum() -> None:
    t = QuorumTally(["alice", "bob", "carol"], 2, end_on_denial=True)
    t.record(1, ended("approved", "bob", 1))
    t.record(2, ended("approved", "carol", 2))
    assert t.met()  # decided: alice is being cancelled, and her denial lands first
    t.record(0, ended("denied", None, 0))
    assert t.outcome(workflow_id="p", action_digest=None, deadline=NOW, now=NOW).status == "denied"


def test_a_run_recorded_before_the_veto_keeps_its_approval() -> None:
    t = QuorumTally(["alice", "bob", "carol"], 2, end_on_denial=True, veto_overrides_met=False)
    for index, outcome in enumerate(
        [ended("denied", None, 0), ended("approved", "bob", 1), ended("approved", "carol", 2)]
    ):
        t.record(index, outcome)
    assert t.veto_overrode_met()
    assert t.outcome(workflow_id="p", action_digest=None, deadline=NOW, now=NOW).status == "approved"


# One approver's own result: approved by one of a few people (so the same person can come twice
# under two login hints), denied, or another end.
RESULTS = st.one_of(
    st.sampled_from(["alice", "bob", "carol", "dave"]).map(lambda sub: ("approved", sub)),
    st.sampled_from([("denied", None), ("expired", None), ("error", None)]),
)


@st.composite
def quorums(draw: st.DrawFn) -> tuple[int, int, bool, list[tuple[str, str | None]], list[list[int]], list[bool]]:
    """n of m, on_denial, each approver's result, the batches their results arrive in (every order
    and grouping), and for each approver whether its own result beats its cancellation."""
    m = draw(st.integers(2, 5))
    n = draw(st.integers(1, m))
    end_on_denial = draw(st.booleans())
    results = draw(st.lists(RESULTS, min_size=m, max_size=m))
    order = draw(st.permutations(range(m)))
    cuts = sorted(draw(st.sets(st.integers(1, m - 1))))
    batches = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, m], strict=True)]
    raced = draw(st.lists(st.booleans(), min_size=m, max_size=m))
    return m, n, end_on_denial, results, batches, raced


@settings(max_examples=500, deadline=None)
@given(quorums())
def test_the_outcome_under_every_order_and_batching(
    quorum: tuple[int, int, bool, list[tuple[str, str | None]], list[list[int]], list[bool]],
) -> None:
    """Fed as run_quorum feeds it: a batch at a time (in index order within a batch, as one
    workflow task delivers them) until decided, then every approver not yet in, ending with its own
    result when it beat the cancellation, else cancelled."""
    m, n, end_on_denial, results, batches, raced = quorum
    t = QuorumTally([f"hint{i}" for i in range(m)], n, end_on_denial)

    def own(index: int) -> ApprovalOutcome:
        status, sub = results[index]
        return ended(status, sub, index)

    first_met = first_denied = None  # the batch in which n distinct subs approved, a denial came
    subs: set[str] = set()
    for number, batch in enumerate(batches):
        for index in batch:
            status, sub = results[index]
            if status == "approved" and sub is not None:
                subs.add(sub)
            if status == "denied" and first_denied is None:
                first_denied = number
        if len(subs) >= n and first_met is None:
            first_met = number
    for batch in batches:
        if t.decided():
            break
        for index in sorted(batch):
            t.record(index, own(index))
    for index in range(m):
        t.record(index, own(index) if raced[index] else ended("cancelled", None, index))
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)

    recorded = [t.outcomes[i] for i in range(m)]
    denied = [o for o in recorded if o.status == "denied"]
    distinct = {o.sub for o in recorded if o.approved}
    if end_on_denial and denied:
        assert outcome.status == "denied" and outcome.sealed_access_token is None
    elif len(distinct) >= n:
        assert outcome.approved
        first = min(i for i in range(m) if recorded[i].approved)
        assert (outcome.sub, outcome.sealed_access_token) == (recorded[first].sub, f"sealed-{first}")
    else:
        assert not outcome.approved and outcome.sealed_access_token is None
        assert outcome.status == ("denied" if denied else outcome.status)
    # The veto, stated on the arrivals alone: a denial in the batch whose approvals meet n, or in
    # one before it, ends the quorum denied, whatever is batched with it. (Before that batch the
    # quorum cannot have failed otherwise: n distinct approvals were still to come.)
    if end_on_denial and first_denied is not None and first_met is not None and first_denied <= first_met:
        assert outcome.status == "denied"
    # Nothing but approvals by n distinct people approves: never a token otherwise.
    assert outcome.approved == (len(distinct) >= n and not (end_on_denial and denied))


LATER = datetime(2026, 11, 29, 0, 5, tzinfo=UTC)
DIGEST = "ab" * 32


def test_each_approver_s_claims_are_carried_whole() -> None:
    alice = ended("approved", "alice", 0).model_copy(update={"acr": "mfa", "amr": ["pwd", "otp"], "auth_time": 7})
    bob = ended("denied", None, 1)
    (a, b) = tally(alice, bob, m=2, n=1, end_on_denial=False).claims()
    assert a.model_dump() == {
        "login_hint": "hint0",
        "status": "approved",
        "workflow_id": "child-0",
        "auth_req_id": "req-0",
        "error": None,
        "sub": "alice",
        "acr": "mfa",
        "amr": ["pwd", "otp"],
        "auth_time": 7,
        "counted": True,
        "decided_at": NOW,
    }
    assert (b.status, b.workflow_id, b.auth_req_id, b.error, b.sub, b.counted) == (
        "denied",
        "child-1",
        "req-1",
        "access_denied",
        None,
        False,
    )


def test_a_met_quorum_s_outcome_is_stamped_with_the_quorum_s_deadline_time_and_pinning() -> None:
    unpinned = ended("approved", "bob", 1).model_copy(update={"subject_pinned": False})
    outcome = tally(ended("approved", "alice", 0), unpinned).outcome(
        workflow_id="parent", action_digest=DIGEST, deadline=LATER, now=LATER
    )
    assert outcome.deadline == LATER and outcome.decided_at == LATER
    assert outcome.subject_pinned is False  # pinned only when every counted approver was


def test_a_quorum_not_met_states_the_whole_outcome() -> None:
    outcome = tally(ended("approved", "alice", 0), ended("approved", "alice", 1)).outcome(
        workflow_id="parent", action_digest=DIGEST, deadline=LATER, now=LATER
    )
    assert (outcome.status, outcome.workflow_id, outcome.auth_req_id, outcome.error) == (
        "rejected",
        "parent",
        None,
        QUORUM_NOT_MET,
    )
    assert (outcome.action_digest, outcome.deadline, outcome.decided_at) == (DIGEST, LATER, LATER)
    assert outcome.reason == "quorum 2 of 2 not met: only 1 distinct approver(s) (alice)"
    none = tally(ended("expired", None, 0), ended("cancelled", None, 1), m=2, n=1)
    none.order.reverse()  # the cancellation first: it names nobody, the expiry does
    assert none.outcome(workflow_id="p", action_digest=None, deadline=NOW, now=NOW).status == "expired"


def test_a_failed_quorum_names_the_decisive_approval_and_keeps_the_action() -> None:
    outcome = tally(ended("approved", "alice", 0), ended("denied", None, 1)).outcome(
        workflow_id="parent", action_digest=DIGEST, deadline=LATER, now=LATER
    )
    assert (outcome.workflow_id, outcome.auth_req_id, outcome.action_digest) == ("child-1", "req-1", DIGEST)
    assert outcome.reason == "denied None (quorum 2 of 2 not met)"


def test_only_cancellations_and_approvals_fall_short_without_naming_anyone() -> None:
    outcome = tally(ended("cancelled", None, 0), ended("cancelled", None, 1), m=2, n=2).outcome(
        workflow_id="parent", action_digest=None, deadline=NOW, now=NOW
    )
    assert outcome.reason == "quorum 2 of 2 not met: only 0 distinct approver(s) (none)"


def test_a_veto_overrides_only_a_quorum_that_was_met() -> None:
    denied_alone = tally(ended("denied", None, 0), m=3, n=2)
    assert denied_alone.vetoed() and not denied_alone.veto_overrode_met()
    overridden = tally(ended("denied", None, 0), ended("approved", "bob", 1), ended("approved", "carol", 2), m=3, n=2)
    assert overridden.veto_overrode_met()


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("a" * 40, "b.q-r.0-" + "a" * 40),  # safe and at most 40 characters: kept whole
        ("a" * 41, "b.q-r.0-" + "a" * 24 + "-c0f8bd4dbc2b"),
        ("bob smith", "b.q-r.0-bob_smith-7e50351d7a4c"),  # made safe: hashed, short as it is
    ],
)
def test_child_ids_keep_a_safe_short_hint_and_hash_the_rest(hint: str, expected: str) -> None:
    assert quorum_child_id("b", "r", 0, hint) == expected


def test_a_quorum_short_of_n_names_every_distinct_approver() -> None:
    t = tally(ended("approved", "bob", 1), ended("approved", "alice", 0), ended("cancelled", None, 2), m=3, n=3)
    outcome = t.outcome(workflow_id="parent", action_digest=None, deadline=NOW, now=NOW)
    assert outcome.reason == "quorum 3 of 3 not met: only 2 distinct approver(s) (alice, bob)"

"""The chaos run's invariants (tests/support/chaos_check.py): each rule fails on the violation it names.

The run itself (scripts/chaos.sh) passes when nothing broke; these feed each check a ledger, a
set of records or a token-request log with one violation planted, so a check that stopped
looking would fail here, not pass silently in CI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.chaos_check import (
    Agent,
    as_json,
    check_ended,
    check_ledger,
    check_outcomes,
    check_push_never_polled,
    check_quorums,
    check_records,
    check_secrets,
    check_settled,
    check_token_requests,
    check_tool_ledger,
    quorum_vote,
    table,
)


def agents(*specs: tuple[str, str, str | None]) -> dict[str, Agent]:
    """Agents by id from (id, decision, status); an approved one has the receipt pay-ID."""
    made = {}
    for workflow_id, decision, status in specs:
        payment_id = f"pay-{workflow_id}" if status == "approved" else None
        made[workflow_id] = Agent(workflow_id, "poll-child", decision, status, payment_id, closed=status is not None)
    return made


def payment(workflow_id: str, payment_id: str | None = None) -> dict[str, Any]:
    return {"idempotency_key": f"{workflow_id}:{'ab' * 16}", "payment_id": payment_id or f"pay-{workflow_id}"}


RUN = agents(("a-1", "approve", "approved"), ("a-2", "deny", "denied"), ("a-3", "no_answer", "expired"))


def test_a_clean_ledger_passes() -> None:
    assert check_ledger(RUN, [payment("a-1")]).ok


@pytest.mark.parametrize(
    ("ledger", "named"),
    [
        ([payment("a-1"), payment("a-1", "pay-again")], "a-1: approved, paid 2 times"),
        ([], "a-1: approved, paid 0 times"),
        ([payment("a-1"), payment("a-2")], "a-2: denied, paid 1 times"),
        ([payment("a-1"), payment("a-3.approval-0123")], "a-3: expired, paid 1 times"),
        ([payment("a-1", "pay-other")], "receipt pay-a-1, ledger pay-other"),
        ([payment("a-1"), payment("stranger")], "belongs to no approval of the run"),
    ],
    ids=["doubled", "approved-not-paid", "denied-paid", "expired-paid-by-child", "receipt-mismatch", "stranger"],
)
def test_a_ledger_with_a_wrong_payment_fails(ledger: list[dict[str, Any]], named: str) -> None:
    check = check_ledger(RUN, ledger)
    assert not check.ok and any(named in violation for violation in check.violations), check.violations


def test_an_outcome_other_than_the_decision_fails() -> None:
    assert check_outcomes(RUN).ok
    wrong = agents(("a-1", "wrong_person", "approved"), ("a-2", "approve", "error"), ("a-3", "deny", None))
    check = check_outcomes(wrong)
    assert len(check.violations) == 3 and not check.ok
    assert "a-1 (poll-child): wrong_person, ended approved (None)" in check.violations


def test_a_grant_lost_to_a_killed_worker_is_counted_not_a_violation() -> None:
    lost = agents(("a-1", "approve", "error"), ("a-2", "deny", "error"), ("a-3", "no_answer", "error"))
    for agent in lost.values():
        agent.error = "grant_lost"
    lost["a-2"].error = "request_outcome_unknown"
    check = check_outcomes(lost)
    # Approved or denied, then lost: documented. Nobody answered, yet the grant was lost: a violation.
    assert check.violations == ["a-3 (poll-child): no_answer, ended error (grant_lost)"]
    assert "(2 of them grant_lost or request_outcome_unknown, as documented)" in check.figure
    # A backchannel request whose outcome is unknown happened before anyone was asked: documented either way.
    lost["a-3"].error = "request_outcome_unknown"
    assert check_outcomes(lost).ok
    lost["a-1"].error = "invalid_grant"
    assert "a-1 (poll-child): approve, ended error (invalid_grant)" in check_outcomes(lost).violations


def test_an_approval_still_running_or_without_result_fails() -> None:
    assert check_ended(RUN, []).ok
    assert check_ended(RUN, ["a-1.approval-0123"]).violations == ["a-1.approval-0123: still running"]
    unfinished = agents(("a-1", "approve", None))
    assert check_ended(unfinished, []).violations == ["a-1: no result"]


def record(workflow_id: str, status: str, record_id: str = "r") -> dict[str, Any]:
    return {"workflow_id": workflow_id, "status": status, "record_id": record_id}


CLEAN_RECORDS = [record("a-1.approval-0123", "approved"), record("a-2", "denied"), record("a-3", "expired")]


def test_one_record_per_outcome_passes() -> None:
    assert check_records(RUN, CLEAN_RECORDS, 0, "").ok


@pytest.mark.parametrize(
    ("records", "verify_exit", "named"),
    [
        ([*CLEAN_RECORDS, record("a-2", "denied", "again")], 0, "a-2: 2 records"),
        (CLEAN_RECORDS[1:], 0, "a-1: 0 records"),
        ([record("a-1", "denied"), *CLEAN_RECORDS[1:]], 0, "a-1: recorded denied, ended approved"),
        ([*CLEAN_RECORDS, record("stranger", "approved")], 0, "no approval of the run"),
        (CLEAN_RECORDS, 1, "audit verify exited 1"),
    ],
    ids=["two-records", "none", "wrong-status", "stranger", "verify-fails"],
)
def test_records_that_do_not_match_the_outcomes_fail(
    records: list[dict[str, Any]], verify_exit: int, named: str
) -> None:
    check = check_records(RUN, records, verify_exit, "line 3: record r (sequence 2): two records of one decision")
    assert not check.ok and any(named in violation for violation in check.violations), check.violations
    if verify_exit:
        assert "line 3: record r (sequence 2): two records of one decision" in check.violations


def requests(*answers: tuple[float, int, str | None, float | None]) -> list[dict[str, Any]]:
    return [{"auth_req_id": "req", "at": at, "status": s, "error": e, "retry_after": r} for at, s, e, r in answers]


def test_token_requests_at_the_interval_pass() -> None:
    log = requests(
        (0, 400, "authorization_pending", None), (1.01, 503, "temporarily_unavailable", 2), (3.1, 200, None, None)
    )
    check = check_token_requests(log, 1)
    assert check.ok and "shortest gap 1.01 s" in check.figure


@pytest.mark.parametrize(
    ("log", "named"),
    [
        (requests((0, 400, "authorization_pending", None), (0.9, 200, None, None)), "req: 0.900 s after"),
        (requests((0, 503, "temporarily_unavailable", 2), (1.5, 200, None, None)), "(at least 2 s)"),
        (requests((0, 400, "slow_down", None)), "req: slow_down at 0.000"),
    ],
    ids=["too-soon", "before-retry-after", "slow-down"],
)
def test_a_token_request_too_soon_or_slow_down_fails(log: list[dict[str, Any]], named: str) -> None:
    check = check_token_requests(log, 1)
    assert not check.ok and any(named in violation for violation in check.violations), check.violations


def test_a_secret_found_anywhere_fails() -> None:
    assert check_secrets({"worker.log": [], "history a-1": []}, "2 places").ok
    check = check_secrets({"worker.log": ["client secret"], "history a-1": []}, "2 places")
    assert check.violations == ["worker.log: client secret"]


def test_settling_later_than_the_limit_fails() -> None:
    assert check_settled(100.0, 150.0, 120).ok
    assert check_settled(100.0, 90.0, 120).figure.startswith("0.0 s")
    assert not check_settled(100.0, 221.0, 120).ok


def test_the_table_and_json_show_a_failure() -> None:
    checks = [check_ledger(RUN, [payment("a-1"), payment("a-1", "pay-again")]), check_outcomes(RUN)]
    shown = table(checks)
    assert "FAIL" in shown and "    a-1: approved, paid 2 times" in shown
    copy = json.loads(as_json(checks, approvals=3))
    assert copy["ok"] is False and copy["approvals"] == 3 and [c["ok"] for c in copy["checks"]] == [False, True]


def test_a_long_list_of_violations_is_cut_but_counted() -> None:
    many = agents(*((f"a-{i}", "approve", "approved") for i in range(25)))
    check = check_ledger(many, [])
    assert len(check.violations) == 11 and check.violations[-1] == "... 25 in all"


def tool_agents(*specs: tuple[str, str, str | None]) -> dict[str, Agent]:
    made = agents(*specs)
    for agent in made.values():
        agent.kind, agent.ledger, agent.payment_id = "openai-tool", "tools", None
    return made


TOOLS = tool_agents(("t-1", "approve", "approved"), ("t-2", "deny", "denied"), ("t-3", "no_answer", "expired"))


def entry(workflow_id: str) -> dict[str, Any]:
    return {"key": f"{workflow_id}:{'cd' * 16}", "tool": "apply_production_change"}


def test_a_tool_ledger_with_one_entry_per_approved_call_passes() -> None:
    check = check_tool_ledger(TOOLS, [entry("t-1")])
    assert check.ok and check.figure == "1 tool entries, 1 of 3 tool calls approved"
    # An agent of the tool ledger is not asked for a payment, and one on the payment API's is not a tool call.
    assert check_ledger({**RUN, **TOOLS}, [payment("a-1")]).ok
    assert check_tool_ledger({**RUN, **TOOLS}, [entry("t-1")]).ok


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([entry("t-1"), entry("t-1")], "t-1: approved, its tool ran 2 times"),
        ([], "t-1: approved, its tool ran 0 times"),
        ([entry("t-1"), entry("t-2")], "t-2: denied, its tool ran 1 times"),
        ([entry("t-1"), entry("t-3")], "t-3: expired, its tool ran 1 times"),
        ([entry("t-1"), entry("a-1")], "belongs to no tool agent of the run"),
        ([entry("t-1"), entry("stranger")], "belongs to no tool agent of the run"),
    ],
    ids=["twice", "approved-never-ran", "denied-ran", "expired-ran", "payment-agent", "stranger"],
)
def test_a_tool_ledger_with_a_wrong_entry_fails(entries: list[dict[str, Any]], named: str) -> None:
    check = check_tool_ledger({**RUN, **TOOLS}, entries)
    assert not check.ok and any(named in violation for violation in check.violations), check.violations


def test_a_tool_agent_that_paid_fails_the_payment_ledger() -> None:
    check = check_ledger({**RUN, **TOOLS}, [payment("a-1"), payment("t-1")])
    assert check.violations == ["t-1: approved, paid 1 times"]


def claim(hint: str, status: str, sub: str | None = None, counted: bool = False, error: str | None = None) -> dict:
    return {
        "login_hint": hint,
        "workflow_id": f"q-1.approval-0123.q-run.{'abc'.index(hint[0])}-{hint}",
        "status": status,
        "sub": sub,
        "counted": counted,
        "error": error,
    }


def quorum(votes: dict[str, str], status: str, *claims: dict[str, Any], error: str | None = None) -> dict[str, Agent]:
    agent = Agent("q-1", "poll-quorum", "quorum", status, closed=True, error=error, votes=votes, claims=list(claims))
    return {"q-1": agent}


def test_the_wrong_person_is_rejected_for_the_pinned_approver_and_counts_once_for_the_others() -> None:
    assert quorum_vote("alice", "wrong_person") == ("rejected", "bob")
    assert quorum_vote("bob", "wrong_person") == ("approved", "alice")
    assert quorum_vote("carol", "approve") == ("approved", "carol")
    assert quorum_vote("carol", "no_answer") == ("expired", None)


# Quorums that ended as they must: two distinct people approved (the third cancelled); a denial
# that ended it; the same person twice, and the third never answered; a denial that came after two
# approvals had met the quorum (its approval cancelled); a grant lost to a killed worker.
GOOD_QUORUMS = [
    quorum(
        {"alice": "approve", "bob": "approve", "carol": "deny"},
        "approved",
        claim("alice", "approved", "alice", True),
        claim("bob", "approved", "bob", True),
        claim("carol", "cancelled"),
    ),
    quorum(
        {"alice": "approve", "bob": "deny", "carol": "approve"},
        "denied",
        claim("alice", "approved", "alice", True),
        claim("bob", "denied"),
        claim("carol", "cancelled"),
    ),
    quorum(
        {"alice": "approve", "bob": "wrong_person", "carol": "no_answer"},
        "expired",
        claim("alice", "approved", "alice", True),
        claim("bob", "approved", "alice"),
        claim("carol", "expired"),
    ),
    quorum(
        {"alice": "wrong_person", "bob": "approve", "carol": "no_answer"},
        "rejected",
        claim("alice", "rejected"),
        claim("bob", "approved", "bob", True),
        claim("carol", "expired"),
    ),
    quorum(
        {"alice": "approve", "bob": "approve", "carol": "approve"},
        "error",
        claim("alice", "error", error="grant_lost"),
        claim("bob", "approved", "bob", True),
        claim("carol", "cancelled"),
        error="grant_lost",
    ),
]


GOOD_QUORUMS.append(
    quorum(
        {"alice": "wrong_person", "bob": "approve", "carol": "no_answer"},
        "error",
        claim("alice", "rejected"),
        claim("bob", "approved", "bob", True),
        claim("carol", "error", error="request_outcome_unknown"),
        error="request_outcome_unknown",
    )
)


@pytest.mark.parametrize(
    "run", GOOD_QUORUMS, ids=["met", "vetoed", "same-person", "pinned", "grant-lost", "request-outcome-unknown"]
)
def test_a_quorum_that_ended_as_decided_passes(run: dict[str, Agent]) -> None:
    check = check_quorums(run)
    assert check.ok, check.violations
    assert check.name == "every 2-of-3 quorum ended as its approvers decided"


@pytest.mark.parametrize(
    ("run", "named"),
    [
        (
            quorum(
                {"alice": "approve", "bob": "wrong_person", "carol": "no_answer"},
                "approved",
                claim("alice", "approved", "alice", True),
                claim("bob", "approved", "alice", True),
                claim("carol", "cancelled"),
            ),
            "approved, counted ['alice', 'alice'] (needs 2 distinct people)",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "approve", "carol": "deny"},
                "approved",
                claim("alice", "approved", "alice", True),
                claim("bob", "approved", "bob", True),
                claim("carol", "denied"),
            ),
            "approved despite a denial",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "approve", "carol": "no_answer"},
                "expired",
                claim("alice", "approved", "alice", True),
                claim("bob", "approved", "bob", True),
                claim("carol", "expired"),
            ),
            "2 distinct approvals, no denial, ended expired",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "approve", "carol": "no_answer"},
                "rejected",
                claim("alice", "approved", "alice", True),
                claim("bob", "rejected"),
                claim("carol", "cancelled"),
            ),
            "bob's approval ended rejected, expected approved",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "deny", "carol": "no_answer"},
                "expired",
                claim("alice", "approved", "alice", True),
                claim("bob", "cancelled"),
                claim("carol", "expired"),
            ),
            "ended expired (None), expected denied",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "approve", "carol": "no_answer"},
                "approved",
                claim("alice", "approved", "alice", True),
                claim("bob", "approved", "carol", True),
            ),
            "bob's approval by carol, expected bob",
        ),
        (
            quorum(
                {"alice": "approve", "bob": "approve", "carol": "no_answer"},
                "approved",
                claim("alice", "approved", "alice", True),
                claim("bob", "approved", "bob", True),
            ),
            "no outcome of carol's approval",
        ),
        (
            quorum(
                {"alice": "deny", "bob": "approve", "carol": "approve"},
                "rejected",
                claim("alice", "cancelled"),
                claim("bob", "approved", "bob", True),
                claim("carol", "cancelled"),
            ),
            "ended rejected (None), expected approved or denied",
        ),
        (
            quorum(
                {"alice": "no_answer", "bob": "approve", "carol": "approve"},
                "error",
                claim("alice", "error", error="grant_lost"),
                claim("bob", "approved", "bob", True),
                claim("carol", "cancelled"),
                error="grant_lost",
            ),
            "ended error (grant_lost), expected approved",
        ),
        (
            quorum(
                {"alice": "deny", "bob": "approve", "carol": "approve"},
                "approved",
                claim("alice", "denied"),
                claim("bob", "approved", "bob", True),
                claim("carol", "approved", "carol", True),
            ),
            "an approver denied, ended approved",
        ),
    ],
    ids=[
        "one-person-twice",
        "approved-over-veto",
        "met-not-approved",
        "approver-end-not-decided",
        "denial-ignored",
        "wrong-sub",
        "approver-missing",
        "neither-met-nor-vetoed",
        "grant-lost-unanswered",
        "denial-recorded-not-the-end",
    ],
)
def test_a_quorum_that_ended_otherwise_fails(run: dict[str, Agent], named: str) -> None:
    check = check_quorums(run)
    assert not check.ok and any(named in violation for violation in check.violations), check.violations


def test_a_quorum_is_left_to_its_own_check() -> None:
    run = GOOD_QUORUMS[0]
    assert check_outcomes(run).ok  # "quorum" is no single approver's decision


def test_a_quorum_has_one_record_per_approvers_approval() -> None:
    run = GOOD_QUORUMS[0]
    claims = run["q-1"].claims
    clean = [record(str(c["workflow_id"]), str(c["status"])) for c in claims]
    assert check_records(run, clean, 0, "").ok
    wrong = [clean[0], record(str(claims[1]["workflow_id"]), "denied"), clean[2], clean[2]]
    check = check_records(run, wrong, 0, "")
    assert f"{claims[1]['workflow_id']}: recorded ['denied'], ended approved" in check.violations
    assert f"{claims[2]['workflow_id']}: recorded ['cancelled', 'cancelled'], ended cancelled" in check.violations
    check = check_records(run, [*clean, record("q-1", "approved")], 0, "")
    assert check.violations == ["q-1: recorded ['approved'], no approver's approval of q-1"]


def test_a_token_request_at_the_push_op_fails() -> None:
    assert check_push_never_polled(0, 12).ok
    check = check_push_never_polled(1, 12)
    assert check.violations == ["the push OP's token endpoint was called 1 times"]
    assert check.figure == "12 pushes, 1 token requests"


def test_an_approval_alone_must_not_act() -> None:
    """An approval without an action (the push kind's bare approval) pays and runs nothing."""
    alone = agents(("p-1", "approve", "approved"))
    alone["p-1"].ledger, alone["p-1"].payment_id = "none", None
    assert check_ledger(alone, []).ok and check_tool_ledger(alone, []).ok
    assert check_ledger(alone, [payment("p-1")]).violations == ["p-1: approved, paid 1 times"]
    assert check_tool_ledger(alone, [entry("p-1")]).violations == [
        f"tool entry p-1:{'cd' * 16} belongs to no tool agent of the run"
    ]

"""The chaos run's invariants, as pure functions over what the run collected.

`tests.support.chaos` gathers the facts (each agent's decision and outcome, the payment API's ledger,
the decision records, the OP's token-request log, what a scan for secrets found, times); each
function here turns them into one `Check`: its name, whether it held, a figure and the cases
that broke it. Nothing here talks to a server, so every rule is unit-tested on its own
(tests/unit/test_chaos_check.py).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# What the runner's simulated approver did, and the outcome each decision must end in.
EXPECTED_OUTCOME = {"approve": "approved", "deny": "denied", "wrong_person": "rejected", "no_answer": "expired"}
# Documented outcomes of a fault (docs/security/threat-model.md), counted apart: a redeem whose
# answer died with its worker (temporal_ciba._activities.GRANT_LOST), and a backchannel request
# that timed out after it may have reached the OP, not sent again so the user is not asked twice.
GRANT_LOST = "grant_lost"
DOCUMENTED_ERRORS = (GRANT_LOST, "request_outcome_unknown")


def documented_error(status: str | None, error: str | None, decision: str) -> bool:
    """Whether an approval's end is a documented error of a fault: a lost grant only when the
    approver answered (nobody answering leaves no grant to lose); an unknown backchannel
    request's outcome whatever the approver would have done (it is before anyone is asked)."""
    if status != "error" or error not in DOCUMENTED_ERRORS:
        return False
    return error != GRANT_LOST or decision != "no_answer"


# How many broken cases a check lists (the count is always whole).
SHOWN = 10
# The run's quorum: its approvers (login hints, in the policy's order), how many distinct people
# must approve, and a denial ending it (tests.support.chaos writes the policy file).
QUORUM_APPROVERS = ("alice", "bob", "carol")
QUORUM_NEEDED = 2


@dataclass
class Agent:
    """One approval of the run: the agent workflow, what the approver did, how it ended.

    `status` is the approval's outcome status (None: no result was read); `payment_id` the
    receipt the agent returned, if it paid."""

    workflow_id: str
    kind: str
    decision: str
    status: str | None = None
    payment_id: str | None = None
    closed: bool = False
    error: str | None = None
    # Where its approved action shows: the payment API ("payments"), the tool ledger ("tools"),
    # or nowhere (an approval alone, "none").
    ledger: str = "payments"
    # A quorum: each approver's decision (login hint -> decision), and how each approver's own
    # approval ended (the outcome's claims: login_hint, workflow_id, status, error, sub, counted).
    votes: dict[str, str] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    violations: list[str] = field(default_factory=list)


def _check(name: str, figure: str, violations: list[str]) -> Check:
    return Check(
        name,
        not violations,
        figure,
        violations[:SHOWN] + ([f"... {len(violations)} in all"] * (len(violations) > SHOWN)),
    )


def agent_of(workflow_id: str, agents: Mapping[str, Agent]) -> str | None:
    """The agent a workflow id belongs to: the agent itself, or a child it started (`AGENT.approval-...`)."""
    if workflow_id in agents:
        return workflow_id
    head = workflow_id.split(".", 1)[0]
    return head if head in agents else None


def check_ledger(agents: Mapping[str, Agent], ledger: Sequence[Mapping[str, Any]]) -> Check:
    """Every approved action ran exactly once (one payment, the one its receipt names); no other ran.

    A payment's idempotency key starts with the paying workflow's id (temporal_ciba._grant);
    a payment that belongs to no agent of the run is a violation too."""
    paid: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    violations = []
    for payment in ledger:
        owner = agent_of(str(payment["idempotency_key"]).rsplit(":", 1)[0], agents)
        if owner is None:
            violations.append(f"payment {payment.get('payment_id')} belongs to no approval of the run")
        else:
            paid[owner].append(payment)
    for agent in agents.values():
        payments = paid.get(agent.workflow_id, [])
        if agent.status == "approved" and agent.ledger == "payments":
            if len(payments) != 1:
                violations.append(f"{agent.workflow_id}: approved, paid {len(payments)} times")
            elif agent.payment_id is not None and payments[0].get("payment_id") != agent.payment_id:
                violations.append(
                    f"{agent.workflow_id}: receipt {agent.payment_id}, ledger {payments[0].get('payment_id')}"
                )
        elif payments:
            violations.append(f"{agent.workflow_id}: {agent.status}, paid {len(payments)} times")
    approved = sum(agent.status == "approved" and agent.ledger == "payments" for agent in agents.values())
    return _check(
        "approved actions ran exactly once, no other ran", f"{len(ledger)} payments, {approved} approved", violations
    )


def check_tool_ledger(agents: Mapping[str, Agent], entries: Sequence[Mapping[str, Any]]) -> Check:
    """Every approved gated tool call of an agent whose tool writes the tool ledger ran exactly
    once (one entry); a denied, expired or rejected one never; no entry of anyone else.

    An entry's key is the approval's idempotency key, which starts with the agent's workflow id
    (temporal_ciba_examples.shared.tool_ledger.execution_key)."""
    ran: dict[str, int] = defaultdict(int)
    violations = []
    for entry in entries:
        owner = agent_of(str(entry["key"]).rsplit(":", 1)[0], agents)
        if owner is None or agents[owner].ledger != "tools":
            violations.append(f"tool entry {entry['key']} belongs to no tool agent of the run")
        else:
            ran[owner] += 1
    tool_agents = [agent for agent in agents.values() if agent.ledger == "tools"]
    for agent in tool_agents:
        expected = 1 if agent.status == "approved" else 0
        if ran[agent.workflow_id] != expected:
            violations.append(f"{agent.workflow_id}: {agent.status}, its tool ran {ran[agent.workflow_id]} times")
    approved = sum(agent.status == "approved" for agent in tool_agents)
    return _check(
        "approved tool calls ran exactly once, no other ran",
        f"{len(entries)} tool entries, {approved} of {len(tool_agents)} tool calls approved",
        violations,
    )


def check_outcomes(agents: Mapping[str, Agent]) -> Check:
    """Each approval ended as its approver decided: approved, denied, rejected (someone else
    answered) or expired (nobody did).

    The documented exceptions (docs/security/threat-model.md) are counted in the figure, not as
    violations: a worker killed after the OP answered a redeem and before its workflow task
    completed loses that answer, the repeat meets invalid_grant, and the approval ends `error` /
    `grant_lost`; a backchannel request that timed out after it may have reached the OP ends
    `error` / `request_outcome_unknown`. Either has run nothing."""
    violations = []
    lost = 0
    for agent in agents.values():
        if agent.votes:  # a quorum: check_quorums
            continue
        if agent.status == EXPECTED_OUTCOME[agent.decision]:
            continue
        if documented_error(agent.status, agent.error, agent.decision):
            lost += 1
            continue
        violations.append(f"{agent.workflow_id} ({agent.kind}): {agent.decision}, ended {agent.status} ({agent.error})")
    counts: dict[str, int] = defaultdict(int)
    for agent in agents.values():
        counts[str(agent.status)] += 1
    figure = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    figure += f" ({lost} of them grant_lost or request_outcome_unknown, as documented)" if lost else ""
    return _check("every approval ended as decided", figure, violations)


def quorum_vote(login_hint: str, vote: str) -> tuple[str, str | None]:
    """How one approver's own approval in the quorum ends when left to run, and with whose `sub`.

    The agent pins alice (its expected subject): bob answering her request is `rejected`. The
    other approvers are the policy's choice and unpinned: alice answering theirs is an approval,
    by alice, which counts once with hers."""
    if vote == "wrong_person":
        return ("rejected", "bob") if login_hint == "alice" else ("approved", "alice")
    return EXPECTED_OUTCOME[vote], login_hint if vote == "approve" else None


def check_quorums(agents: Mapping[str, Agent], needed: int = QUORUM_NEEDED) -> Check:
    """Each quorum ended as its approvers' decisions and its own rule say (n distinct people, a
    denial ends it):

    - every approver's approval ended as that approver decided, or `cancelled` (the quorum was
      decided before it), with the `sub` of whoever answered;
    - from those ends: `approved` only with n distinct approving subs and no denial; `denied`
      when any approver's approval ended denied; `approved` when n distinct subs approved and
      none denied;
    - from the decisions: `approved` when n distinct people approve and nobody denies; never
      `approved` when fewer could; `denied` when someone denies and n cannot approve; otherwise
      `rejected` or `expired` (the first approver's approval that did not approve); with n and a
      denial both possible, `approved` or `denied` by which came first.

    A documented error (grant_lost, request_outcome_unknown) of an approver who answered is
    counted in the figure, as in check_outcomes."""
    violations = []
    counts: dict[str, int] = defaultdict(int)
    lost = 0
    quorums = [agent for agent in agents.values() if agent.votes]
    for agent in quorums:
        name = f"{agent.workflow_id} ({agent.kind}, {', '.join(f'{h} {v}' for h, v in agent.votes.items())})"
        counts[str(agent.status)] += 1
        if agent.status is None:
            continue  # check_ended names it
        by_hint = {str(claim["login_hint"]): claim for claim in agent.claims}
        documented = False
        for hint, vote in agent.votes.items():
            claim = by_hint.get(hint)
            if claim is None:
                violations.append(f"{name}: no outcome of {hint}'s approval")
                continue
            status, sub = quorum_vote(hint, vote)
            if claim["status"] == "cancelled":
                continue
            if documented_error(claim["status"], claim.get("error"), vote):
                documented = True
                continue
            if claim["status"] != status:
                violations.append(f"{name}: {hint}'s approval ended {claim['status']}, expected {status}")
            elif status == "approved" and claim.get("sub") != sub:
                violations.append(f"{name}: {hint}'s approval by {claim.get('sub')}, expected {sub}")
        if agent.status == "error" and agent.error in DOCUMENTED_ERRORS and documented:
            lost += 1
            continue
        approved_subs = {claim.get("sub") for claim in agent.claims if claim["status"] == "approved"}
        denied = any(claim["status"] == "denied" for claim in agent.claims)
        counted = [claim.get("sub") for claim in agent.claims if claim.get("counted")]
        if agent.status == "approved" and (len(set(counted)) < needed or len(counted) != len(set(counted))):
            violations.append(f"{name}: approved, counted {counted} (needs {needed} distinct people)")
        if agent.status == "approved" and denied:
            violations.append(f"{name}: approved despite a denial")
        if denied and agent.status != "denied":
            violations.append(f"{name}: an approver denied, ended {agent.status}")
        if len(approved_subs) >= needed and not denied and agent.status != "approved":
            violations.append(f"{name}: {len(approved_subs)} distinct approvals, no denial, ended {agent.status}")
        outcomes = [quorum_vote(hint, vote) for hint, vote in agent.votes.items()]
        possible = {sub for status, sub in outcomes if status == "approved"}
        vetoing = "deny" in agent.votes.values()
        if len(possible) >= needed and not vetoing:
            expected = {"approved"}
        elif len(possible) < needed:
            expected = {"denied"} if vetoing else {"rejected", "expired"}
        else:
            expected = {"approved", "denied"}
        if agent.status not in expected:
            violations.append(f"{name}: ended {agent.status} ({agent.error}), expected {' or '.join(sorted(expected))}")
    figure = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "no quorum"
    figure += f" ({lost} of them grant_lost or request_outcome_unknown, as documented)" if lost else ""
    return _check(
        f"every {needed}-of-{len(QUORUM_APPROVERS)} quorum ended as its approvers decided", figure, violations
    )


def check_ended(agents: Mapping[str, Agent], running: Iterable[str]) -> Check:
    """Every approval ended: no agent without a result, no workflow of the run still running."""
    still = sorted(running)
    violations = [f"{workflow_id}: still running" for workflow_id in still]
    violations += [f"{agent.workflow_id}: no result" for agent in agents.values() if not agent.closed]
    return _check(
        "every approval ended", f"{sum(a.closed for a in agents.values())} of {len(agents)} ended", violations
    )


def check_records(
    agents: Mapping[str, Agent], records: Sequence[Mapping[str, Any]], verify_exit: int, verify_output: str
) -> Check:
    """Exactly one decision record per approval, of its outcome; none of another workflow; the
    export passes `temporal-ciba audit verify` (exit status 0).

    A quorum asks each approver through an approval of their own, and each writes its record:
    one per approver's approval, of how that approval ended (the outcome's claims)."""
    by_agent: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    violations = []
    for record in records:
        owner = agent_of(str(record["workflow_id"]), agents)
        if owner is None:
            violations.append(f"record {record.get('id')} of {record['workflow_id']}: no approval of the run")
        else:
            by_agent[owner].append(record)
    for agent in agents.values():
        mine = by_agent.get(agent.workflow_id, [])
        if agent.votes:
            violations += _quorum_records(agent, mine)
        elif len(mine) != 1:
            violations.append(f"{agent.workflow_id}: {len(mine)} records ({agent.status})")
        elif mine[0]["status"] != agent.status:
            violations.append(f"{agent.workflow_id}: recorded {mine[0]['status']}, ended {agent.status}")
    if verify_exit != 0:
        violations.append(f"audit verify exited {verify_exit}")
        violations += [line for line in verify_output.splitlines() if line.startswith(("line ", "sequence "))]
    return _check(
        "one decision record per outcome; audit verify passes",
        f"{len(records)} records, verify exit {verify_exit}",
        violations,
    )


def _quorum_records(agent: Agent, records: Sequence[Mapping[str, Any]]) -> list[str]:
    expected = {str(claim["workflow_id"]): claim["status"] for claim in agent.claims}
    found: dict[str, list[str]] = defaultdict(list)
    for record in records:
        found[str(record["workflow_id"])].append(str(record["status"]))
    violations = []
    for workflow_id in sorted(set(expected) | set(found)):
        statuses = found.get(workflow_id, [])
        if workflow_id not in expected:
            violations.append(f"{workflow_id}: recorded {statuses}, no approver's approval of {agent.workflow_id}")
        elif statuses != [expected[workflow_id]]:
            violations.append(f"{workflow_id}: recorded {statuses}, ended {expected[workflow_id]}")
    return violations


def check_token_requests(token_requests: Sequence[Mapping[str, Any]], interval: float) -> Check:
    """The OP never answered slow_down and never saw a token request for an auth_req_id sooner
    than the interval after the previous one (or than its Retry-After, after a 503)."""
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    violations = []
    for request in token_requests:
        if request.get("error") == "slow_down":
            violations.append(f"{request.get('auth_req_id')}: slow_down at {request['at']:.3f}")
        if request.get("auth_req_id"):
            by_id[str(request["auth_req_id"])].append(request)
    shortest = None
    for auth_req_id, requests in by_id.items():
        requests = sorted(requests, key=lambda r: float(r["at"]))
        for before, after in itertools.pairwise(requests):
            gap = float(after["at"]) - float(before["at"])
            wait = max(interval, float(before.get("retry_after") or 0)) if before.get("status") == 503 else interval
            shortest = gap if shortest is None else min(shortest, gap)
            if gap < wait:
                violations.append(f"{auth_req_id}: {gap:.3f} s after the previous request (at least {wait:g} s)")
    figure = f"{len(token_requests)} requests, shortest gap {'-' if shortest is None else f'{shortest:.2f} s'}"
    return _check("no slow_down, no token request sooner than the interval", figure, violations)


def check_secrets(found: Mapping[str, Sequence[str]], scanned: str) -> Check:
    """No secret (client secret, keys, issued tokens) in any log or raw history: `found` maps
    where something was found to what (named, never the secret itself)."""
    violations = [f"{where}: {', '.join(what)}" for where, what in sorted(found.items()) if what]
    return _check("no secret in any log or raw history", scanned, violations)


def check_settled(last_fault_end: float | None, settled_at: float | None, limit: float) -> Check:
    """Everything settled (the last workflow closed) within `limit` seconds of the last fault's end."""
    if last_fault_end is None or settled_at is None:
        return _check("settled after the last fault", "no fault or nothing closed", [])
    took = max(0.0, settled_at - last_fault_end)
    violations = [f"settled {took:.1f} s after the last fault (limit {limit:g} s)"] if took > limit else []
    return _check("settled after the last fault", f"{took:.1f} s (limit {limit:g} s)", violations)


def check_push_never_polled(token_endpoint_calls: int, pushed: int) -> Check:
    """In push mode the OP delivers the tokens (CIBA §10.3): no client ever asked its token endpoint."""
    violations = [f"the push OP's token endpoint was called {token_endpoint_calls} times"] * (token_endpoint_calls > 0)
    return _check("push mode never polled", f"{pushed} pushes, {token_endpoint_calls} token requests", violations)


def table(checks: Sequence[Check]) -> str:
    """The checks as a plain-text table, one row each, the violations listed under a broken one."""
    width = max(len(check.name) for check in checks)
    lines = [f"{'invariant':<{width}}  {'':4}  figure", "-" * (width + 40)]
    for check in checks:
        lines.append(f"{check.name:<{width}}  {'ok' if check.ok else 'FAIL':4}  {check.figure}")
        lines += [f"    {violation}" for violation in check.violations]
    return "\n".join(lines)


def as_json(checks: Sequence[Check], **figures: Any) -> str:
    return json.dumps(
        {"ok": all(check.ok for check in checks), "checks": [asdict(c) for c in checks], **figures}, indent=2
    )

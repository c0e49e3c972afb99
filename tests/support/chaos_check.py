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
# How many broken cases a check lists (the count is always whole).
SHOWN = 10


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
        if agent.status == "approved":
            if len(payments) != 1:
                violations.append(f"{agent.workflow_id}: approved, paid {len(payments)} times")
            elif agent.payment_id is not None and payments[0].get("payment_id") != agent.payment_id:
                violations.append(
                    f"{agent.workflow_id}: receipt {agent.payment_id}, ledger {payments[0].get('payment_id')}"
                )
        elif payments:
            violations.append(f"{agent.workflow_id}: {agent.status}, paid {len(payments)} times")
    approved = sum(agent.status == "approved" for agent in agents.values())
    return _check(
        "approved actions ran exactly once, no other ran", f"{len(ledger)} payments, {approved} approved", violations
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
        if agent.status == EXPECTED_OUTCOME[agent.decision]:
            continue
        if agent.status == "error" and agent.error in DOCUMENTED_ERRORS and agent.decision != "no_answer":
            lost += 1
            continue
        violations.append(f"{agent.workflow_id} ({agent.kind}): {agent.decision}, ended {agent.status} ({agent.error})")
    counts: dict[str, int] = defaultdict(int)
    for agent in agents.values():
        counts[str(agent.status)] += 1
    figure = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    figure += f" ({lost} of them grant_lost or request_outcome_unknown, as documented)" if lost else ""
    return _check("every approval ended as decided", figure, violations)


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
    export passes `temporal-ciba audit verify` (exit status 0)."""
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
        if len(mine) != 1:
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

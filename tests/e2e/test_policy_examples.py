"""The policy examples as a user runs them against the demo's servers: the payment agent under
the amount policy and the service account that asks only above its risk threshold, each its
own process with an in-process worker reading the example policy file."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.conftest import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, clean_env, payments
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for


def example(
    module: str, *args: str, server: DevServer, op: TestOP, payment_api: str, **settings: str
) -> subprocess.Popen[str]:
    defaults = {
        "TEMPORAL_ADDRESS": server.address,
        "CIBA_ISSUER": op.issuer,
        "CIBA_CLIENT_ID": AGENT_CLIENT,
        "CIBA_CLIENT_SECRET": SECRET,
        "CIBA_PAYLOAD_KEY": PAYLOAD_KEY,
        "CIBA_TOKEN_KEY": TOKEN_KEY,
        "CIBA_PAYMENT_API_URL": payment_api,
    }
    env = clean_env(**{**defaults, **settings})
    command = [sys.executable, "-m", f"temporal_ciba_examples.policy.{module}", *args, "--task-queue", uuid.uuid4().hex]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def pending_with(op: TestOP, text: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        requests = [r for r in op.requests("pending") if text in (r["binding_message"] or "")]
        return requests if len(requests) == count else None

    return await wait_for(found, timeout=60, what=f"{count} pending request(s) with {text!r}")


@dataclass
class PolicyPayment:
    output: str
    workflow_id: str
    requests: list[dict[str, Any]]  # the approvals the policy asked for


async def pay_by_policy(
    amount: str, approvals: int, *, server: DevServer, op: TestOP, payment_api: str, **settings: str
) -> PolicyPayment:
    """Runs the example for a payee of its own, approves the `approvals` requests it makes, and
    returns once it has exited 0."""
    reference = f"INV-{uuid.uuid4().hex[:6].upper()}"
    run = example(
        "pay_by_policy", "--amount", amount, "--reference", reference, "--creditor-name", f"Payee {reference}",
        server=server, op=op, payment_api=payment_api, **settings,
    )  # fmt: skip
    try:
        requests = await pending_with(op, f"Payee {reference}", approvals)
        for request in requests:
            op.approve(request["auth_req_id"])
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, output
    return PolicyPayment(output, output.split("agent workflow ")[1].split(":")[0], requests)


async def test_pay_by_policy_sends_a_large_payment_to_two_people(
    temporal_server: DevServer, op: TestOP, payment_api: str
) -> None:
    paid = await pay_by_policy("25000.00", 2, server=temporal_server, op=op, payment_api=payment_api)
    assert sorted(r["account"] for r in paid.requests) == ["alice", "bob"]
    assert {r["acr_values"] for r in paid.requests} == {"urn:example:acr:mfa"}
    assert "policy: rule large-payment (quorum)" in paid.output
    assert "approver alice: approved, sub alice, counted True" in paid.output
    assert "approver bob: approved, sub bob, counted True" in paid.output
    assert len(payments(payment_api, paid.workflow_id)) == 1


async def test_a_service_account_asks_only_above_its_threshold(
    temporal_server: DevServer, op: TestOP, payment_api: str
) -> None:
    target = f"billing-{uuid.uuid4().hex[:6]}"
    routine = example(
        "service_account", "--job", "rotate-keys", "--target", target, "--risk", "0.7",
        server=temporal_server, op=op, payment_api=payment_api,
    )  # fmt: skip
    output, _ = routine.communicate(timeout=120)
    assert routine.returncode == 0, output
    assert "policy: rule routine-service-job (none)" in output
    assert f"job: rotate-keys on {target}: done (unasked)" in output
    assert [r for r in op.requests() if target in (r["binding_message"] or "")] == []

    risky = example(
        "service_account", "--job", "drop-table", "--target", target, "--risk", "0.71",
        server=temporal_server, op=op, payment_api=payment_api,
    )  # fmt: skip
    try:
        [request] = await pending_with(op, f"Run drop-table on {target}", 1)
        assert request["acr_values"] == "urn:example:acr:mfa" and request["account"] == "alice"
        op.approve(request["auth_req_id"])
        output, _ = risky.communicate(timeout=120)
    finally:
        risky.kill()
    assert risky.returncode == 0, output
    assert "policy: rule risky-service-job (one)" in output
    assert f"job: drop-table on {target}: done (approved by alice)" in output


def test_a_malformed_policy_stops_the_example(
    temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\nname = "x"\napproval = "one"\n')
    run = example(
        "service_account", "--job", "j", "--target", "t", "--risk", "0.1", "--policy", str(policy),
        server=temporal_server, op=op, payment_api=payment_api,
    )  # fmt: skip
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 2
    assert (
        output.strip()
        == f"error: policy file {policy}: rules[0] (x): approval 'one' takes exactly one approver and no quorum"
    )

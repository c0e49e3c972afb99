"""The policy examples as a user runs them against the demo's servers.

The payment agent under the amount policy and the service account that asks only above its risk
threshold, each its own process with an in-process worker reading the example policy file."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.support.op import TestOP
from tests.support.policy_examples import example, pay_by_policy, pending_with
from tests.support.stack import payments
from tests.support.temporal import DevServer


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

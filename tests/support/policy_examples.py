"""The policy examples run as a user runs them, against the e2e tests' servers."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, clean_env
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
    """The `count` pending requests whose binding message or authorization_details hold `text`.

    A policy's message template may leave a field out (the medium payment names the IBAN, not
    the creditor); the approver page shows the authorization_details too."""

    def shown(request: dict[str, Any]) -> str:
        return (request["binding_message"] or "") + json.dumps(request.get("authorization_details"))

    def found() -> list[dict[str, Any]] | None:
        requests = [r for r in op.requests("pending") if text in shown(r)]
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

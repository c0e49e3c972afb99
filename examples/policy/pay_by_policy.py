"""The payment agent under the amount policy, against a running `temporal-ciba-examples demo`.

    python -m temporal_ciba_examples.policy.pay_by_policy --amount 25000.00 [--owner alice] [--treasury bob]

The example policy (policy.toml): under 100 nobody is asked (the example payment API pays only
with an approved token, so the agent reports the decision and stops); up to 10,000 the owner
approves with multi-factor authentication; above, the owner and treasury (bob), two different
people. Needs CIBA_PAYMENT_API_URL besides the worker's settings.
"""

from __future__ import annotations

import argparse
import uuid

from temporalio.client import Client

from temporal_ciba import ConfigError, OPSettings, load_settings
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.payment_agent.models import PaymentAction, PaymentAgentInput, PaymentAgentResult
from temporal_ciba_examples.payment_agent.plugin import PaymentAgentSettings, payment_http_client
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from temporal_ciba_examples.policy.policy_runner import USE_EXISTING, main, parser, run_under_policy


def arguments() -> argparse.ArgumentParser:
    options = parser("temporal_ciba_examples.policy.pay_by_policy", "Pay an invoice as the amount policy says.")
    options.add_argument("--amount", required=True, help="e.g. 50.00, 500.00 or 25000.00")
    options.add_argument("--owner", default="alice", help="login_hint of the account owner")
    options.add_argument("--treasury", help="login_hint of the second approver (default: the policy's)")
    options.add_argument("--creditor-name", default="ACME GmbH")
    options.add_argument("--reference", help="default: INV- and six random characters")
    return options


async def pay(options: argparse.Namespace) -> int:
    api = load_settings(PaymentAgentSettings)
    if api.payment_api_url is None:
        raise ConfigError("configuration error: CIBA_PAYMENT_API_URL is required")
    action = PaymentAction(
        amount=options.amount,
        currency="EUR",
        creditor_name=options.creditor_name,
        creditor_iban="DE02 1001 0010 9307 1186 03",
        reference=options.reference or f"INV-{uuid.uuid4().hex[:6].upper()}",
    )
    parties = {"treasury": options.treasury} if options.treasury else {}
    agent_input = PaymentAgentInput(action=action, approver=options.owner, use_policy=True, parties=parties)
    workflow_id = options.workflow_id or f"pay-by-policy-{uuid.uuid4().hex[:10]}"

    async def start(client: Client, task_queue: str) -> PaymentAgentResult:
        handle = await client.start_workflow(
            PaymentAgentWorkflow.run,
            agent_input,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=USE_EXISTING,
        )
        print(f"agent workflow {workflow_id}: paying EUR {action.amount} as the policy says", flush=True)
        return await handle.result()

    # The payment presents the token as the OP bound it: with a DPoP proof, or over a connection
    # with the client certificate.
    op = load_settings(OPSettings)
    async with payment_http_client(op.client_certificate()) as http:
        result: PaymentAgentResult = await run_under_policy(
            options,
            workflows=[PaymentAgentWorkflow],
            activities=lambda s: [
                PaymentActivities(
                    http, str(api.payment_api_url), TokenSealer(s.token_key_bytes), dpop=op.dpop
                ).execute_payment
            ],
            start=start,
        )
    outcome = result.outcome
    if outcome.policy is not None:
        print(f"policy: rule {outcome.policy.rule} ({outcome.policy.approval}): {outcome.policy.reason}")
    for approver in outcome.approvers or []:
        print(f"approver {approver.login_hint}: {approver.status}, sub {approver.sub}, counted {approver.counted}")
    print(f"approval: {outcome.status}: {outcome.reason}")
    print(f"payment: {result.receipt.payment_id if result.receipt else 'not made'}")
    return 0 if result.receipt is not None else 1


if __name__ == "__main__":
    options = arguments().parse_args()
    main(lambda: pay(options))

"""Start the payment agent once and print what came of it.

    python -m temporal_ciba_examples.payment_agent.starter --approver alice [--amount 120.00 ...]

Against a running payment worker (`temporal-ciba-examples payment-worker`) on the same task
queue (CIBA_TASK_QUEUE, default ciba-approvals) with the same CIBA_PAYLOAD_KEY. Exit status: 0
approved and paid, 1 any other outcome, 2 a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from temporal_ciba import CibaPlugin, ConfigError
from temporal_ciba_examples.payment_agent.models import PaymentAction, PaymentAgentInput, PaymentAgentResult
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m temporal_ciba_examples.payment_agent.starter",
        description="Pay an invoice through the payment agent, approved by CIBA.",
    )
    parser.add_argument("--approver", required=True, help="login_hint of the person who approves")
    parser.add_argument("--amount", default="120.00")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--creditor-name", default="ACME GmbH")
    parser.add_argument("--creditor-iban", default="DE02100100109307118603")
    parser.add_argument("--reference", help="default: a new invoice number")
    parser.add_argument("--requested-expiry", type=int, default=600, help="seconds the approver has to decide")
    parser.add_argument("--workflow-id", help="default: payment-<reference>")
    return parser


async def start(args: argparse.Namespace) -> PaymentAgentResult:
    key = os.environ.get("CIBA_PAYLOAD_KEY")
    if not key:
        raise ConfigError("CIBA_PAYLOAD_KEY is not set: the payload key of the worker")
    reference = args.reference or f"INV-{uuid.uuid4().hex[:6].upper()}"
    action = PaymentAction(
        amount=args.amount,
        currency=args.currency,
        creditor_name=args.creditor_name,
        creditor_iban=args.creditor_iban,
        reference=reference,
    )
    config: dict[str, Any] = {"target_host": "localhost:7233", **ClientConfig.load_client_connect_config()}
    client = await Client.connect(**config, plugins=[CibaPlugin(payload_key=base64.b64decode(key))])
    workflow_id = args.workflow_id or f"payment-{reference.lower()}"
    handle = await client.start_workflow(
        PaymentAgentWorkflow.run,
        PaymentAgentInput(action=action, approver=args.approver, requested_expiry=args.requested_expiry),
        id=workflow_id,
        task_queue=os.environ.get("CIBA_TASK_QUEUE", "ciba-approvals"),
    )
    print(workflow_id, file=sys.stderr, flush=True)
    return await handle.result()


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(start(args))
    except ConfigError as exc:
        print(f"payment starter: {exc}", file=sys.stderr)
        return 2
    outcome = result.outcome
    if result.receipt is not None:
        print(f"approved by {outcome.sub}; payment {result.receipt.payment_id}")
        return 0
    print(f"{outcome.status}: {outcome.reason}; nothing paid")
    return 1


if __name__ == "__main__":
    code = run()
    # A short-lived Temporal client can crash at interpreter exit (sdk-python issue 300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

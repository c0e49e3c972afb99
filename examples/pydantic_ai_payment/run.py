"""Run the PydanticAI payment agent once, against a running `temporal-ciba-examples demo`.

    python -m temporal_ciba_examples.pydantic_ai_payment.run --approver alice [--amount 120.00 ...]

It starts its own worker in this process (PydanticAIPlugin and CibaPlugin, the CIBA_* settings of
docs/operations/configuration.md plus CIBA_PAYMENT_API_URL), runs the agent workflow, and prints the
approval's outcome and the model's final answer. Given an existing --workflow-id it attaches to
that run instead of starting another one (after a crash, say). Exit status: 0 approved, 1 any
other outcome, 2 a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from temporal_ciba import ApprovalOutcome, CibaPlugin, ConfigError, OPSettings, ensure_search_attributes, load_settings
from temporal_ciba.agents import approval_workflow_id
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest
from temporal_ciba_examples.payment_agent.plugin import PaymentAgentSettings, payment_http_client
from temporal_ciba_examples.pydantic_ai_payment.workflows import (
    PayerDeps,
    PydanticAIPaymentAgentWorkflow,
    PydanticAIPaymentInput,
)

DEFAULT_TASK_QUEUE = "temporal-ciba-pydantic-ai"
# The scripted model's one tool call (pydantic_ai_agent.scripted_model).
PAY_CALL_ID = "pay-1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m temporal_ciba_examples.pydantic_ai_payment.run",
        description="Pay an invoice through the PydanticAI payment agent, approved by CIBA.",
    )
    parser.add_argument("--approver", required=True, help="login_hint of the person who approves")
    parser.add_argument("--expected-subject", help="the approver's `sub` at the OP; anyone else is rejected")
    parser.add_argument("--requested-expiry", type=int, help="seconds the approver has to decide")
    parser.add_argument("--amount", default="120.00")
    parser.add_argument("--currency", default="EUR")
    parser.add_argument("--creditor-name", default="ACME GmbH")
    parser.add_argument("--creditor-iban", default="DE02 1001 0010 9307 1186 03")
    # A new reference per run: the payment API pays one action once (PAYMENT_API_ONE_PAYMENT_PER_ACTION).
    parser.add_argument("--reference", help="default: INV- and six random characters")
    parser.add_argument("--workflow-id", help="default: a new one; an existing run is attached to")
    parser.add_argument("--task-queue", default=DEFAULT_TASK_QUEUE, help="the in-process worker's task queue")
    return parser


def approval_id(workflow_id: str, action: PaymentAction) -> str:
    """The approval's workflow id, as the agent workflow derived it (tool_approval_id, with the
    payment's action digest the pay tool's approval is bound to)."""
    return approval_workflow_id(workflow_id, PAY_CALL_ID, action_digest(action))


class UsageError(Exception):
    """Bad arguments, configuration or connection: one line, exit status 2."""


def payment_of(args: argparse.Namespace) -> tuple[PaymentAction, PayerDeps]:
    try:
        action = PaymentAction(
            amount=args.amount,
            currency=args.currency,
            creditor_name=args.creditor_name,
            creditor_iban=args.creditor_iban,
            reference=args.reference or f"INV-{uuid.uuid4().hex[:6].upper()}",
        )
        deps = PayerDeps(
            approver=args.approver, expected_subject=args.expected_subject, requested_expiry=args.requested_expiry
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "the payment"
        raise UsageError(f"{option}: {error['msg']}") from None
    return action, deps


async def run(args: argparse.Namespace) -> int:
    action, deps = payment_of(args)
    settings = load_settings(PaymentAgentSettings)
    op = load_settings(OPSettings)
    if settings.payment_api_url is None:
        raise ConfigError("configuration error: CIBA_PAYMENT_API_URL is required")
    # PydanticAIPlugin first: CibaPlugin keeps its payload converter and adds the encryption.
    config: dict[str, Any] = {"target_host": "localhost:7233", **ClientConfig.load_client_connect_config()}
    try:
        client = await Client.connect(**config, plugins=[PydanticAIPlugin(), CibaPlugin.from_env()])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot connect to Temporal at {config['target_host']}: {first}") from None
    await ensure_search_attributes(client)
    workflow_id = args.workflow_id or f"pydantic-ai-payment-{uuid.uuid4().hex[:10]}"
    # The payment presents the token as the OP bound it: with a DPoP proof, or over a connection
    # with the client certificate.
    async with payment_http_client(op.client_certificate()) as http:
        payments = PaymentActivities(
            http, settings.payment_api_url, TokenSealer(settings.token_key_bytes), dpop=op.dpop
        )
        async with Worker(
            client,
            task_queue=args.task_queue,
            workflows=[PydanticAIPaymentAgentWorkflow],
            activities=[payments.pay_tool_call],
        ):
            handle = await client.start_workflow(
                PydanticAIPaymentAgentWorkflow.run,
                PydanticAIPaymentInput(action=action, deps=deps),
                id=workflow_id,
                task_queue=args.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
            print(f"agent workflow {workflow_id}: waiting for {args.approver} to approve", flush=True)
            result = await handle.result()
            approval = client.get_workflow_handle(approval_id(workflow_id, action), result_type=ApprovalOutcome)
            outcome = await approval.result()
    print(f"approval: {outcome.status}: {outcome.reason}", flush=True)
    print(f"model: {result.answer}", flush=True)
    return 0 if outcome.approved else 1


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = asyncio.run(run(args))
    except (ConfigError, UsageError) as exc:
        print(str(exc).splitlines()[0], file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # A short-lived Temporal client can crash at interpreter exit (sdk-python issue 300).
    os._exit(code)


if __name__ == "__main__":
    main()

"""The payment agent on PydanticAI: a model that calls a `pay` tool, gated by CIBA.

    prompt (the invoice) ──▶ model ──▶ pay(payment) ──▶ CibaToolApprovals asks the approver
                                                            │ approved: the tool pays (activity,
                                                            │   open_tool_call), exactly once
                                                            │ otherwise: the model reads one line why
                              model's final answer ◀────────┘

The model is PydanticAI's offline FunctionModel, scripted: it reads the invoice from the prompt,
calls `pay` with it, and answers from the tool's result. A real model slots in unchanged.
"""

from __future__ import annotations

import json
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.durable_exec.temporal import TemporalDurability
    from pydantic_ai.exceptions import ToolFailed
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from temporal_ciba.agents import ToolApproval, ToolArguments
    from temporal_ciba.agents.pydantic_ai import CibaToolApprovals, approved_call
    from temporal_ciba_examples.payment_agent.activities import PaymentActivities
    from temporal_ciba_examples.payment_agent.models import (
        PaymentAction,
        action_digest,
        authorization_details,
        binding_message,
        summary,
    )

AGENT_NAME = "payment_agent"
PAY_TOOL = "pay"
INVOICE_MARKER = "Invoice: "


class PayerDeps(BaseModel):
    """Who approves this run's payments, and how strongly (the agent's dependencies)."""

    approver: str = Field(min_length=1, description="login_hint of the person who must approve")
    expected_subject: str | None = None
    scope: str = "openid payments"
    acr_values: str | None = None
    requested_expiry: int | None = Field(default=None, gt=0)


class PydanticAIPaymentInput(BaseModel):
    action: PaymentAction
    deps: PayerDeps


class PydanticAIPaymentResult(BaseModel):
    answer: str = Field(description="the model's final answer")


def _payment(arguments: ToolArguments) -> PaymentAction:
    return PaymentAction.model_validate(arguments["payment"])


def _deps(arguments: ToolArguments) -> PayerDeps:
    deps = arguments.context.deps
    assert isinstance(deps, PayerDeps)
    return deps


# What the approver sees is the payment itself (as the original agent shows it); the payment
# API checks the granted authorization_details against the payment it is asked to make. The
# approval is bound to the payment's digest, the one the payment API and the authorization_details
# name, so the decision record states one digest (`temporal-ciba audit verify` checks they agree).
PAY_APPROVAL = ToolApproval(
    action_digest=lambda a: action_digest(_payment(a)),
    login_hint=lambda a: _deps(a).approver,
    expected_subject=lambda a: _deps(a).expected_subject,
    binding_message=lambda a: binding_message(_payment(a), action_digest(_payment(a))),
    authorization_details=lambda a: authorization_details(_payment(a), action_digest(_payment(a))),
    summary=lambda a: summary(_payment(a)),
    scope=lambda a: _deps(a).scope,
    acr_values=lambda a: _deps(a).acr_values,
    requested_expiry=lambda a: _deps(a).requested_expiry,
)


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for an LLM: pay the invoice in the prompt, then report what the tool said."""
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    for part in last.parts:
        if isinstance(part, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"The payment tool answered: {part.model_response_str()}")])
        if isinstance(part, UserPromptPart) and isinstance(part.content, str) and INVOICE_MARKER in part.content:
            invoice = json.loads(part.content.split(INVOICE_MARKER, 1)[1])
            return ModelResponse(parts=[ToolCallPart(PAY_TOOL, {"payment": invoice}, tool_call_id="pay-1")])
    return ModelResponse(parts=[TextPart("I have nothing to pay.")])


def build_agent(
    approvals: CibaToolApprovals, *, name: str = AGENT_NAME, model: FunctionModel | None = None
) -> Agent[PayerDeps, str]:
    """The payment agent, its `pay` tool gated by `approvals` (tests give their own capability or
    model; `name`, unique per worker, names the agent's activities)."""
    agent = Agent(
        model or FunctionModel(scripted_model),
        name=name,
        deps_type=PayerDeps,
        instructions="Pay the invoice you are given with the pay tool, then say what happened.",
        capabilities=[TemporalDurability(), approvals],
    )

    # `temporal: False`: the tool runs in the workflow and its side effect in our own activity,
    # which holds the sealer and the payment API's client.
    @agent.tool(name=PAY_TOOL, metadata={"temporal": False})
    async def pay(ctx: RunContext[PayerDeps], payment: PaymentAction) -> str:
        """Pay an invoice. Needs the approver's confirmation on their phone."""
        try:
            receipt = await workflow.execute_activity_method(
                PaymentActivities.pay_tool_call,
                approved_call(ctx, payment=payment),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=20),
            )
        except ActivityError as exc:
            cause = exc.cause
            # Refused for good (no retry can change it): the model hears why, in one line.
            if isinstance(cause, ApplicationError) and cause.type in (
                "GrantRefused",
                "ActionMismatch",
                "PaymentRefused",
            ):
                raise ToolFailed(f"The {PAY_TOOL} call was not run: {cause.message}.") from None
            raise
        workflow.logger.info("paid: %s", receipt.payment_id)
        return f"paid, payment id {receipt.payment_id}"

    return agent


payment_agent = build_agent(CibaToolApprovals({PAY_TOOL: PAY_APPROVAL}))


def prompt_for(action: PaymentAction) -> str:
    return f"Please pay this invoice. {INVOICE_MARKER}{action.model_dump_json()}"


@workflow.defn
class PydanticAIPaymentAgentWorkflow:
    """The payment agent as a PydanticAI agent run in a Temporal workflow."""

    __pydantic_ai_agents__ = (payment_agent,)

    @workflow.run
    async def run(self, input: PydanticAIPaymentInput) -> PydanticAIPaymentResult:
        result = await payment_agent.run(prompt_for(input.action), deps=input.deps)
        return PydanticAIPaymentResult(answer=result.output)

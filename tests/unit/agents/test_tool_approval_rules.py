"""Each rule of the tool gate, one at a time: what a call's request and policy action are made
of, when it is asked at all, the one line a refusal gives the model, and the approval's workflow
id, in a workflow on the time-skipping test server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba._policy import ApprovalPolicy, PolicyRule
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.agents import (
    ToolApproval,
    ToolArguments,
    approval_workflow_id,
    ask_for_tool_call,
    refusal_for_model,
    tool_action_digest,
)
from tests.support.scripted_op import ScriptedOP, approved
from tests.support.workflow_environment import plugin_worker

ARGS = {"holder": "alice", "amount": 120}


def call(arguments: dict[str, Any] | None = None) -> ToolArguments:
    return ToolArguments(ARGS if arguments is None else arguments, tool_name="pay", call_id="call_1", context="ctx")


def test_tool_arguments_carry_the_call() -> None:
    arguments = call()
    assert dict(arguments) == ARGS
    assert (arguments.tool_name, arguments.call_id, arguments.context) == ("pay", "call_1", "ctx")


def test_every_request_field_is_derived_from_this_call() -> None:
    # Functions of the call receive the call itself (a value that ignored it would pass unnoticed).
    def of(field: str) -> Any:
        return lambda args: {"holder": args["holder"], "field": field}

    gate = ToolApproval(
        login_hint=lambda args: args["holder"],
        binding_message=lambda args: f"Pay {args['amount']}",
        expected_subject=lambda args: f"{args['holder']}-sub",
        authorization_details=lambda args: [{"type": "payment", "amount": args["amount"]}],
        summary=lambda args: [f"pay {args['amount']}"],
        scope=lambda args: f"openid {args['holder']}",
        acr_values=lambda args: f"acr-{args['holder']}",
        requested_expiry=lambda args: args["amount"],
        resource=lambda args: [f"https://rs.example/{args['holder']}"],
        audience=lambda args: f"aud-{args['holder']}",
        claims=of("claims"),
    )
    request = gate.request_for(call())
    assert ToolApproval(login_hint="alice").request_for(call()).on_lost_grant == "stop"
    assert ToolApproval(login_hint="alice", on_lost_grant="ask_again").request_for(call()).on_lost_grant == "ask_again"
    assert request.login_hint == "alice" and request.binding_message == "Pay 120"
    assert request.expected_subject == "alice-sub"
    assert request.authorization_details == [{"type": "payment", "amount": 120}]
    assert request.summary == ["pay 120"] and request.scope == "openid alice" and request.acr_values == "acr-alice"
    assert request.requested_expiry == 120 and request.resource == ["https://rs.example/alice"]
    assert request.audience == "aud-alice" and request.claims == {"holder": "alice", "field": "claims"}
    assert request.action_digest == tool_action_digest("pay", ARGS)


@pytest.mark.parametrize("hint", ["login_hint_token", "id_token_hint"])
def test_the_hint_tokens_are_derived_from_the_call_and_kept_secret(hint: str) -> None:
    gate = ToolApproval(**{hint: lambda args: f"token-of-{args['holder']}"})  # type: ignore[arg-type]
    request = gate.request_for(call())
    secret = getattr(request, hint)
    assert secret.get_secret_value() == "token-of-alice" and "token-of-alice" not in repr(request)


def test_the_default_summary_is_the_tool_and_at_most_nineteen_arguments_of_at_most_200_characters() -> None:
    many = {f"a{index:02}": index for index in range(25)} | {"long": "x" * 300}
    summary = ToolApproval(login_hint="alice").request_for(call(many)).summary
    assert summary is not None and summary[0] == "tool pay" and len(summary) == 20
    assert summary[1] == "a00 = 0" and summary[19] == "a18 = 18"
    long_line = ToolApproval(login_hint="alice").request_for(call({"long": "x" * 300})).summary
    assert long_line is not None and len(long_line[1]) == 200 and long_line[1].startswith('long = "xxx')


def test_the_policy_s_action_is_this_call() -> None:
    gate = ToolApproval(
        login_hint=lambda args: args["holder"],
        action_type=lambda args: f"payment-{args['amount']}",
        authorization_details=lambda args: [{"type": "payment", "amount": args["amount"]}],
        risk=lambda args: args["amount"] / 10,
        parties=lambda args: {"owner": f"{args['holder']}-owner"},
    )
    action = gate.action_for(call())
    assert action.type == "payment-120" and action.risk == 12.0
    assert action.authorization_details == [{"type": "payment", "amount": 120}]
    assert action.parties == {"approver": "alice", "owner": "alice-owner"}
    assert action.digest == tool_action_digest("pay", ARGS)
    # Without an action type the tool's name is the type; without a login_hint nobody is "approver".
    bare = ToolApproval(login_hint_token="t").action_for(call())
    assert bare.type == "pay" and bare.parties == {} and bare.risk is None and bare.authorization_details is None


SMALL_UNASKED = ApprovalPolicy(
    rules=[
        PolicyRule(name="small", action="pay", match={"risk": {"at_most": 50}}, approval="none"),
        PolicyRule(name="large", approval="one", approvers=["approver"]),
    ]
)


@pytest.mark.parametrize(("amount", "asked"), [(120, False), (1200, True)])
def test_a_policy_decides_on_this_call_whether_to_ask(amount: int, asked: bool) -> None:
    gate = ToolApproval(login_hint="alice", risk=lambda args: args["amount"] / 10, policy=SMALL_UNASKED)
    assert gate.applies_to(call({"amount": amount})) is asked


def test_when_comes_before_the_policy_and_no_policy_means_ask() -> None:
    assert ToolApproval(login_hint="alice").applies_to(call()) is True
    always_ask = ApprovalPolicy(rules=[PolicyRule(name="all", approval="one", approvers=["approver"])])
    never = ToolApproval(login_hint="alice", when=lambda args: False, policy=always_ask)
    assert never.applies_to(call()) is False


def test_a_policy_that_cannot_decide_asks() -> None:
    # No rule matches: require_approval then ends it as a policy error, and nothing runs unasked.
    undecided = ApprovalPolicy(rules=[PolicyRule(name="other", action="deploy", approval="none")])
    assert ToolApproval(login_hint="alice", policy=undecided).applies_to(call()) is True


OUTCOME_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "error", "reason", "line"),
    [
        ("denied", "access_denied", "alice denied it", "The pay call was not run: alice denied it."),
        (
            "expired",
            "expired_token",
            "late",
            "The pay call was not run: nobody approved it before the request expired.",
        ),
        ("cancelled", None, "cancelled before a decision", "The pay call was not run: the approval was cancelled."),
        (
            "rejected",
            "sub_mismatch",
            "x",
            "The pay call was not run: the approval failed validation (sub_mismatch) and was discarded.",
        ),
        (
            "rejected",
            None,
            "x",
            "The pay call was not run: the approval failed validation (rejected) and was discarded.",
        ),
        (
            "error",
            None,
            "the OP\n  is down",
            "The pay call was not run: the approval could not be obtained: the OP is down.",
        ),
    ],
)
def test_the_refusal_line_for_each_outcome(status: Any, error: str | None, reason: str, line: str) -> None:
    outcome = ApprovalOutcome(status=status, workflow_id="w", error=error, reason=reason, decided_at=OUTCOME_TIME)
    assert refusal_for_model("pay", outcome) == line


def test_the_approval_id_keeps_a_safe_call_id_of_up_to_64_characters_whole() -> None:
    digest = tool_action_digest("pay", ARGS)
    longest = "c" * 64
    assert approval_workflow_id("agent", longest, digest) == f"agent.tool-{longest}-{digest[:12]}"
    hashed = approval_workflow_id("agent", longest + "c", digest)
    assert hashed.startswith(f"agent.tool-{'c' * 32}-") and hashed.endswith(f"-{digest[:12]}")
    assert len(hashed) == len("agent.tool-") + 32 + 1 + 16 + 1 + 12


class PayCall(BaseModel):
    arguments: dict[str, Any]
    policy: ApprovalPolicy | None = None


@workflow.defn
class PayingAgent:
    @workflow.run
    async def run(self, input: PayCall) -> ApprovalOutcome:
        gate = ToolApproval(
            login_hint=lambda args: args["holder"],
            action_type=lambda args: "payment",
            policy=input.policy,
        )
        return await ask_for_tool_call(gate, ToolArguments(input.arguments, tool_name="pay", call_id="call_1"))


async def ask(env: WorkflowEnvironment, phones: ScriptedOP, input: PayCall) -> tuple[str, ApprovalOutcome]:
    task_queue = f"tools-{uuid.uuid4().hex[:8]}"
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    async with plugin_worker(env, task_queue, PayingAgent, CibaApprovalWorkflow, activities=phones.activities):
        outcome = await env.client.execute_workflow(PayingAgent.run, input, id=agent_id, task_queue=task_queue)
    return agent_id, outcome


async def test_a_tool_call_is_asked_under_its_own_id_for_its_digest(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    agent_id, outcome = await ask(env, phones, PayCall(arguments=ARGS))
    digest = tool_action_digest("pay", ARGS)
    assert outcome.status == "approved" and outcome.action_digest == digest
    assert outcome.workflow_id == approval_workflow_id(agent_id, "call_1", digest)
    (asked,) = phones.asked
    assert asked.login_hint == "alice" and asked.action_digest == digest and asked.binding_message.startswith("pay ")


async def test_the_policy_sees_the_call_s_action_and_chooses_the_approver(env: WorkflowEnvironment) -> None:
    # The rule matches only the action type the gate derives, and names the approver by role.
    policy = ApprovalPolicy(
        rules=[PolicyRule(name="payments", action="payment", approval="one", approvers=["treasury"])],
        roles={"treasury": "carol"},
    )
    phones = ScriptedOP(env, {"carol": [approved("carol")]})
    _, outcome = await ask(env, phones, PayCall(arguments=ARGS, policy=policy))
    assert outcome.status == "approved" and outcome.sub == "carol"
    assert outcome.policy is not None and outcome.policy.rule == "payments" and outcome.policy.approvers == ["carol"]
    (asked,) = phones.asked
    assert asked.login_hint == "carol" and asked.action_digest == tool_action_digest("pay", ARGS)

"""require_approval under a policy, in workflow code.

On the time-skipping test server with the scripted approvers of tests.support.scripted_op: what
the policy lets through unasked, the one approver it names and how they are asked, the worker's
policy file read through its local activity, and every way a policy that cannot decide ends as
an error (never as an approval). The quorum has its own tests; the e2e tests prove the policy
file against the real OP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, PolicyDecision
from temporal_ciba._policy import ApprovalPolicy, PolicyAction, PolicyRule, PolicySource
from temporal_ciba._workflow import WORKER_POLICY, CibaApprovalWorkflow, require_approval
from tests.support.scripted_op import ScriptedOP, approved
from tests.support.temporal import ActivityStart, ActivityStarts, wait_for
from tests.support.workflow_environment import plugin_worker

DIGEST = "ab" * 32


class PolicyInput(BaseModel):
    policy: ApprovalPolicy | None = None  # None: the worker's policy file
    action_type: str | None = "change"  # None: no action given, the request's own is decided on
    parties: dict[str, str] = {}
    expected_subject: str | None = None
    # Where the one approver's approval runs, as require_approval takes it.
    approval_id: str | None = None
    approval_task_queue: str | None = None
    inline: bool = False


@workflow.defn
class PolicyAgent:
    @workflow.run
    async def run(self, input: PolicyInput) -> ApprovalOutcome:
        request = ApprovalRequest(
            login_hint="alice",
            binding_message="Change it",
            expected_subject=input.expected_subject,
            action_digest=DIGEST,
        )
        action = None
        if input.action_type is not None:
            action = PolicyAction(type=input.action_type, parties={"approver": "alice", **input.parties}, digest=DIGEST)
        return await require_approval(
            request,
            policy=input.policy or WORKER_POLICY,
            action=action,
            id=input.approval_id,
            task_queue=input.approval_task_queue,
            inline=input.inline,
        )


class WorkerPolicy:
    """The worker's `ciba.approval_policy` activity over a policy file, counting its attempts."""

    def __init__(self, path: Path | None) -> None:
        self.source = PolicySource(path)
        self.attempts = 0

    @activity.defn(name="ciba.approval_policy")
    async def approval_policy(self) -> ApprovalPolicy:
        self.attempts += 1
        return self.source.current()


@activity.defn(name="ciba.approval_policy")
async def unreadable_policy() -> ApprovalPolicy:
    raise ApplicationError("the policy store is down", non_retryable=True)


def policy_worker(
    env: WorkflowEnvironment,
    phones: ScriptedOP,
    task_queue: str,
    *,
    policy_activity: Callable[..., Any] | None = None,
    starts: ActivityStarts | None = None,
) -> Worker:
    return plugin_worker(
        env,
        task_queue,
        PolicyAgent,
        CibaApprovalWorkflow,
        activities=[*phones.activities, policy_activity or WorkerPolicy(None).approval_policy],
        interceptors=[starts] if starts else [],
    )


async def run(
    env: WorkflowEnvironment,
    phones: ScriptedOP,
    agent_input: PolicyInput,
    *,
    policy_activity: Callable[..., Any] | None = None,
    starts: ActivityStarts | None = None,
) -> ApprovalOutcome:
    task_queue = f"policy-{uuid.uuid4().hex[:8]}"
    async with policy_worker(env, phones, task_queue, policy_activity=policy_activity, starts=starts):
        return await env.client.execute_workflow(
            PolicyAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )


def one(approver: str = "approver", **rule: object) -> ApprovalPolicy:
    return ApprovalPolicy(
        rules=[PolicyRule(name="one", approval="one", approvers=[approver], **rule)],  # type: ignore[arg-type]
        roles={"treasury": "carol"},
    )


LET_THROUGH = ApprovalPolicy(rules=[PolicyRule(name="small", approval="none", reason="a small change")])
LET_THROUGH_FILE = '[[rules]]\nname = "from-file"\napproval = "none"\nreason = "the file says so"\n'


async def test_an_action_the_policy_lets_through_is_approved_unasked_and_recorded(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {})
    outcome = await run(env, phones, PolicyInput(policy=LET_THROUGH))
    assert outcome.status == "approved" and outcome.reason == "no approval needed: a small change (policy rule small)"
    assert outcome.policy == PolicyDecision(rule="small", reason="a small change", approval="none")
    assert outcome.action_digest == DIGEST and outcome.auth_req_id is None and outcome.sub is None
    assert outcome.workflow_id.startswith("agent-") and outcome.decided_at is not None
    assert phones.asked == []  # nobody was asked
    (record,) = phones.recorded
    assert record.outcome == outcome and record.request.login_hint == "alice"


async def test_one_approver_is_asked_with_the_rule_s_message_acr_and_expiry(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"carol": [approved("carol")]})
    policy = one("treasury", acr_values="urn:example:acr:mfa", requested_expiry=120, binding_message="{code} {type}")
    outcome = await run(env, phones, PolicyInput(policy=policy, expected_subject="alice-sub"))
    assert outcome.status == "approved" and outcome.sub == "carol"
    assert outcome.policy == PolicyDecision(
        rule="one", reason="any action", approval="one", approvers=["carol"], acr_values="urn:example:acr:mfa"
    )
    (asked,) = phones.asked
    assert asked.login_hint == "carol" and asked.acr_values == "urn:example:acr:mfa" and asked.requested_expiry == 120
    assert asked.binding_message == "VOV2 change"  # base32 of the digest's first bytes (ab ab ab), then the type
    assert asked.expected_subject is None  # the caller pinned alice, not carol
    assert asked.policy == outcome.policy and asked.action_digest == DIGEST


async def test_the_caller_s_approver_keeps_the_caller_s_pinned_subject_and_message(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    outcome = await run(env, phones, PolicyInput(policy=one(), expected_subject="alice-sub"))
    assert outcome.status == "approved" and outcome.policy is not None and outcome.policy.approvers == ["alice"]
    (asked,) = phones.asked
    assert asked.login_hint == "alice" and asked.expected_subject == "alice-sub"
    assert asked.binding_message == "Change it" and asked.acr_values is None and asked.requested_expiry is None


@pytest.mark.parametrize("inline", [True, False])
async def test_the_one_approver_s_approval_runs_where_the_caller_says(env: WorkflowEnvironment, inline: bool) -> None:
    """Inline or as a child, as the caller says (a short wait runs inline by default)."""
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    task_queue = f"policy-{uuid.uuid4().hex[:8]}"
    async with policy_worker(env, phones, task_queue):
        agent = await env.client.start_workflow(
            PolicyAgent.run,
            PolicyInput(policy=one(), inline=inline),
            id=f"agent-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        outcome = await agent.result()
        kinds = [event.event_type async for event in agent.fetch_history_events()]
    assert outcome.status == "approved"
    assert (outcome.workflow_id == agent.id) is inline  # decided in the agent itself, or in its child
    assert (EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in kinds) is inline


async def test_the_one_approver_s_approval_runs_under_the_id_and_queue_the_caller_gives(
    env: WorkflowEnvironment,
) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    agent_queue, approval_queue = f"policy-{uuid.uuid4().hex[:8]}", f"approvals-{uuid.uuid4().hex[:8]}"
    approval_id = f"approval-{uuid.uuid4().hex[:8]}"
    agent_input = PolicyInput(policy=one(), approval_id=approval_id, approval_task_queue=approval_queue)
    async with policy_worker(env, phones, agent_queue), policy_worker(env, phones, approval_queue):
        outcome = await env.client.execute_workflow(
            PolicyAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=agent_queue
        )
        description = await env.client.get_workflow_handle(approval_id).describe()
    assert outcome.status == "approved" and outcome.workflow_id == approval_id
    assert description.task_queue == approval_queue


async def test_without_an_action_the_policy_decides_on_the_request(env: WorkflowEnvironment) -> None:
    policy = ApprovalPolicy(
        rules=[
            PolicyRule(name="changes", action="change", approval="none"),
            PolicyRule(name="approvals", action="approval", approval="one", approvers=["approver"]),
        ]
    )
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    outcome = await run(env, phones, PolicyInput(policy=policy, action_type=None))
    assert outcome.policy is not None and outcome.policy.rule == "approvals" and outcome.policy.approvers == ["alice"]
    assert outcome.status == "approved" and [asked.login_hint for asked in phones.asked] == ["alice"]


async def test_the_worker_s_policy_file_decides_through_its_local_activity(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(LET_THROUGH_FILE)
    starts = ActivityStarts()
    outcome = await run(
        env, ScriptedOP(env, {}), PolicyInput(), policy_activity=WorkerPolicy(path).approval_policy, starts=starts
    )
    assert outcome.status == "approved" and outcome.policy is not None and outcome.policy.rule == "from-file"
    # A policy file broken by an edit is read again, 30 s apart at most, for up to ten minutes.
    assert starts.of("ciba.approval_policy") == [
        ActivityStart(
            "ciba.approval_policy",
            local=True,
            start_to_close=None,
            schedule_to_close=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
        )
    ]


async def test_a_policy_file_broken_by_an_edit_is_read_again_until_fixed(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(LET_THROUGH_FILE)
    policy = WorkerPolicy(path)
    path.write_text("[[rules]\n")  # an operator's edit, half done

    async def fix_once_read_twice() -> None:
        await wait_for(lambda: policy.attempts >= 2, what="two reads of the broken file")
        path.write_text(LET_THROUGH_FILE.replace("from-file", "fixed"))

    fixing = asyncio.create_task(fix_once_read_twice())
    outcome = await run(env, ScriptedOP(env, {}), PolicyInput(), policy_activity=policy.approval_policy)
    await fixing
    assert outcome.status == "approved" and outcome.policy is not None and outcome.policy.rule == "fixed"


@pytest.mark.parametrize(
    ("agent_input", "policy_activity", "reason"),
    [
        (PolicyInput(), None, "the worker has no approval policy (CIBA_POLICY_FILE)"),
        (
            PolicyInput(),
            unreadable_policy,
            "the worker's approval policy could not be read: the policy store is down",
        ),
        (
            PolicyInput(policy=one("nobody")),
            None,
            "the approval policy cannot decide: no approver for the role 'nobody': the action names none and the "
            "policy has none",
        ),
        (
            PolicyInput(policy=one(binding_message="{type} {type}"), action_type="x" * 100),
            None,
            "the approval policy made an invalid request: 1 validation error for ApprovalRequest",
        ),
    ],
    ids=["no-policy-file", "unreadable", "cannot-decide", "invalid-request"],
)
async def test_a_policy_that_cannot_decide_is_an_error_and_asks_nobody(
    env: WorkflowEnvironment, agent_input: PolicyInput, policy_activity: Callable[..., Any] | None, reason: str
) -> None:
    phones = ScriptedOP(env, {})
    outcome = await run(env, phones, agent_input, policy_activity=policy_activity)
    assert outcome.status == "error" and outcome.error == "policy_error" and outcome.reason == reason
    assert outcome.action_digest == DIGEST and outcome.workflow_id.startswith("agent-")
    assert outcome.decided_at is not None and phones.asked == [] and outcome.policy is None

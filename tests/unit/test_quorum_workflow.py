"""The quorum's own decisions in workflow code.

On the time-skipping test server with scripted activities (one script per approver): denials
that end it or only count, a deadline shared by all, and which access tokens are revoked. The
e2e tests prove it against the real OP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._approval import QUORUM_VETO_PATCH
from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    RedeemResult,
)
from temporal_ciba._policy import ApprovalPolicy, PolicyAction, PolicyRule
from temporal_ciba._quorum import run_quorum
from temporal_ciba._workflow import CibaApprovalWorkflow, require_approval
from tests.support.scripted_op import ScriptedOP, approved, wait_for_event, workflow_task_after
from tests.support.workflow_environment import plugin_worker

PENDING = RedeemResult(kind="pending")
DENIED = RedeemResult(kind="failed", error="access_denied", reason="denied")


class QuorumInput(BaseModel):
    policy: ApprovalPolicy
    requested_expiry: int | None = None
    approval_id: str | None = None  # the base of the approvers' workflow ids
    approval_task_queue: str | None = None
    action_digest: str | None = None


@workflow.defn
class QuorumAgent:
    @workflow.run
    async def run(self, input: QuorumInput) -> ApprovalOutcome:
        request = ApprovalRequest(
            login_hint="alice",
            binding_message="Change it",
            requested_expiry=input.requested_expiry,
            action_digest=input.action_digest,
        )
        action = PolicyAction(type="change", parties={"approver": "alice"})
        return await require_approval(
            request, policy=input.policy, action=action, id=input.approval_id, task_queue=input.approval_task_queue
        )


def quorum(n: int, *, on_denial: str = "end") -> ApprovalPolicy:
    rule = PolicyRule(
        name="three-eyes",
        approval="quorum",
        approvers=["approver", "b", "c"],
        quorum=n,
        on_denial=on_denial,  # type: ignore[arg-type]
    )
    return ApprovalPolicy(rules=[rule], roles={"b": "bob", "c": "carol"})


def quorum_worker(env: WorkflowEnvironment, phones: ScriptedOP, task_queue: str, **options: Any) -> Worker:
    return plugin_worker(env, task_queue, QuorumAgent, CibaApprovalWorkflow, activities=phones.activities, **options)


async def run(env: WorkflowEnvironment, phones: ScriptedOP, agent_input: QuorumInput) -> ApprovalOutcome:
    task_queue = f"quorum-{uuid.uuid4().hex[:8]}"
    async with quorum_worker(env, phones, task_queue):
        return await env.client.execute_workflow(
            QuorumAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )


def statuses(outcome: ApprovalOutcome) -> dict[str, str]:
    return {a.login_hint: a.status for a in outcome.approvers or []}


async def test_with_on_denial_continue_a_denial_only_counts_as_a_no(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")], "bob": [DENIED], "carol": [PENDING, approved("carol")]})
    outcome = await run(env, phones, QuorumInput(policy=quorum(2, on_denial="continue")))
    assert outcome.status == "approved", outcome.reason
    assert statuses(outcome) == {"alice": "approved", "bob": "denied", "carol": "approved"}
    assert outcome.sealed_access_token == "sealed-alice" and phones.revoked == ["sealed-carol"]
    # Named under the caller's approval id (its own id and the action's), with the policy's decision.
    assert outcome.workflow_id.startswith("agent-") and ".approval-" in outcome.workflow_id
    assert outcome.policy is not None and (outcome.policy.rule, outcome.policy.quorum) == ("three-eyes", 2)


async def test_the_approvers_run_under_the_id_and_queue_the_caller_gives(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")], "bob": [approved("bob")]})
    agent_queue, approval_queue = f"quorum-{uuid.uuid4().hex[:8]}", f"approvals-{uuid.uuid4().hex[:8]}"
    approval_id = f"approval-{uuid.uuid4().hex[:8]}"
    agent_input = QuorumInput(policy=quorum(2), approval_id=approval_id, approval_task_queue=approval_queue)
    async with quorum_worker(env, phones, agent_queue), quorum_worker(env, phones, approval_queue):
        agent = await env.client.start_workflow(
            QuorumAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=agent_queue
        )
        outcome = await agent.result()
        children = [
            event.start_child_workflow_execution_initiated_event_attributes
            async for event in agent.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        ]
    assert outcome.status == "approved" and outcome.workflow_id.startswith(f"{approval_id}.q-")  # alice's
    assert [child.workflow_id.split(".q-")[0] for child in children] == [approval_id] * 3
    assert [child.workflow_id.rsplit(".", 1)[1] for child in children] == ["0-alice", "1-bob", "2-carol"]
    # Each under the asking run's id: a later run under the same id asks anew, never reusing these.
    assert [child.workflow_id.split(".q-")[1].rsplit(".", 1)[0] for child in children] == [agent.result_run_id] * 3
    assert {child.task_queue.name for child in children} == {approval_queue}


async def test_a_denial_ends_it_and_cancels_the_rest(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [PENDING, PENDING, approved("alice")], "bob": [DENIED]})
    outcome = await run(env, phones, QuorumInput(policy=quorum(2)))
    assert (outcome.status, outcome.error) == ("denied", "access_denied")
    assert statuses(outcome) == {"alice": "cancelled", "bob": "denied", "carol": "cancelled"}
    assert outcome.sealed_access_token is None
    assert outcome.policy is not None and outcome.policy.rule == "three-eyes"


async def test_one_deadline_for_all(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")]})
    outcome = await run(env, phones, QuorumInput(policy=quorum(2), requested_expiry=60))
    assert outcome.status == "expired", outcome.reason
    assert statuses(outcome) == {"alice": "approved", "bob": "expired", "carol": "expired"}
    deadline = outcome.deadline
    assert deadline is not None
    # Both ran out at the quorum's deadline (the requested expiry from the start), not their own.
    for expired in (a for a in outcome.approvers or [] if a.status == "expired"):
        assert abs((expired.decided_at - deadline).total_seconds()) < 1
    assert phones.revoked == ["sealed-alice"]  # approved, but the quorum failed: nobody may use it
    assert outcome.policy is not None and outcome.policy.rule == "three-eyes"  # a failed quorum's too


async def test_the_same_person_under_two_hints_and_a_third_who_makes_it(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(
        env, {"alice": [approved("alice")], "bob": [approved("alice", "bob")], "carol": [PENDING, approved("carol")]}
    )
    outcome = await run(env, phones, QuorumInput(policy=quorum(2)))
    assert outcome.status == "approved", outcome.reason
    assert [(a.login_hint, a.counted) for a in outcome.approvers or []] == [
        ("alice", True),
        ("bob", False),
        ("carol", True),
    ]
    # The outcome carries alice's token; bob's (alice again) and carol's were revoked.
    assert outcome.sealed_access_token == "sealed-alice"
    assert sorted(phones.revoked) == ["sealed-bob", "sealed-carol"]


async def test_a_denial_landing_in_one_task_with_the_approvals_that_meet_n_vetoes_it(env: WorkflowEnvironment) -> None:
    """The agent's worker is away while alice denies and bob and carol approve: the three ends
    reach the agent in one workflow task, the denial first, and the quorum ends denied."""
    phones = ScriptedOP(env, {"alice": [DENIED], "bob": [approved("bob")], "carol": [approved("carol")]})
    agent_queue, approval_queue = f"quorum-{uuid.uuid4().hex[:8]}", f"approvals-{uuid.uuid4().hex[:8]}"
    agent_input = QuorumInput(policy=quorum(2), approval_task_queue=approval_queue)
    # No sticky queue: the agent's next task goes to its task queue, where the next worker polls.
    async with quorum_worker(env, phones, agent_queue, max_cached_workflows=0):
        agent = await env.client.start_workflow(
            QuorumAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=agent_queue
        )
        children = await started_children(agent, 3)
    async with quorum_worker(env, phones, approval_queue):  # the approvers decide; nobody reads it yet
        ends = [await env.client.get_workflow_handle(c, result_type=ApprovalOutcome).result() for c in children]
    assert [end.status for end in ends] == ["denied", "approved", "approved"]
    async with quorum_worker(env, phones, agent_queue):
        outcome = await agent.result()
    events = [event.event_type async for event in agent.fetch_history_events()]
    completed = [i for i, kind in enumerate(events) if kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED]
    tasks = [i for i, kind in enumerate(events) if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    assert len(completed) == 3 and not any(completed[0] < task < completed[-1] for task in tasks)  # one task
    assert (outcome.status, outcome.error) == ("denied", "access_denied"), outcome.reason
    assert outcome.sealed_access_token is None
    assert sorted(phones.revoked) == ["sealed-bob", "sealed-carol"]
    # The veto changed this run's commands (both tokens revoked): a patch marker (its payload is
    # encrypted), so a run recorded without it replays the way it went. The one patch this agent
    # can mark.
    patches = [
        event
        async for event in agent.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert len(patches) == 1


async def started_children(agent: WorkflowHandle[Any, Any], count: int) -> list[str]:
    """The ids of the agent's children, once the server has started `count` of them."""
    await wait_for_event(agent, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED, count=count)
    return [
        event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        async for event in agent.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    ]


DIGEST = "cd" * 32


async def test_a_quorum_cancelled_while_waiting_ends_cancelled_with_every_claim(env: WorkflowEnvironment) -> None:
    phones = ScriptedOP(env, {"alice": [approved("alice")], "bob": [PENDING] * 50, "carol": [PENDING] * 50})
    task_queue = f"quorum-{uuid.uuid4().hex[:8]}"
    approval_id = f"approval-{uuid.uuid4().hex[:8]}"
    agent_input = QuorumInput(policy=quorum(3), approval_id=approval_id, action_digest=DIGEST)
    async with quorum_worker(env, phones, task_queue):
        agent = await env.client.start_workflow(
            QuorumAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        children = await started_children(agent, 3)
        alice = next(child for child in children if child.endswith("-alice"))
        await env.client.get_workflow_handle(alice).result()  # approved before the cancellation
        await agent.cancel()
        outcome = await agent.result()
    assert (outcome.status, outcome.workflow_id) == ("cancelled", approval_id)
    assert outcome.reason == "the approval was cancelled before the quorum was reached"
    assert outcome.action_digest == DIGEST and outcome.deadline is not None and outcome.decided_at is not None
    assert set(statuses(outcome)) == {"alice", "bob", "carol"}
    assert outcome.sealed_access_token is None
    # alice's approval counts for nothing now: revoked, for the action, by the run that held it.
    (revocation,) = phones.access_token_revocations
    assert revocation.sealed_access_token == "sealed-alice" and revocation.auth_req_id == "req-alice"
    assert revocation.action_digest == DIGEST
    assert (revocation.holder_workflow_id, revocation.holder_run_id) == (agent.id, agent.result_run_id)


async def quorum_of(hints: Sequence[str], base_id: str, start_child: Callable[..., Any]) -> ApprovalOutcome:
    """A quorum of all of `hints`, whose approvals `start_child` starts, ending on a denial, due now."""
    requests = [ApprovalRequest(login_hint=hint, binding_message="Change it", action_digest=DIGEST) for hint in hints]
    return await run_quorum(
        requests,
        needed=len(requests),
        end_on_denial=True,
        base_id=base_id,
        deadline=workflow.now(),
        start_child=start_child,
        revoke_holder=(workflow.info().workflow_id, workflow.info().run_id),
    )


@workflow.defn
class QuorumWhoseStartsHang:
    """Runs a quorum whose children never finish starting: the caller is cancelled meanwhile."""

    @workflow.run
    async def run(self) -> ApprovalOutcome:
        async def never_started(request: ApprovalRequest, child_id: str) -> Any:
            await workflow.wait_condition(lambda: False)

        return await quorum_of(("alice", "bob"), "approval-hung", never_started)


async def test_a_quorum_cancelled_while_its_approvers_are_being_started_ends_cancelled(
    env: WorkflowEnvironment,
) -> None:
    """Nobody was asked yet: the outcome is a cancellation naming no approver, not a failed task."""
    task_queue = f"quorum-{uuid.uuid4().hex[:8]}"
    # Any exception out of the workflow code fails the run at once, rather than its task forever.
    async with plugin_worker(env, task_queue, QuorumWhoseStartsHang, workflow_failure_exception_types=[Exception]):
        agent = await env.client.start_workflow(
            QuorumWhoseStartsHang.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        while not [
            event
            async for event in agent.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        ]:
            await asyncio.sleep(0.05)  # waits for the server; decides nothing
        await agent.cancel()
        outcome = await agent.result()
    assert (outcome.status, outcome.workflow_id) == ("cancelled", "approval-hung")
    assert outcome.approvers == [] and outcome.sealed_access_token is None


@workflow.defn
class FailingApproval:
    """An approver's workflow that fails instead of returning an outcome."""

    @workflow.run
    async def run(self) -> ApprovalOutcome:
        raise ApplicationError("the approval's worker gave up", non_retryable=True)


@workflow.defn
class QuorumOfAFailingApprover:
    @workflow.run
    async def run(self) -> ApprovalOutcome:
        return await quorum_of(
            ("alice",),
            "approval-failing",
            lambda request, child_id: workflow.start_child_workflow(FailingApproval.run, id=child_id),
        )


async def test_an_approver_whose_workflow_fails_is_named_by_its_workflow_id(env: WorkflowEnvironment) -> None:
    """The quorum still decides: that approver's end is an error naming the child that failed."""
    task_queue = f"quorum-{uuid.uuid4().hex[:8]}"
    async with plugin_worker(
        env, task_queue, QuorumOfAFailingApprover, FailingApproval, workflow_failure_exception_types=[Exception]
    ):
        agent = await env.client.start_workflow(
            QuorumOfAFailingApprover.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        outcome = await agent.result()
    child = f"approval-failing.q-{agent.result_run_id}.0-alice"
    assert (outcome.status, outcome.error, outcome.workflow_id) == ("error", "approval_failed", child)
    assert outcome.reason == f"the approval workflow {child} ended without an outcome (quorum 1 of 1 not met)"
    assert outcome.action_digest == DIGEST  # a failed quorum's outcome still names the action
    [claims] = outcome.approvers or []
    assert (claims.status, claims.workflow_id, claims.error) == ("error", child, "approval_failed")


@workflow.defn
class ApprovalEndingWithoutOutcomeWhenCancelled:
    """An approver's workflow that waits, and fails instead of returning an outcome when cancelled."""

    @workflow.run
    async def run(self) -> ApprovalOutcome:
        try:
            await workflow.wait_condition(lambda: False)
        except asyncio.CancelledError:
            raise ApplicationError("the approval's worker gave up", non_retryable=True) from None
        raise AssertionError("waits until cancelled")


@workflow.defn
class QuorumOfApproversEndingWithoutOutcome:
    @workflow.run
    async def run(self) -> ApprovalOutcome:
        return await quorum_of(
            ("alice", "bob"),
            "approval-cancelled",
            lambda request, child_id: workflow.start_child_workflow(
                ApprovalEndingWithoutOutcomeWhenCancelled.run, id=child_id
            ),
        )


async def test_approvers_that_end_without_an_outcome_while_cancelled_are_named_by_their_workflow_ids(
    env: WorkflowEnvironment,
) -> None:
    """The quorum is cancelled while both approvers wait, and neither returns an outcome: each
    claim is an error naming that approver's own workflow, so an operator can find it."""
    task_queue = f"quorum-{uuid.uuid4().hex[:8]}"
    async with plugin_worker(
        env, task_queue, QuorumOfApproversEndingWithoutOutcome, ApprovalEndingWithoutOutcomeWhenCancelled
    ):
        agent = await env.client.start_workflow(
            QuorumOfApproversEndingWithoutOutcome.run, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        children = await started_children(agent, 2)
        # A workflow task completed after the last start: the cancellation finds them waiting, not starting.
        await workflow_task_after(
            agent,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            count=2,
        )
        await agent.cancel()
        outcome = await agent.result()
    assert children == [
        f"approval-cancelled.q-{agent.result_run_id}.{i}-{hint}" for i, hint in enumerate(["alice", "bob"])
    ]
    assert outcome.status == "cancelled"
    assert [(claims.status, claims.workflow_id, claims.error) for claims in outcome.approvers or []] == [
        ("error", child, "approval_failed") for child in children
    ]


async def test_a_run_from_before_the_veto_keeps_the_approval_its_history_recorded(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `workflow.patched(QUORUM_VETO_PATCH)` is false (a run recorded before the veto,
    replayed), a denial batched with the approvals that meet n does not veto: that run's outcome
    and revocations stay what they were."""
    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda patch_id: patch_id != QUORUM_VETO_PATCH and patched(patch_id))
    phones = ScriptedOP(env, {"alice": [DENIED], "bob": [approved("bob")], "carol": [approved("carol")]})
    agent_queue, approval_queue = f"quorum-{uuid.uuid4().hex[:8]}", f"approvals-{uuid.uuid4().hex[:8]}"
    agent_input = QuorumInput(policy=quorum(2), approval_task_queue=approval_queue)
    async with quorum_worker(env, phones, agent_queue, max_cached_workflows=0):
        agent = await env.client.start_workflow(
            QuorumAgent.run, agent_input, id=f"agent-{uuid.uuid4().hex[:8]}", task_queue=agent_queue
        )
        children = await started_children(agent, 3)
    async with quorum_worker(env, phones, approval_queue):
        for child in children:
            await env.client.get_workflow_handle(child, result_type=ApprovalOutcome).result()
    async with quorum_worker(env, phones, agent_queue):
        outcome = await agent.result()
    assert outcome.status == "approved" and outcome.sealed_access_token == "sealed-bob", outcome.reason
    assert phones.revoked == ["sealed-carol"]

"""One approval opens one action in one workflow run.

The access token is sealed to them, and the activity that acts opens it with its own
activity.info(), never with what its input says."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba._grant import GrantRefused, idempotency_key, open_access_token
from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.crypto import TokenSealer, access_token_context

SEALER = TokenSealer(os.urandom(32))
DIGEST = "a" * 64
AGENT, RUN = "agent-1", "run-1"


def approved(*, workflow_id: str = AGENT, run_id: str = RUN, digest: str | None = DIGEST) -> ApprovalOutcome:
    context = access_token_context("req-1", action_digest=digest, workflow_id=workflow_id, run_id=run_id)
    return ApprovalOutcome(
        status="approved",
        workflow_id=f"{AGENT}.approval",
        auth_req_id="req-1",
        reason="approved by alice",
        action_digest=digest,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
        sealed_access_token=SEALER.seal("the-access-token", context=context),
    )


def in_activity(workflow_id: str | None = AGENT, run_id: str | None = RUN) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id=run_id)
    return env


def test_the_run_that_asked_opens_it_for_the_approved_action() -> None:
    token = in_activity().run(open_access_token, SEALER, approved(), action_digest=DIGEST)
    assert token == "the-access-token"


@pytest.mark.parametrize(
    "workflow_id,run_id,digest,message",
    [
        ("attacker", RUN, DIGEST, "another workflow run"),  # scheduled from another workflow
        (AGENT, "run-2", DIGEST, "another workflow run"),  # a later run under a reused id
        (AGENT, RUN, "b" * 64, "action differs"),  # another action
        (None, None, DIGEST, "that a workflow scheduled"),  # not a workflow's activity
        (AGENT, None, DIGEST, "that a workflow scheduled"),  # a run id is needed as well as an id
        (None, RUN, DIGEST, "that a workflow scheduled"),
    ],
)
def test_anywhere_else_it_stays_shut(workflow_id: str | None, run_id: str | None, digest: str, message: str) -> None:
    with pytest.raises(GrantRefused, match=message):
        in_activity(workflow_id, run_id).run(open_access_token, SEALER, approved(), action_digest=digest)


def test_an_outcome_moved_to_another_action_stays_shut() -> None:
    # The attacker edits the outcome's digest to match their action: the seal still names the old one.
    moved = approved().model_copy(update={"action_digest": "b" * 64})
    with pytest.raises(GrantRefused, match="another workflow run or action"):
        in_activity().run(open_access_token, SEALER, moved, action_digest="b" * 64)


def test_only_an_approval_opens() -> None:
    denied = approved().model_copy(update={"status": "denied"})
    with pytest.raises(GrantRefused, match="denied"):
        in_activity().run(open_access_token, SEALER, denied, action_digest=DIGEST)


@pytest.mark.parametrize("missing", ["auth_req_id", "sealed_access_token"])
def test_an_approval_without_its_request_or_token_opens_nothing(missing: str) -> None:
    # Each is needed on its own: an approved outcome lacking either is no approval to use.
    incomplete = approved().model_copy(update={missing: None})
    with pytest.raises(GrantRefused, match="no approval to use"):
        in_activity().run(open_access_token, SEALER, incomplete, action_digest=DIGEST)


def test_idempotency_key_comes_from_the_calling_run() -> None:
    outcome = approved()
    key = in_activity().run(idempotency_key, outcome)
    assert key == in_activity().run(idempotency_key, outcome)  # every retry of the action
    assert key.startswith(f"{AGENT}:")
    assert key != in_activity(run_id="run-2").run(idempotency_key, outcome)
    other_approval = outcome.model_copy(update={"auth_req_id": "req-2"})
    assert key != in_activity().run(idempotency_key, other_approval)

"""The framework-neutral tool gate.

The digest binds the tool's name and exact arguments, the request is derived from the call, and the
tool's activity opens the approval only for the arguments that were approved."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from temporal_ciba._grant import GrantRefused
from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.agents import (
    ApprovedToolCall,
    ToolApproval,
    ToolArguments,
    open_tool_call,
    refusal_for_model,
    tool_action_digest,
)
from temporal_ciba.crypto import TokenSealer, access_token_context

SEALER = TokenSealer(os.urandom(32))
AGENT, RUN = "agent-1", "run-1"
ARGS = {"account_id": "acct-42", "amount": 120, "note": "Grüße"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def call_args(arguments: dict[str, Any] | None = None, *, call_id: str = "call_1") -> ToolArguments:
    return ToolArguments(ARGS if arguments is None else arguments, tool_name="reset_account", call_id=call_id)


def approved_for(arguments: dict[str, Any], digest: str | None = None) -> ApprovalOutcome:
    digest = digest or tool_action_digest("reset_account", arguments)
    context = access_token_context("req-1", action_digest=digest, workflow_id=AGENT, run_id=RUN)
    return ApprovalOutcome(
        status="approved",
        workflow_id=f"{AGENT}.tool-call_1",
        auth_req_id="req-1",
        reason="approved by alice",
        action_digest=digest,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
        sealed_access_token=SEALER.seal("the-access-token", context=context),
    )


def in_agent_activity() -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=AGENT, workflow_run_id=RUN)
    return env


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_the_digest_is_the_same_for_the_same_arguments_in_any_key_order(arguments: dict[str, Any]) -> None:
    reordered = dict(reversed(list(arguments.items())))
    assert tool_action_digest("t", arguments) == tool_action_digest("t", reordered)


@pytest.mark.parametrize(
    "tool,arguments",
    [
        ("reset_account", {**ARGS, "amount": 121}),  # another value
        ("reset_account", {**ARGS, "extra": None}),  # one more argument
        ("reset_account", {k: v for k, v in ARGS.items() if k != "note"}),  # one fewer
        ("reset_account", {**ARGS, "amount": "120"}),  # another JSON type
        ("delete_account", ARGS),  # another tool
    ],
)
def test_the_digest_binds_the_tool_and_every_argument(tool: str, arguments: dict[str, Any]) -> None:
    assert tool_action_digest(tool, arguments) != tool_action_digest("reset_account", ARGS)


def test_the_request_is_derived_from_the_call_and_bound_to_its_digest() -> None:
    approval = ToolApproval(
        login_hint=lambda args: f"{args['account_id']}@example.com",
        binding_message=lambda args: f"Reset {args['account_id']}",
        expected_subject="holder-42",
        acr_values="urn:acr:phone",
        requested_expiry=lambda args: 60 if args["amount"] < 1000 else 300,
    )
    request = approval.request_for(call_args())
    assert request.login_hint == "acct-42@example.com"
    assert request.binding_message == "Reset acct-42"
    assert request.expected_subject == "holder-42"
    assert request.acr_values == "urn:acr:phone"
    assert request.requested_expiry == 60
    assert request.action_digest == tool_action_digest("reset_account", ARGS)
    assert request.summary is not None and request.summary[0] == "tool reset_account"
    assert 'note = "Grüße"' in request.summary


def test_the_extra_parameters_and_other_hints_are_derived_from_the_call() -> None:
    approval = ToolApproval(
        id_token_hint=lambda args: f"hint-for-{args['account_id']}",
        audience="https://accounts.example",
        resource=lambda args: [f"https://accounts.example/{args['account_id']}"],
        claims={"id_token": {"acr": {"essential": True}}},
    )
    request = approval.request_for(call_args())
    assert request.login_hint is None and request.login_hint_token is None
    assert request.id_token_hint is not None and request.id_token_hint.get_secret_value() == "hint-for-acct-42"
    assert request.audience == "https://accounts.example"
    assert request.resource == ["https://accounts.example/acct-42"]
    assert request.claims == {"id_token": {"acr": {"essential": True}}}
    token_request = ToolApproval(login_hint_token="lht").request_for(call_args())
    assert token_request.login_hint_token is not None and token_request.login_hint_token.get_secret_value() == "lht"
    # The code the default binding message ends with is the one kept when the OP's rule shortens it.
    assert token_request.code is not None and token_request.binding_message.endswith(token_request.code)
    with pytest.raises(ValueError, match="exactly one of login_hint"):
        ToolApproval(login_hint="alice", login_hint_token="lht").request_for(call_args())


def test_the_default_binding_message_names_the_tool_and_a_code_of_the_digest() -> None:
    one = ToolApproval(login_hint="alice").request_for(call_args())
    other = ToolApproval(login_hint="alice").request_for(call_args({**ARGS, "amount": 5}))
    assert one.binding_message.startswith("reset_account ")
    assert one.binding_message != other.binding_message


def test_when_decides_whether_to_ask() -> None:
    approval = ToolApproval(login_hint="alice", when=lambda args: args["amount"] > 100)
    assert approval.applies_to(call_args())
    assert not approval.applies_to(call_args({**ARGS, "amount": 100}))
    assert ToolApproval(login_hint="alice").applies_to(call_args({}))


def test_the_tool_opens_the_approval_for_the_approved_arguments() -> None:
    call = ApprovedToolCall(tool_name="reset_account", call_id="call_1", arguments=ARGS, outcome=approved_for(ARGS))
    assert in_agent_activity().run(open_tool_call, SEALER, call) == "the-access-token"


def test_arguments_changed_after_the_approval_are_refused() -> None:
    changed = ApprovedToolCall(
        tool_name="reset_account",
        call_id="call_1",
        arguments={**ARGS, "account_id": "acct-666"},
        outcome=approved_for(ARGS),
    )
    with pytest.raises(GrantRefused, match="differs"):
        in_agent_activity().run(open_tool_call, SEALER, changed)


def account_digest(arguments: ToolArguments) -> str:
    """A resource server's own digest of the action: here, of the account alone."""
    return hashlib.sha256(f"reset {arguments['account_id']}".encode()).hexdigest()


def test_a_tool_approval_with_its_own_digest_is_bound_to_it() -> None:
    # A resource server that checks its own digest of the action (an authorization_details
    # entry's actionDigest): the request, the policy's action and the approval's id name it.
    approval = ToolApproval(login_hint="alice", action_digest=account_digest)
    request = approval.request_for(call_args())
    assert request.action_digest == account_digest(call_args()) != tool_action_digest("reset_account", ARGS)
    assert approval.action_for(call_args()).digest == request.action_digest
    assert approval.digest_of(call_args()) == request.action_digest
    assert ToolApproval(login_hint="alice").digest_of(call_args()) == tool_action_digest("reset_account", ARGS)


def test_the_tool_opens_an_approval_bound_to_its_own_digest_with_that_digest_only() -> None:
    own = account_digest(call_args())
    call = ApprovedToolCall(
        tool_name="reset_account", call_id="call_1", arguments=ARGS, outcome=approved_for(ARGS, own)
    )
    assert in_agent_activity().run(open_tool_call, SEALER, call, action_digest=own) == "the-access-token"
    # The tool call's digest, or the digest of another account, finds no token.
    for other in (None, account_digest(call_args({**ARGS, "account_id": "acct-666"}))):
        with pytest.raises(GrantRefused, match="differs"):
            in_agent_activity().run(open_tool_call, SEALER, call, action_digest=other)


def test_a_call_without_an_approval_runs_only_where_asking_was_optional() -> None:
    unasked = ApprovedToolCall(tool_name="reset_account", call_id="call_1", arguments=ARGS)
    with pytest.raises(GrantRefused, match="no approval"):
        in_agent_activity().run(open_tool_call, SEALER, unasked)
    assert in_agent_activity().run(open_tool_call, SEALER, unasked, required=False) is None


@pytest.mark.parametrize(
    "status,error,reason,expected",
    [
        ("denied", "access_denied", "alice denied the request on their device", "alice denied the request"),
        ("expired", "expired_token", "no decision before the deadline", "before the request expired"),
        ("rejected", "sub_mismatch", "the tokens name another subject", "failed validation (sub_mismatch)"),
        ("error", None, "the OP could not be reached:\nConnectError", "could not be obtained"),
        ("cancelled", None, "cancelled before a decision", "cancelled"),
    ],
)
def test_the_model_is_told_why_in_one_line(status: Any, error: str | None, reason: str, expected: str) -> None:
    outcome = ApprovalOutcome(
        status=status, workflow_id="w", error=error, reason=reason, decided_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    line = refusal_for_model("reset_account", outcome)
    assert line.startswith("The reset_account call was not run: ")
    assert expected in line
    assert "\n" not in line

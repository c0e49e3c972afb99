"""Gate an agent's tool call behind a CIBA approval: the part every agent framework shares.

    in the agent's workflow                          in the tool's activity
    ───────────────────────                          ──────────────────────
    approval.applies_to(args)?                       open_tool_call(sealer, call)
      └─ ask_for_tool_call(approval, args) ──▶ outcome ──▶ the access token, for exactly
         (a child CibaApprovalWorkflow)                     these arguments in this run,
                                                           or GrantRefused
    not approved ──▶ refusal_for_model(outcome): one line the model can relay

The action digest is the SHA-256 of the tool's name and arguments in canonical JSON, or the
ToolApproval's own `action_digest` of them (a resource server's digest of the action). The
approval is bound to it (the sealed access token opens only for it), so a tool call whose
arguments changed after the human approved them finds no token and does not run. The framework
adapters (`temporal_ciba.agents.openai`, `temporal_ciba.agents.pydantic_ai`) call these; an
application uses them directly for a framework we do not cover.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from temporalio import workflow

from temporal_ciba._grant import GrantRefused, open_access_token
from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, short_code
from temporal_ciba._policy import ApprovalPolicy, PolicyAction, PolicyError
from temporal_ciba._workflow import require_approval
from temporal_ciba.crypto import TokenSealer

T = TypeVar("T")
_CALL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_CALL_ID = 64


class ToolArguments(dict[str, Any]):
    """A tool call's arguments (a dict), with the call around them.

    The call is `tool_name`, `call_id` and the framework's run `context` (OpenAI's
    RunContextWrapper, PydanticAI's RunContext)."""

    def __init__(self, arguments: Mapping[str, Any], *, tool_name: str, call_id: str, context: Any = None) -> None:
        super().__init__(arguments)
        self.tool_name = tool_name
        self.call_id = call_id
        self.context = context


Derived: TypeAlias = T | Callable[[ToolArguments], T]


@dataclass(frozen=True, kw_only=True)
class ToolApproval:
    """Who must approve a tool call, and what they are shown.

    Every field is a value or a function of the call's `ToolArguments`; the functions run in
    workflow code, so they must be deterministic (no I/O, no clock, no randomness).

        ToolApproval(
            login_hint=lambda args: args["account_holder"],
            binding_message=lambda args: f"Reset {args['account_id']}",
            when=lambda args: args["amount"] > 100,
        )
    """

    # Who approves: exactly one of login_hint, login_hint_token, id_token_hint (CIBA §7.1); an
    # id_token_hint also pins the approver to its `sub`.
    login_hint: Derived[str | None] = None
    login_hint_token: Derived[str | None] = None
    id_token_hint: Derived[str | None] = None
    # Default: "<tool_name> <code>", the code being four characters of the action digest.
    binding_message: Derived[str] | None = None
    # Pins the approver: any other validated `sub` is rejected (ApprovalRequest.expected_subject).
    expected_subject: Derived[str | None] = None
    authorization_details: Derived[list[dict[str, Any]] | None] = None
    # For the Temporal UI (ApprovalRequest.summary); default: the tool and its arguments.
    summary: Derived[list[str] | None] = None
    scope: Derived[str] = "openid"
    acr_values: Derived[str | None] = None
    requested_expiry: Derived[int | None] = None
    # RFC 8707 resource indicators, Auth0's audience, an OIDC claims request.
    resource: Derived[list[str] | None] = None
    audience: Derived[str | None] = None
    claims: Derived[dict[str, Any] | None] = None
    on_lost_grant: Literal["stop", "ask_again"] = "stop"
    # When to ask at all; default: always. A call it lets through runs with no approval.
    when: Callable[[ToolArguments], bool] | None = None
    # An approval policy (temporal_ciba._policy) deciding, after `when`, whether to ask, whom
    # (one approver or a quorum) and how; the action it sees is `action_for(arguments)`. A call
    # it lets through ("none") runs with no approval, as one `when` lets through.
    policy: ApprovalPolicy | None = None
    # The action's type for the policy (default: the tool's name), the caller's risk score, and
    # who is who (role -> login_hint; `login_hint` fills the role "approver").
    action_type: Derived[str | None] = None
    risk: Derived[float | None] = None
    parties: Derived[dict[str, str] | None] = None
    # The digest the approval is bound to; default: the tool's name and arguments
    # (tool_action_digest). Give one where the resource server checks its own digest of the
    # action (an authorization_details entry's `actionDigest`), so the record states one digest.
    # It must change whenever an argument the tool acts on does; the tool's activity opens the
    # token with the same digest of the arguments it acts on (open_tool_call's `action_digest`).
    action_digest: Callable[[ToolArguments], str] | None = None

    def digest_of(self, arguments: ToolArguments) -> str:
        """The digest this call's approval is bound to (`action_digest`, else the tool call's)."""
        if self.action_digest is not None:
            return self.action_digest(arguments)
        return tool_action_digest(arguments.tool_name, arguments)

    def applies_to(self, arguments: ToolArguments) -> bool:
        if self.when is not None and not self.when(arguments):
            return False
        if self.policy is None:
            return True
        try:
            decision, _ = self.policy.decide(self.action_for(arguments))
        except PolicyError:
            return True  # asked: require_approval ends it as a policy error, nothing runs
        return decision.approval != "none"

    def action_for(self, arguments: ToolArguments) -> PolicyAction:
        """The action the policy decides on: this call, its details, risk and parties."""
        parties: dict[str, str] | None = _derive(self.parties, arguments)
        approver: str | None = _derive(self.login_hint, arguments)
        return PolicyAction(
            type=_derive(self.action_type, arguments) or arguments.tool_name,
            authorization_details=_derive(self.authorization_details, arguments),
            risk=_derive(self.risk, arguments),
            # With a login_hint_token or id_token_hint the approver has no name to match on.
            parties={**({"approver": approver} if approver is not None else {}), **(parties or {})},
            digest=self.digest_of(arguments),
        )

    def request_for(self, arguments: ToolArguments) -> ApprovalRequest:
        """The approval request for this call, bound to its action digest."""
        digest = self.digest_of(arguments)
        binding_message = _derive(self.binding_message, arguments)
        hint_token, id_token_hint = _derive(self.login_hint_token, arguments), _derive(self.id_token_hint, arguments)
        return ApprovalRequest(
            login_hint=_derive(self.login_hint, arguments),
            login_hint_token=SecretStr(hint_token) if hint_token is not None else None,
            id_token_hint=SecretStr(id_token_hint) if id_token_hint is not None else None,
            resource=_derive(self.resource, arguments),
            audience=_derive(self.audience, arguments),
            claims=_derive(self.claims, arguments),
            binding_message=binding_message or f"{arguments.tool_name} {short_code(digest)}",
            expected_subject=_derive(self.expected_subject, arguments),
            authorization_details=_derive(self.authorization_details, arguments),
            summary=_derive(self.summary, arguments) or default_summary(arguments),
            scope=_derive(self.scope, arguments),
            acr_values=_derive(self.acr_values, arguments),
            requested_expiry=_derive(self.requested_expiry, arguments),
            on_lost_grant=self.on_lost_grant,
            action_digest=digest,
        )


def _derive(value: Derived[T], arguments: ToolArguments) -> T:
    return value(arguments) if callable(value) else value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same arguments everywhere."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def tool_action_digest(tool_name: str, arguments: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the tool's name and arguments: what the approval is bound to."""
    document = {"tool": tool_name, "arguments": dict(arguments)}
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def default_summary(arguments: ToolArguments) -> list[str]:
    lines = [f"tool {arguments.tool_name}"]
    lines += [f"{name} = {canonical_json(value)}"[:200] for name, value in sorted(arguments.items())[:19]]
    return lines


def tool_approval_id(call_id: str, digest: str) -> str:
    """The approval's workflow id: the agent workflow's, the tool call's id and the digest.

    A replay finds the same approval; two calls never share one, even with equal arguments (their
    call ids differ), nor two arguments under one call id."""
    return approval_workflow_id(workflow.info().workflow_id, call_id, digest)


def approval_workflow_id(agent_workflow_id: str, call_id: str, digest: str) -> str:
    """`tool_approval_id` for a given agent workflow id.

    Usable outside the workflow, e.g. by a client looking up a tool call's approval."""
    safe = _CALL_ID_UNSAFE.sub("_", call_id)
    if safe != call_id or len(safe) > _MAX_CALL_ID:
        safe = safe[:32] + "-" + hashlib.sha256(call_id.encode()).hexdigest()[:16]
    return f"{agent_workflow_id}.tool-{safe}-{digest[:12]}"


async def ask_for_tool_call(approval: ToolApproval, arguments: ToolArguments) -> ApprovalOutcome:
    """From the agent's workflow: ask for this call and wait durably for the validated outcome."""
    request = approval.request_for(arguments)
    assert request.action_digest is not None
    return await require_approval(
        request,
        id=tool_approval_id(arguments.call_id, request.action_digest),
        policy=approval.policy,
        action=approval.action_for(arguments) if approval.policy is not None else None,
    )


def refusal_for_model(tool_name: str, outcome: ApprovalOutcome) -> str:
    """One line for the model to relay to the user: the tool did not run, and why."""
    # A denial is told in its own reason, which names who denied (a person, or a quorum's rule).
    why = {
        "expired": "nobody approved it before the request expired",
        "cancelled": "the approval was cancelled",
        "rejected": f"the approval failed validation ({outcome.error or 'rejected'}) and was discarded",
        "error": f"the approval could not be obtained: {outcome.reason}",
    }.get(outcome.status, outcome.reason)
    return " ".join(f"The {tool_name} call was not run: {why}.".split())


class ApprovedToolCall(BaseModel):
    """What the tool's activity receives: the call and its validated approval."""

    model_config = ConfigDict(frozen=True)

    tool_name: str
    call_id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    # None: the ToolApproval's `when` let this call through without asking.
    outcome: ApprovalOutcome | None = None


def open_tool_call(
    sealer: TokenSealer, call: ApprovedToolCall, *, required: bool = True, action_digest: str | None = None
) -> str | None:
    """The approved access token of a tool call; call it in the tool's activity, before it acts.

    The token opens if the approval was granted for exactly these arguments to the calling
    workflow run; GrantRefused otherwise. With `required=False` (a tool whose `when` may skip
    asking), a call without an approval returns None. `action_digest`: for a ToolApproval with
    its own `action_digest`, the same digest, of the arguments the tool acts on; default: the
    tool call's (tool_action_digest)."""
    if call.outcome is None:
        if required:
            raise GrantRefused(f"the {call.tool_name} call has no approval")
        return None
    digest = action_digest if action_digest is not None else tool_action_digest(call.tool_name, call.arguments)
    return open_access_token(sealer, call.outcome, action_digest=digest)

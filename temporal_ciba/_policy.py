"""The approval policy: which actions need no approval, one approver, or a quorum.

    ApprovalPolicy (rules, first match wins) ──decide(action)──▶ PolicyDecision + the rule
        none    the action runs unasked (the outcome says so and carries no token)
        one     one approver, with the rule's acr_values, requested_expiry, binding message
        quorum  n of the named approvers, each a CIBA approval of their own

Evaluation is pure and deterministic: it runs in workflow code. A policy comes from code (rules
may carry a `predicate`, a function of the action) or from a TOML file (`load_policy_file`).
The worker reads the file (`PolicySource`, CIBA_POLICY_FILE) and hands it to workflows through
the local activity `ciba.approval_policy`, whose result is recorded in history: a replay
evaluates the policy it recorded, and a new decision sees the file as it is now (an operator's
edit applies to every decision taken after it, without a restart).

A rule that matches an action's type but cannot be evaluated on it (a field it tests is missing
or not a number, an approver role nobody fills) raises PolicyError: the approval ends as an
error, it never falls through to a more lenient rule. No matching rule is a PolicyError too.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba._models import ApprovalRequest, PolicyDecision, short_code
from temporal_ciba._settings import ConfigError
from temporal_ciba.ciba import AuthorizationDetails

ApprovalKind = Literal["none", "one", "quorum"]
# A condition on the caller's risk score; any other key is a dotted path into the action's
# authorization_details entry of the action's type (e.g. "instructedAmount.amount").
RISK = "risk"
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


class PolicyError(ValueError):
    """The policy cannot decide for this action.

    No rule matches, or the matching rule cannot be evaluated on it. The approval ends as an
    error; nothing runs."""


class PolicyFileError(ConfigError):
    """A malformed policy file; the message is one line naming the file and the offending key."""


class PolicyAction(BaseModel):
    """What is to be approved, as the policy sees it."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(min_length=1)
    authorization_details: AuthorizationDetails | None = None
    # The caller's own risk score (any scale the policy's thresholds use).
    risk: float | None = None
    # Who is who for this action: role -> login_hint (e.g. {"owner": "alice"}).
    parties: dict[str, str] = {}
    # The action digest, for the `{code}` of a binding message template.
    digest: str | None = None

    @classmethod
    def of(
        cls,
        request: ApprovalRequest,
        *,
        type: str | None = None,
        risk: float | None = None,
        parties: Mapping[str, str] | None = None,
    ) -> PolicyAction:
        """The action a request asks about.

        Its type (default: the type of its first authorization_details entry, else "approval"),
        its details and digest, the caller's risk score, and the parties, the request's
        login_hint being the "approver" unless given."""
        details = request.authorization_details or []
        kind = type or (str(details[0].get("type")) if details else "approval")
        return cls(
            type=kind,
            authorization_details=request.authorization_details,
            risk=risk,
            parties={**({"approver": request.login_hint} if request.login_hint is not None else {}), **(parties or {})},
            digest=request.action_digest,
        )

    def value(self, path: str) -> Decimal:
        """The number a condition tests.

        The risk score, or a field of the action's authorization_details entry of its type.
        PolicyError when missing or not a number."""
        raw: Any = self.risk if path == RISK else self.field(path)
        if raw is None or isinstance(raw, bool):
            raise PolicyError(f"the action has no number at {path!r}")
        try:
            number = Decimal(str(raw))
        except InvalidOperation:
            raise PolicyError(f"the action's {path!r} is not a number") from None
        if not number.is_finite():
            raise PolicyError(f"the action's {path!r} is not a finite number")
        return number

    def field(self, path: str) -> Any:
        """A dotted path into the action's authorization_details entry of its type.

        Several entries of that type are a PolicyError: testing one would let another through
        unseen."""
        entries = [d for d in self.authorization_details or [] if d.get("type") == self.type]
        if len(entries) > 1:
            raise PolicyError(f"the action has {len(entries)} authorization_details of type {self.type!r}")
        value: Any = entries[0] if entries else None
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value


class Bounds(BaseModel):
    """A range a number must fall in: above < x, x >= at_least, x < below, x <= at_most."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    above: Decimal | None = None
    at_least: Decimal | None = None
    below: Decimal | None = None
    at_most: Decimal | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bounds:
        if all(bound is None for bound in (self.above, self.at_least, self.below, self.at_most)):
            raise ValueError("give at least one of above, at_least, below, at_most")
        return self

    def holds(self, number: Decimal) -> bool:
        return (
            (self.above is None or number > self.above)
            and (self.at_least is None or number >= self.at_least)
            and (self.below is None or number < self.below)
            and (self.at_most is None or number <= self.at_most)
        )


class PolicyRule(BaseModel):
    """One rule: which actions it matches, and what approval they need."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    # The action types it applies to; "*" for any.
    action: str | list[str] = "*"
    # Conditions that must all hold: "risk" or a dotted authorization_details path -> bounds.
    match: dict[str, Bounds] = {}
    # Code-defined policies only: a deterministic function of the action (never from a file).
    predicate: Callable[[PolicyAction], bool] | None = Field(default=None, exclude=True)
    approval: ApprovalKind
    # Roles: from the action's parties, else the policy's [roles] table.
    approvers: list[str] = []
    # n of the approvers (quorum only; default: all of them).
    quorum: int | None = Field(default=None, ge=1)
    acr_values: str | None = Field(default=None, min_length=1)
    requested_expiry: int | None = Field(default=None, gt=0)
    # A template for the binding message: {code} (four characters of the action digest), {type},
    # or a dotted authorization_details path; default: the caller's binding message.
    binding_message: str | None = Field(default=None, min_length=1)
    # Quorum: a denial ends it as denied ("end"), or only counts as not approving ("continue").
    on_denial: Literal["end", "continue"] = "end"
    # One line: why this rule applies (default: made from its conditions).
    reason: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PolicyRule:
        if self.approval == "none" and (self.approvers or self.quorum is not None):
            raise ValueError("approval 'none' takes no approvers and no quorum")
        if self.approval == "one" and (len(self.approvers) != 1 or self.quorum is not None):
            raise ValueError("approval 'one' takes exactly one approver and no quorum")
        if self.approval == "quorum":
            if len(self.approvers) < 2 or len(set(self.approvers)) != len(self.approvers):
                raise ValueError("approval 'quorum' takes at least two different approvers")
            if self.quorum is not None and self.quorum > len(self.approvers):
                raise ValueError(f"quorum {self.quorum} is more than the {len(self.approvers)} approvers")
        return self

    def applies_to(self, action: PolicyAction) -> bool:
        types = [self.action] if isinstance(self.action, str) else self.action
        if "*" not in types and action.type not in types:
            return False
        if not all(bounds.holds(action.value(path)) for path, bounds in self.match.items()):
            return False
        return self.predicate is None or bool(self.predicate(action))

    def describe(self) -> str:
        if self.reason:
            return self.reason
        conditions = [f"{path} {_describe_bounds(bounds)}" for path, bounds in self.match.items()]
        what = self.action if isinstance(self.action, str) else " or ".join(self.action)
        return f"{'any action' if what == '*' else what}" + (f" with {' and '.join(conditions)}" if conditions else "")

    def render_binding_message(self, action: PolicyAction, default: str) -> str:
        if self.binding_message is None:
            return default

        def fill(found: re.Match[str]) -> str:
            name = found.group(1)
            if name == "code":
                if action.digest is None:
                    raise PolicyError(f"rule {self.name!r}: {{code}} needs the action digest")
                return short_code(action.digest)
            if name == "type":
                return action.type
            value = action.field(name)
            if value is None or isinstance(value, Mapping | list):
                raise PolicyError(f"rule {self.name!r}: the binding message needs {name!r}, the action has none")
            return " ".join(str(value).split())

        return _PLACEHOLDER.sub(fill, self.binding_message)


def _describe_bounds(bounds: Bounds) -> str:
    parts = [
        f"{word} {value}"
        for word, value in (
            ("above", bounds.above),
            ("at least", bounds.at_least),
            ("below", bounds.below),
            ("at most", bounds.at_most),
        )
        if value is not None
    ]
    return " and ".join(parts)


class ApprovalPolicy(BaseModel):
    """Rules in order, the first that matches decides; `roles` names fixed approvers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[PolicyRule] = Field(min_length=1)
    # Role -> login_hint for approvers the policy names itself (e.g. treasury = "carol").
    roles: dict[str, str] = {}
    # Where it came from (file and SHA-256), for logs.
    source: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ApprovalPolicy:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self

    def rule_for(self, action: PolicyAction) -> PolicyRule:
        for rule in self.rules:
            if rule.applies_to(action):
                return rule
        raise PolicyError(f"no policy rule matches the action {action.type!r}")

    def decide(self, action: PolicyAction) -> tuple[PolicyDecision, PolicyRule]:
        """The decision for this action and the rule that took it.

        PolicyError when the policy cannot decide (fail closed)."""
        rule = self.rule_for(action)
        approvers = [self._login_hint(role, action) for role in rule.approvers]
        quorum = (rule.quorum or len(approvers)) if rule.approval == "quorum" else None
        decision = PolicyDecision(
            rule=rule.name,
            reason=rule.describe(),
            approval=rule.approval,
            approvers=approvers,
            quorum=quorum,
            acr_values=rule.acr_values,
        )
        return decision, rule

    def _login_hint(self, role: str, action: PolicyAction) -> str:
        hint = action.parties.get(role) or self.roles.get(role)
        if not hint:
            raise PolicyError(f"no approver for the role {role!r}: the action names none and the policy has none")
        return hint


# The file -----------------------------------------------------------------------------------------


def parse_policy(text: str, *, source: str) -> ApprovalPolicy:
    """A policy from TOML text; PolicyFileError with one line naming `source` and the key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyFileError(f"policy file {source}: not valid TOML: {exc}") from None
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    try:
        return ApprovalPolicy.model_validate({**document, "source": f"{source} (sha256 {digest})"})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _toml_key(first["loc"], document)
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PolicyFileError(f"policy file {source}: {key}: {message}{more}") from None


def _toml_key(loc: tuple[int | str, ...], document: Mapping[str, Any]) -> str:
    """A pydantic error location as the TOML key a person finds in the file.

    For example: rules[2] (its name).approvers[0]. A part that follows a value other than a table
    is no key of the file but pydantic's name for a member of a union (`action`'s `list[str]`),
    and is left out."""
    parts: list[str] = []
    node: Any = document
    for part in loc:
        if isinstance(part, int):
            # A TOML document is a table, and pydantic indexes only the lists it was given: an
            # index always follows a key, and indexes a list.
            parts[-1] += f"[{part}]"
            node = node[part]
            if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                parts[-1] += f" ({node['name']})"
        elif isinstance(node, Mapping):
            parts.append(part)
            node = node.get(part)
    return ".".join(parts) or "(top level)"


def load_policy_file(path: Path) -> ApprovalPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"policy file {path}: cannot be read: {exc}") from None
    return parse_policy(text, source=str(path))


# The activity's error when the worker has no policy file: the approval ends as an error.
NO_POLICY = "NoApprovalPolicy"


class PolicySource:
    """The worker's policy file, and the activity that hands the policy to workflows.

    The file is read and checked at start (a malformed file stops the worker), and read again
    when it changes. A replay reads the activity's recorded result, never the file. Every worker
    registers the activity (with `path` None it answers that there is no policy), since workflow
    code cannot tell whether one is registered."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        if path is not None:
            self._stamp = self._stat(path)
            self._policy = load_policy_file(path)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise PolicyFileError(f"policy file {path}: cannot be read: {exc}") from None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> ApprovalPolicy:
        """The policy as the file says now.

        An edit that breaks the file raises (the activity retries until it is fixed): a decision
        is never taken on a policy nobody wrote."""
        if self._path is None:
            raise ApplicationError(
                "the worker has no approval policy (CIBA_POLICY_FILE)", type=NO_POLICY, non_retryable=True
            )
        stamp = self._stat(self._path)
        if stamp != self._stamp:
            self._policy = load_policy_file(self._path)
            self._stamp = stamp
        return self._policy

    @activity.defn(name="ciba.approval_policy")
    async def approval_policy(self) -> ApprovalPolicy:
        return self.current()

"""The approval policy: evaluation on literal actions, and the TOML file's parsing."""

from __future__ import annotations

import hashlib
import json
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._policy import (
    ApprovalPolicy,
    Bounds,
    PolicyAction,
    PolicyError,
    PolicyFileError,
    PolicyRule,
    PolicySource,
    load_policy_file,
    parse_policy,
)
from temporal_ciba.agents import short_code

# The example: under 100 pass, up to 10,000 the owner at acr phone, above: owner and treasury.
AMOUNT_POLICY = """
[roles]
treasury = "bob"

[[rules]]
name = "small-payment"
action = "payment_initiation"
match = { "instructedAmount.amount" = { below = 100 } }
approval = "none"
reason = "payments under 100 need no approval"

[[rules]]
name = "medium-payment"
action = "payment_initiation"
match = { "instructedAmount.amount" = { at_most = 10000 } }
approval = "one"
approvers = ["owner"]
acr_values = "urn:example:acr:phone"
requested_expiry = 300
binding_message = "Pay {instructedAmount.amount} {instructedAmount.currency}, code {code}"

[[rules]]
name = "large-payment"
action = "payment_initiation"
approval = "quorum"
approvers = ["owner", "treasury"]
acr_values = "urn:example:acr:phone"

[[rules]]
name = "risky-service-call"
action = ["service_call", "batch_job"]
match = { risk = { above = 0.7 } }
approval = "one"
approvers = ["oncall"]

[[rules]]
name = "service-call"
action = ["service_call", "batch_job"]
approval = "none"
"""
DIGEST = "ab" * 32


def payment(amount: object, **extra: object) -> PolicyAction:
    details = [{"type": "payment_initiation", "instructedAmount": {"amount": amount, "currency": "EUR"}, **extra}]
    return PolicyAction(
        type="payment_initiation", authorization_details=details, parties={"owner": "alice"}, digest=DIGEST
    )


@pytest.fixture(scope="module")
def policy() -> ApprovalPolicy:
    return parse_policy(AMOUNT_POLICY, source="amounts.toml")


@pytest.mark.parametrize(
    ("action", "rule", "approval", "approvers", "quorum"),
    [
        (payment("99.99"), "small-payment", "none", [], None),
        (payment(0), "small-payment", "none", [], None),
        (payment("100.00"), "medium-payment", "one", ["alice"], None),
        (payment(10000), "medium-payment", "one", ["alice"], None),
        (payment("10000.01"), "large-payment", "quorum", ["alice", "bob"], 2),
        (payment(1e9), "large-payment", "quorum", ["alice", "bob"], 2),
        (PolicyAction(type="service_call", risk=0.7, parties={"oncall": "carol"}), "service-call", "none", [], None),
        (
            PolicyAction(type="batch_job", risk=0.71, parties={"oncall": "carol"}),
            "risky-service-call",
            "one",
            ["carol"],
            None,
        ),
    ],
)
def test_decisions(
    policy: ApprovalPolicy, action: PolicyAction, rule: str, approval: str, approvers: list[str], quorum: int | None
) -> None:
    decision, matched = policy.decide(action)
    assert (decision.rule, decision.approval, decision.approvers, decision.quorum) == (
        rule,
        approval,
        approvers,
        quorum,
    )
    assert matched.name == rule
    assert decision.reason


def test_the_decision_carries_the_rules_acr_and_its_reason(policy: ApprovalPolicy) -> None:
    decision, rule = policy.decide(payment(500))
    assert decision.acr_values == "urn:example:acr:phone"
    assert rule.requested_expiry == 300
    small, _ = policy.decide(payment(5))
    assert small.reason == "payments under 100 need no approval"
    large, _ = policy.decide(payment(50000))
    assert large.reason == "payment_initiation"  # made from its conditions: none but the type


@pytest.mark.parametrize(
    ("action", "message"),
    [
        # A rule that matches the type but cannot be evaluated fails closed, never falls through.
        (payment(None), "no number at 'instructedAmount.amount'"),
        (payment("lots"), "not a number"),
        (payment("NaN"), "not a finite number"),
        (payment(True), "no number"),
        (PolicyAction(type="payment_initiation", parties={"owner": "alice"}), "no number"),
        (PolicyAction(type="service_call", parties={"oncall": "carol"}), "no number at 'risk'"),
        (PolicyAction(type="account_reset"), "no policy rule matches the action 'account_reset'"),
        (payment(500).model_copy(update={"parties": {}}), "no approver for the role 'owner'"),
    ],
)
def test_undecidable_actions_are_errors(policy: ApprovalPolicy, action: PolicyAction, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy.decide(action)


def test_two_entries_of_the_actions_type_are_an_error(policy: ApprovalPolicy) -> None:
    """A small payment listed first must not carry a large one past the threshold."""
    action = payment("1.00")
    assert action.authorization_details is not None
    two = [*action.authorization_details, {"type": "payment_initiation", "instructedAmount": {"amount": "90000"}}]
    with pytest.raises(PolicyError, match="2 authorization_details"):
        policy.decide(action.model_copy(update={"authorization_details": two}))


def test_the_actions_parties_fill_roles_before_the_policys(policy: ApprovalPolicy) -> None:
    action = payment(50000).model_copy(update={"parties": {"owner": "alice", "treasury": "dave"}})
    assert policy.decide(action)[0].approvers == ["alice", "dave"]


def test_binding_message_template(policy: ApprovalPolicy) -> None:
    action = payment("120.00")
    _, rule = policy.decide(action)
    # The same four characters the tool wrappers show (temporal_ciba.agents.short_code).
    assert rule.render_binding_message(action, "default") == f"Pay 120.00 EUR, code {short_code(DIGEST)}"
    _, small = policy.decide(payment(1))
    assert small.render_binding_message(action, "the caller's") == "the caller's"
    with pytest.raises(PolicyError, match=r"needs 'instructedAmount\.amount'"):
        rule.render_binding_message(PolicyAction(type="payment_initiation", digest=DIGEST), "x")
    with pytest.raises(PolicyError, match="needs the action digest"):
        rule.render_binding_message(payment(1).model_copy(update={"digest": None}), "x")


def test_a_binding_message_field_is_shown_on_one_line() -> None:
    """A value's line breaks and runs of spaces become one space: the approver's device shows one
    short line (CIBA §7.1, binding_message), and a value cannot push the code out of sight."""
    rule = PolicyRule(name="pay", approval="none", binding_message="Pay {creditorName}, code {code}")
    action = PolicyAction(
        type="payment_initiation",
        authorization_details=[{"type": "payment_initiation", "creditorName": " ACME\n\n  GmbH\t"}],
        digest=DIGEST,
    )
    assert rule.render_binding_message(action, "x") == f"Pay ACME GmbH, code {short_code(DIGEST)}"


def test_a_predicate_in_code() -> None:
    weekend = PolicyRule(
        name="weekend-change",
        action="production_change",
        predicate=lambda action: action.field("day") in ("sat", "sun"),
        approval="quorum",
        approvers=["owner", "oncall"],
    )
    policy = ApprovalPolicy(
        rules=[weekend, PolicyRule(name="weekday", approval="one", approvers=["owner"])],
        roles={"oncall": "bob"},
    )
    change = PolicyAction(
        type="production_change",
        authorization_details=[{"type": "production_change", "day": "sun"}],
        parties={"owner": "alice"},
    )
    assert policy.decide(change)[0].approval == "quorum"
    weekday = change.model_copy(update={"authorization_details": [{"type": "production_change", "day": "mon"}]})
    assert policy.decide(weekday)[0].approval == "one"
    # The predicate never travels: a policy handed through history is data only.
    assert "predicate" not in policy.model_dump_json()


def test_of_request_defaults() -> None:
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Pay",
        authorization_details=[{"type": "payment_initiation", "x": 1}],
        action_digest=DIGEST,
    )
    action = PolicyAction.of(request, risk=0.5, parties={"owner": "alice"})
    assert (action.type, action.risk, action.digest) == ("payment_initiation", 0.5, DIGEST)
    assert action.parties == {"approver": "alice", "owner": "alice"}
    assert PolicyAction.of(request.model_copy(update={"authorization_details": None})).type == "approval"


def test_the_action_of_a_request_is_decided_on_the_requests_details(policy: ApprovalPolicy) -> None:
    """The amount a rule tests is the request's own: an action that lost its details would fail
    closed here instead of asking the right approvers."""
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Pay",
        authorization_details=payment("20000").authorization_details,
        action_digest=DIGEST,
    )
    action = PolicyAction.of(request, parties={"owner": "alice"})
    assert action.authorization_details == request.authorization_details
    assert policy.decide(action)[0].rule == "large-payment"
    # Asked through a login_hint_token, nobody is "the approver" by name.
    by_token = ApprovalRequest(login_hint_token="eyJ.token.x", binding_message="Pay", action_digest=DIGEST)
    assert PolicyAction.of(by_token, type="payment_initiation").parties == {}


def test_a_rule_for_one_type_matches_that_type_only() -> None:
    """A rule's action is a whole type name, never a part of one: the rule for
    "payment_initiation" says nothing of "payment" or "initiation"."""
    rule = PolicyRule(name="pay", action="payment_initiation", approval="none")
    assert rule.applies_to(PolicyAction(type="payment_initiation"))
    for other in ("payment", "initiation", "payment_initiation_bulk", "n"):
        assert not rule.applies_to(PolicyAction(type=other))


def test_a_rule_without_a_reason_says_its_conditions() -> None:
    """The reason a decision carries (in its outcome and its decision record) names every
    condition with the word of its bound, so an auditor reads why the rule applied."""
    two_types = PolicyRule(
        name="risky",
        action=["service_call", "batch_job"],
        match={"risk": Bounds(above=Decimal("0.7"))},
        approval="none",
    )
    assert two_types.describe() == "service_call or batch_job with risk above 0.7"
    every_bound = PolicyRule(
        name="bounded",
        action="payment_initiation",
        match={
            "instructedAmount.amount": Bounds(at_least=Decimal(100), below=Decimal(1000)),
            "risk": Bounds(above=Decimal("0.2"), at_most=Decimal("0.9")),
        },
        approval="none",
    )
    assert every_bound.describe() == (
        "payment_initiation with instructedAmount.amount at least 100 and below 1000 and risk above 0.2 and at most 0.9"
    )
    assert PolicyRule(name="any", approval="none").describe() == "any action"
    assert PolicyRule(name="given", approval="none", reason="because").describe() == "because"


# The file ---------------------------------------------------------------------------------------

RULE = '[[rules]]\nname = "r"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules = [", "not valid TOML"),
        ("", "rules: Field required"),
        ("rules = []", "rules: List should have at least 1 item"),
        ('[[rules]]\nname = "r"\n', "rules[0] (r).approval: Field required"),
        (RULE + 'approval = "maybe"', "rules[0] (r).approval: Input should be 'none', 'one' or 'quorum'"),
        (RULE + 'approval = "none"\napprovers = ["owner"]', "rules[0] (r): approval 'none' takes no approvers"),
        (RULE + 'approval = "one"', "rules[0] (r): approval 'one' takes exactly one approver"),
        (RULE + 'approval = "quorum"\napprovers = ["a"]', "at least two different approvers"),
        (RULE + 'approval = "quorum"\napprovers = ["a", "a"]', "at least two different approvers"),
        (RULE + 'approval = "quorum"\napprovers = ["a", "b"]\nquorum = 3', "quorum 3 is more than the 2 approvers"),
        (RULE + 'approval = "quorum"\napprovers = ["a", "b"]\nquorum = 0', "rules[0] (r).quorum: Input should be"),
        (RULE + 'approval = "none"\nmatch = { risk = { under = 3 } }', "rules[0] (r).match.risk.under: Extra inputs"),
        (RULE + 'approval = "none"\nmatch = { risk = {} }', "rules[0] (r).match.risk: give at least one of"),
        (RULE + 'approval = "none"\nmatch = { risk = { above = "x" } }', "rules[0] (r).match.risk.above"),
        (RULE + 'approval = "none"\npredicate = "x"', "rules[0] (r).predicate: Input should be callable"),
        (RULE + 'approval = "one"\napprovers = ["a"]\nrequested_expiry = 0', "rules[0] (r).requested_expiry"),
        (RULE + 'approval = "none"\n' + RULE + 'approval = "none"', "rule names must be unique"),
        (RULE + 'approval = "none"\n[roles]\nx = 1', "roles.x: Input should be a valid string"),
        (RULE + 'approval = "none"\nthreshold = 5', "rules[0] (r).threshold: Extra inputs are not permitted"),
        ('rule = "x"\n' + RULE + 'approval = "none"', "rule: Extra inputs are not permitted"),
        (RULE + 'approval = "one"\napprovers = ["a", 3]', "rules[0] (r).approvers[1]: Input should be a valid string"),
        ('rules = [{ name = "r", approval = "none" }, 5]', "rules[1]: Input should be a valid dictionary"),
    ],
)
def test_malformed_files_name_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError) as raised:
        parse_policy(text, source="/etc/ciba/policy.toml")
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith("policy file /etc/ciba/policy.toml: ")
    assert message in line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (RULE + 'approval = "none"\n' + RULE + 'approval = "none"', "(top level): rule names must be unique"),
        (
            RULE + 'approval = "quorum"\napprovers = ["a", "b"]\nquorum = 0',
            "rules[0] (r).quorum: Input should be greater than or equal to 1",
        ),
        # The first error, and how many more there are to fix.
        (
            RULE + 'approval = "one"\napprovers = [1]\nrequested_expiry = 0',
            "rules[0] (r).approvers[0]: Input should be a valid string (and 1 more)",
        ),
        (
            RULE + 'approval = "one"\napprovers = [1]\nrequested_expiry = 0\nquorum = 0',
            "rules[0] (r).approvers[0]: Input should be a valid string (and 2 more)",
        ),
        # A union's members are pydantic's names, not keys of the file.
        (RULE + 'approval = "none"\naction = 3', "rules[0] (r).action: Input should be a valid string (and 1 more)"),
    ],
)
def test_a_malformed_files_line_in_full(text: str, line: str) -> None:
    with pytest.raises(PolicyFileError) as raised:
        parse_policy(text, source="policy.toml")
    assert str(raised.value) == f"policy file policy.toml: {line}"


def test_a_policy_names_its_file_and_the_digest_of_what_it_read(tmp_path: Path) -> None:
    """The worker logs which policy decides: the file and the first 12 hex digits of its SHA-256."""
    path = tmp_path / "policy.toml"
    path.write_text(AMOUNT_POLICY, encoding="utf-8")
    digest = hashlib.sha256(AMOUNT_POLICY.encode()).hexdigest()
    assert load_policy_file(path).source == f"{path} (sha256 {digest[:12]})"
    path.write_text(RULE + 'approval = "maybe"', encoding="utf-8")
    with pytest.raises(PolicyFileError, match=f"^policy file {re.escape(str(path))}: rules"):
        load_policy_file(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"policy file .*nope.toml: cannot be read"):
        load_policy_file(tmp_path / "nope.toml")


def test_the_source_reads_an_edit_and_refuses_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(AMOUNT_POLICY)
    source = PolicySource(path)
    assert source.current().decide(payment(50))[0].approval == "none"
    path.write_text(AMOUNT_POLICY.replace("below = 100", "below = 10"))
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's clock resolution
    assert source.current().decide(payment(50))[0].approval == "one"
    path.write_text("rules = [")
    os.utime(path, ns=(2, 2))
    with pytest.raises(PolicyFileError, match="not valid TOML"):
        source.current()
    with pytest.raises(PolicyFileError):
        PolicySource(path)  # a worker with a broken file does not start


def test_the_source_reads_the_file_again_only_when_its_stamp_changes(tmp_path: Path) -> None:
    """Every decision asks for the policy; the file is read again only when its modification time
    or size changed, never on every decision (a broken file with an old stamp is not even read)."""
    path = tmp_path / "policy.toml"
    path.write_text(AMOUNT_POLICY)
    os.utime(path, ns=(1, 1))
    source = PolicySource(path)

    def unread_edit(stamp: int) -> None:
        path.write_text("x" * path.stat().st_size)  # the same size, and not TOML
        os.utime(path, ns=(stamp, stamp))

    unread_edit(1)
    assert source.current().decide(payment(50))[0].approval == "none"
    path.write_text(AMOUNT_POLICY.replace("below = 100", "below = 10"))
    os.utime(path, ns=(2, 2))
    assert source.current().decide(payment(50))[0].approval == "one"
    unread_edit(2)
    assert source.current().decide(payment(50))[0].approval == "one"


def test_a_tool_approval_asks_as_its_policy_says() -> None:
    from temporal_ciba.agents import ToolApproval, ToolArguments

    policy = ApprovalPolicy(
        rules=[
            PolicyRule(name="small", action="pay", match={"risk": Bounds(below=Decimal("0.5"))}, approval="none"),
            PolicyRule(name="rest", action="pay", approval="quorum", approvers=["approver", "treasury"]),
        ],
        roles={"treasury": "bob"},
    )
    gate = ToolApproval(login_hint="alice", policy=policy, risk=lambda args: args["risk"])

    def call(risk: object) -> ToolArguments:
        return ToolArguments({"risk": risk}, tool_name="pay", call_id="c1")

    assert not gate.applies_to(call(0.1))
    assert gate.applies_to(call(0.9))
    assert gate.applies_to(call(None))  # undecidable: asked, and require_approval ends it as an error
    action = gate.action_for(call(0.9))
    assert (action.type, action.parties, action.risk) == ("pay", {"approver": "alice"}, 0.9)
    assert policy.decide(action)[0].approvers == ["alice", "bob"]
    assert not ToolApproval(login_hint="alice", policy=policy, when=lambda args: False).applies_to(call(0.9))


def test_a_worker_without_a_file_answers_that_it_has_none() -> None:
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError, match="no approval policy") as raised:
        PolicySource(None).current()
    assert raised.value.non_retryable and raised.value.type == "NoApprovalPolicy"


@pytest.mark.parametrize(
    "bounds,inside,outside",
    [
        (Bounds(above=Decimal(1000)), Decimal("1000.01"), Decimal(1000)),
        (Bounds(at_least=Decimal(1000)), Decimal(1000), Decimal("999.99")),
        (Bounds(below=Decimal(1000)), Decimal("999.99"), Decimal(1000)),
        (Bounds(at_most=Decimal(1000)), Decimal(1000), Decimal("1000.01")),
    ],
    ids=["above", "at_least", "below", "at_most"],
)
def test_each_bound_takes_or_leaves_its_edge_as_its_name_says(
    bounds: Bounds, inside: Decimal, outside: Decimal
) -> None:
    """`at_least 1000` matches a payment of exactly 1000 (the rule that asks two approvers for it
    must apply), `above 1000` does not; `at_most` and `below` likewise at the other end."""
    assert bounds.holds(inside) and not bounds.holds(outside)


# Any document a person could write: the rule's own keys and others, any value TOML holds.
_KEYS = ["name", "action", "match", "approval", "approvers", "quorum", "binding_message", "on_denial", "reason"]
_TABLE_KEYS = st.sampled_from([*_KEYS, "above", "below", "risk", "x"]) | st.text(max_size=4)
_SCALARS = (
    st.text(max_size=8)
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.sampled_from(["none", "one", "quorum", "*", "risk", "above", "at_least", "end"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TABLE_KEYS, inner, max_size=3),
    max_leaves=12,
)
_RULES = st.lists(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), _VALUES, max_size=6), max_size=3)


def _toml(value: object) -> str:
    """A value as TOML: strings and numbers as JSON writes them, tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(key)} = {_toml(item)}" for key, item in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)  # TOML has no escapes for surrogate pairs


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(rules=_RULES, roles=st.dictionaries(st.text(max_size=4), _VALUES, max_size=2), extra=st.booleans())
def test_any_document_is_a_policy_or_one_line_naming_the_file(
    rules: list[dict[str, object]], roles: dict[str, object], extra: bool
) -> None:
    """Whatever the file holds, the worker starts on it or stops with one line naming it: never
    another exception (a key name made from an error pydantic locates anywhere in it)."""
    text = f"rules = {_toml(rules)}\nroles = {_toml(roles)}\n" + ("unknown = 1\n" if extra else "")
    try:
        parse_policy(text, source="policy.toml")
    except PolicyFileError as refused:
        line = str(refused)
        assert "\n" not in line and line.startswith("policy file policy.toml: ")

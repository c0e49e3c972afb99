"""The Temporal UI's current details.

Any authorization_details shown generically, and no caller-supplied text able to inject Markdown."""

from __future__ import annotations

from temporal_ciba._approval import (
    MAX_FIELDS_PER_DETAIL,
    MAX_VALUE_CHARS,
    code,
    describe_authorization_details,
    static_details,
    static_summary,
)
from temporal_ciba._models import ApprovalRequest


def test_any_detail_type_is_listed_field_by_field() -> None:
    lines = describe_authorization_details(
        [
            {"type": "account_reset", "account_id": "ACC-1", "reasons": ["lost", "stolen"]},
            {"type": "deploy", "target": {"env": "prod", "hosts": [{"name": "a"}]}},
        ]
    )
    assert lines == [
        "- `account_reset`",
        "  - `account_id`: `ACC-1`",
        "  - `reasons`: `lost, stolen`",
        "- `deploy`",
        "  - `target.env`: `prod`",
        "  - `target.hosts[0].name`: `a`",
    ]


def test_hostile_values_stay_inside_one_code_span() -> None:
    hostile = "x` [click](https://evil.example) ![img](https://evil.example/p.png)\n# heading"
    rendered = code(hostile)
    assert rendered.count("`") == 2 and "\n" not in rendered
    assert rendered.startswith("`x' [click]")


def test_long_values_and_many_fields_are_cut() -> None:
    assert len(code("a" * 500)) == MAX_VALUE_CHARS + 2
    detail = {"type": "bulk", **{f"f{i}": i for i in range(MAX_FIELDS_PER_DETAIL + 5)}}
    lines = describe_authorization_details([detail])
    assert len(lines) == 1 + MAX_FIELDS_PER_DETAIL + 1 and lines[-1] == "  - … 5 more fields"


def test_the_static_summary_and_details_say_what_was_asked_of_whom() -> None:
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Pay `120` EUR",
        scope="openid payments",
        acr_values="urn:mfa",
        requested_expiry=120,
        expected_subject="sub-alice",
        action_digest="ab" * 32,
        authorization_details=[{"type": "payment_initiation", "instructedAmount": {"amount": "120.00"}}],
    )
    assert static_summary(request) == "CIBA approval: `Pay '120' EUR` for `alice`"
    assert static_details(request).splitlines() == [
        "**CIBA approval** asked of `alice`:",
        "> `Pay '120' EUR`",
        "",
        "- `payment_initiation`",
        "  - `instructedAmount.amount`: `120.00`",
        "- scope `openid payments`",
        "- acr_values `urn:mfa`",
        "- requested expiry 120 s",
        "- only `sub-alice` may approve",
        "- action digest `abababababababab…`",
    ]


def test_the_static_details_prefer_the_application_s_summary() -> None:
    request = ApprovalRequest(
        login_hint="bob",
        binding_message="Reset",
        summary=["reset account ACC-1"],
        authorization_details=[{"type": "x"}],
    )
    assert static_details(request).splitlines() == [
        "**CIBA approval** asked of `bob`:",
        "> `Reset`",
        "",
        "- `reset account ACC-1`",
        "- scope `openid`",
    ]


def test_values_and_details_at_the_limit_are_shown_whole() -> None:
    assert code("a" * MAX_VALUE_CHARS) == f"`{'a' * MAX_VALUE_CHARS}`"
    detail = {"type": "bulk", **{f"f{i}": i for i in range(MAX_FIELDS_PER_DETAIL)}}
    lines = describe_authorization_details([detail])
    assert len(lines) == 1 + MAX_FIELDS_PER_DETAIL and not lines[-1].startswith("  - …")


def test_a_detail_without_a_type_is_shown_as_unknown() -> None:
    assert describe_authorization_details([{"account": "ACC-1"}]) == ["- `?`", "  - `account`: `ACC-1`"]

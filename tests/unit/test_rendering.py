"""The Temporal UI's current details.

Any authorization_details shown generically, and no caller-supplied text able to inject Markdown."""

from __future__ import annotations

from temporal_ciba._rendering import MAX_FIELDS_PER_DETAIL, MAX_VALUE_CHARS, code, describe_authorization_details


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

"""`temporal-ciba request` arguments for the extra parameters.

One approver hint of three, tokens given as @FILE, several resources, claims as JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from temporal_ciba._cli import UsageError, approval_request_from_args, build_parser


def request(*args: str) -> object:
    return approval_request_from_args(build_parser().parse_args(["request", "--binding-message", "Pay", *args]))


def test_extra_parameters(tmp_path: Path) -> None:
    hint = tmp_path / "hint.jwt"
    hint.write_text("a.b.c\n")
    approval = request(
        "--id-token-hint",
        f"@{hint}",
        "--audience",
        "https://api.example",
        "--resource",
        "https://payments.example/",
        "--resource",
        "https://ledger.example/",
        "--claims",
        '{"id_token": {"email": null}}',
        "--binding-code",
        "7Q4K",
    )
    assert approval.id_token_hint.get_secret_value() == "a.b.c"  # type: ignore[attr-defined]
    assert approval.login_hint is None  # type: ignore[attr-defined]
    assert approval.audience == "https://api.example"  # type: ignore[attr-defined]
    assert approval.resource == ["https://payments.example/", "https://ledger.example/"]  # type: ignore[attr-defined]
    assert approval.claims == {"id_token": {"email": None}}  # type: ignore[attr-defined]
    assert approval.code == "7Q4K"  # type: ignore[attr-defined]


def test_login_hint_token_as_given() -> None:
    approval = request("--login-hint-token", "opaque-token")
    assert approval.login_hint_token.get_secret_value() == "opaque-token"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "args",
    [[], ["--login-hint", "alice", "--login-hint-token", "t"], ["--login-hint", "alice", "--id-token-hint", "t"]],
    ids=["no_hint", "two_hints", "hint_and_id_token_hint"],
)
def test_exactly_one_approver_hint(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        request(*args)
    assert exit.value.code == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--login-hint", "alice", "--claims", "{"], "--claims: not valid JSON"),
        (["--login-hint-token", "@/nonexistent/token"], "--login-hint-token: cannot read"),
        (["--login-hint", "alice", "--resource", "payments"], "RFC 8707"),
    ],
    ids=["claims_not_json", "token_file_missing", "resource_not_absolute"],
)
def test_bad_extra_parameters_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(*args)

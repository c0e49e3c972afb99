"""Notification tokens: bearer syntax, within CIBA's length, unforgeable, naming their approval."""

from __future__ import annotations

import os
import uuid

import pytest

from temporal_ciba.ciba._backchannel import check_client_notification_token
from temporal_ciba.crypto._notification import MAX_WORKFLOW_ID_BYTES, NotificationTokens, NotifiedApproval

TOKENS = NotificationTokens(os.urandom(32))
RUN = str(uuid.uuid4())


def test_round_trip_and_fresh_every_time() -> None:
    issued = {TOKENS.issue("agent-42.approval-abc", RUN) for _ in range(50)}
    assert len(issued) == 50
    assert all(TOKENS.open(token) == NotifiedApproval("agent-42.approval-abc", RUN) for token in issued)


def test_meets_the_ciba_rules_even_for_the_longest_workflow_id() -> None:
    token = TOKENS.issue("w" * MAX_WORKFLOW_ID_BYTES, RUN)
    assert check_client_notification_token(token) == token and len(token) <= 1024
    with pytest.raises(ValueError, match="workflow id"):
        TOKENS.issue("w" * (MAX_WORKFLOW_ID_BYTES + 1), RUN)


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda token: token[:20],
        lambda token: "",
        lambda token: "not base64 !!",
        lambda token: token + "=",
        lambda token: NotificationTokens(os.urandom(32)).issue("agent-42", RUN),
    ],
    ids=["altered", "truncated", "empty", "garbage", "padded", "other_key"],
)
def test_forged_tokens_open_to_nothing(forge) -> None:  # type: ignore[no-untyped-def]
    assert TOKENS.open(forge(TOKENS.issue("agent-42", RUN))) is None

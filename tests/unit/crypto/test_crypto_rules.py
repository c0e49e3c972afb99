"""The rules of temporal_ciba/crypto at their edges, each named in its test.

So scripts/mutation.sh finds no change to them that the suite lets through."""

from __future__ import annotations

import os

import pytest

from temporal_ciba.crypto._codec import AesGcmCodec
from temporal_ciba.crypto._notification import (
    MAX_WORKFLOW_ID_BYTES,
    NotificationProofs,
    NotificationTokens,
    NotifiedApproval,
)
from temporal_ciba.crypto._sealing import TokenSealer

KEY = os.urandom(32)
TOKENS = NotificationTokens(KEY)


def test_repr_rule_names_the_class_and_no_key() -> None:
    assert repr(TOKENS) == "NotificationTokens()"
    assert repr(TokenSealer(KEY)) == "TokenSealer()"
    assert repr(NotificationProofs(KEY)) == "NotificationProofs()"


@pytest.mark.parametrize("run_id", ["r", "ru", "run", "run-", "run-a"])
def test_token_syntax_rule_no_padding_whatever_the_length(run_id: str) -> None:
    # Lengths that leave 0, 1 and 2 bytes over a multiple of 3: the bearer is unpadded base64url.
    token = TOKENS.issue("wf", run_id)
    assert "=" not in token
    assert TOKENS.open(token) == NotifiedApproval("wf", run_id)


def test_token_syntax_rule_a_token_ending_in_any_character_opens() -> None:
    # With a whole number of 3-byte groups, 1 in 64 tokens ends in "X": only padding may ever be
    # stripped from what was issued.
    token = next(t for t in (TOKENS.issue("wf", "r") for _ in range(5000)) if t.endswith("X"))
    assert TOKENS.open(token) == NotifiedApproval("wf", "r")


@pytest.mark.parametrize("length,opens", [(0, False), (1, True), (255, True), (256, False)])
def test_run_id_rule_is_one_to_255_bytes(length: int, opens: bool) -> None:
    if opens:
        assert TOKENS.open(TOKENS.issue("wf", "r" * length)) == NotifiedApproval("wf", "r" * length)
    else:
        with pytest.raises(ValueError, match="1 to 255 bytes"):
            TOKENS.issue("wf", "r" * length)


def test_length_rule_opens_1024_characters_and_refuses_more() -> None:
    # 768 bytes encode to exactly 1024 characters; 769 to 1026 (no base64 has 1025).
    fits = TOKENS.issue("w" * MAX_WORKFLOW_ID_BYTES, "r" * 123)
    assert len(fits) == 1024 and TOKENS.open(fits) == NotifiedApproval("w" * MAX_WORKFLOW_ID_BYTES, "r" * 123)
    too_long = TOKENS.issue("w" * MAX_WORKFLOW_ID_BYTES, "r" * 124)
    assert len(too_long) == 1026 and TOKENS.open(too_long) is None
    assert TOKENS.open("") is None


def test_binding_rule_a_context_that_names_no_workflow_leaves_the_codec_unbound() -> None:
    codec = AesGcmCodec(KEY)
    assert codec.with_context(object()).workflow_id is None  # type: ignore[arg-type]

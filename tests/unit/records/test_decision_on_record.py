"""The decision on record wins: a worker that died after writing a record, before the workflow task
that ran the write completed, leaves the approval to decide again; the record activity answers
the second write with the first decision, kept encrypted beside its record.

The approval's side (it returns that decision) is tests/unit/test_workflow_logic.py's; a real
worker killed in that window is tests/e2e/test_crash.py's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba.crypto._sealing import TokenSealer, id_token_context
from temporal_ciba.records import (
    DecisionRecorder,
    DecisionStore,
    EvidenceKeys,
    LogSigner,
    PostgresStore,
    RecordDecisionInput,
    RecordedDecision,
    SqliteStore,
)
from temporal_ciba.records._activity import RECORD_CONFLICT
from temporal_ciba.records._store import TABLE
from tests.support.postgres import PostgresServer

RECORD_KEY, TOKEN_KEY = os.urandom(32), os.urandom(32)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WORKFLOW = "agent-1.approval-abc"
SEALED_ACCESS_TOKEN = "sealed.v1.access-token-ciphertext"


def approved(auth_req_id: str = "req-1", workflow_id: str = WORKFLOW) -> ApprovalOutcome:
    return ApprovalOutcome(
        status="approved",
        workflow_id=workflow_id,
        auth_req_id=auth_req_id,
        reason="approved by alice",
        sub="alice",
        decided_at=T0,
        requested_at=T0 - timedelta(seconds=30),
        sealed_access_token=SEALED_ACCESS_TOKEN,
    )


def grant_lost(auth_req_id: str = "req-1") -> ApprovalOutcome:
    """What the approval reaches when it decides again: the OP no longer redeems the auth_req_id."""
    return ApprovalOutcome(
        status="error",
        workflow_id=WORKFLOW,
        auth_req_id=auth_req_id,
        error="grant_lost",
        reason="the OP no longer accepts this auth_req_id",
        decided_at=T0 + timedelta(seconds=12),
        requested_at=T0 - timedelta(seconds=30),
    )


def writing(outcome: ApprovalOutcome) -> RecordDecisionInput:
    request = ApprovalRequest(login_hint="alice", binding_message="Pay EUR 120.00")
    return RecordDecisionInput(outcome=outcome, request=request, first_run_id="run-1", run_id="run-1")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionStore]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "records.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        yield PostgresStore(server.new_database())


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "records.sqlite3")


def record(store: DecisionStore, outcome: ApprovalOutcome) -> RecordedDecision:
    recorder = DecisionRecorder(store, EvidenceKeys([RECORD_KEY]), TokenSealer(TOKEN_KEY), LogSigner(TOKEN_KEY))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=WORKFLOW)
    return asyncio.run(env.run(recorder.record_decision, writing(outcome)))


def test_a_second_decision_of_one_approval_is_answered_with_the_first(store: DecisionStore) -> None:
    first = record(store, approved())
    assert first.outcome is None  # written: nothing else was on record
    again = record(store, grant_lost())
    assert again.record_id == first.record_id
    # The first decision, its sealed access token included: the approval returns it.
    assert again.outcome == approved() and again.outcome.sealed_access_token == SEALED_ACCESS_TOKEN
    assert [stored.record.status for stored in store.select()] == ["approved"]
    assert record(store, approved()).outcome is None  # the same decision again: a no-op


def test_the_redeem_finds_the_decision_on_record_of_its_own_auth_req_id_alone(sqlite_store: SqliteStore) -> None:
    """What the redeem asks before its token request: asking the OP again would revoke the tokens."""
    record(sqlite_store, approved())
    recorder = DecisionRecorder(sqlite_store, EvidenceKeys([RECORD_KEY]), TokenSealer(TOKEN_KEY), LogSigner(TOKEN_KEY))

    def on_record(workflow_id: str, first_run_id: str, auth_req_id: str) -> ApprovalOutcome | None:
        return asyncio.run(recorder.decision_on_record(workflow_id, first_run_id, auth_req_id))

    assert on_record(WORKFLOW, "run-1", "req-1") == approved()
    assert on_record(WORKFLOW, "run-1", "req-2") is None
    assert on_record(WORKFLOW, "run-2", "req-1") is None  # a later approval under the same workflow id
    assert on_record("agent-2.approval-xyz", "run-1", "req-1") is None


def test_a_decision_whose_id_token_does_not_open_is_recorded_without_evidence(
    sqlite_store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A token key rotated mid-approval: the decision is on record all the same; the audit reports
    an approval without evidence."""
    sealed_elsewhere = TokenSealer(os.urandom(32)).seal(
        "header.claims.signature", context=id_token_context("req-1", WORKFLOW)
    )
    recorder = DecisionRecorder(sqlite_store, EvidenceKeys([RECORD_KEY]), TokenSealer(TOKEN_KEY), LogSigner(TOKEN_KEY))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=WORKFLOW)
    with caplog.at_level("WARNING"):
        asyncio.run(
            env.run(
                recorder.record_decision, writing(approved()).model_copy(update={"sealed_id_token": sealed_elsewhere})
            )
        )
    (stored,) = sqlite_store.select()
    assert stored.record.status == "approved"
    assert stored.open(EvidenceKeys([RECORD_KEY])).id_token is None
    assert "the ID token did not open" in caplog.text and "header.claims" not in caplog.text


def test_the_kept_outcome_is_encrypted_at_rest(sqlite_store: SqliteStore) -> None:
    record(sqlite_store, approved())
    with sqlite3.connect(sqlite_store.path) as connection:
        (kept,) = connection.execute(f"SELECT outcome FROM {TABLE}").fetchone()  # noqa: S608
    assert kept.startswith("outcome.v1.") and SEALED_ACCESS_TOKEN not in kept and "alice" not in kept


def conflict(store: DecisionStore, outcome: ApprovalOutcome) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        record(store, outcome)
    assert raised.value.type == RECORD_CONFLICT and raised.value.non_retryable
    return raised.value


def set_kept(store: SqliteStore, kept: str | None, record_id: str) -> None:
    with sqlite3.connect(store.path) as connection:
        connection.execute(f"UPDATE {TABLE} SET outcome = ? WHERE record_id = ?", (kept, record_id))  # noqa: S608


def test_a_record_without_a_kept_outcome_keeps_the_conflict(sqlite_store: SqliteStore) -> None:
    first = record(sqlite_store, approved())
    set_kept(sqlite_store, None, first.record_id)  # as rows written before outcomes were kept
    conflict(sqlite_store, grant_lost())


def test_a_kept_outcome_moved_from_another_record_does_not_open(sqlite_store: SqliteStore) -> None:
    first, other = record(sqlite_store, approved()), record(sqlite_store, approved("req-2"))
    with sqlite3.connect(sqlite_store.path) as connection:
        (kept,) = connection.execute(
            f"SELECT outcome FROM {TABLE} WHERE record_id = ?",  # noqa: S608
            (other.record_id,),
        ).fetchone()
    set_kept(sqlite_store, kept, first.record_id)
    conflict(sqlite_store, grant_lost())


def test_a_kept_outcome_of_another_approval_or_decision_is_not_returned(sqlite_store: SqliteStore) -> None:
    keys = EvidenceKeys([RECORD_KEY])
    first = record(sqlite_store, approved())
    (stored,) = sqlite_store.select()
    for kept in (
        approved(workflow_id="agent-2.approval-xyz"),  # another approval's
        approved("req-2"),  # another auth_req_id's
        grant_lost(),  # not the decision the record states
    ):
        sealed = keys.encrypt_outcome(kept.model_dump_json(), body_digest=stored.record.body_digest())
        set_kept(sqlite_store, sealed, first.record_id)
        conflict(sqlite_store, grant_lost())


def test_a_kept_outcome_that_is_no_outcome_is_logged_by_its_error_type_alone(
    sqlite_store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Pydantic quotes the input it refuses; the kept outcome holds a sealed access token.
    keys = EvidenceKeys([RECORD_KEY])
    first = record(sqlite_store, approved())
    (stored,) = sqlite_store.select()
    kept = approved().model_dump(mode="json") | {"status": "maybe"}
    sealed = keys.encrypt_outcome(json.dumps(kept), body_digest=stored.record.body_digest())
    set_kept(sqlite_store, sealed, first.record_id)
    with caplog.at_level("WARNING"):
        conflict(sqlite_store, grant_lost())
    (line,) = [r.getMessage() for r in caplog.records if "kept outcome" in r.getMessage()]
    assert line.startswith(f"decision record {first.record_id}: its kept outcome does not open: ValidationError")
    assert SEALED_ACCESS_TOKEN not in caplog.text and "maybe" not in caplog.text


def test_a_bare_record_id_reads_as_a_record_without_another_decision() -> None:
    # The activity's answer in histories recorded by workers that answered with the record id alone.
    assert RecordedDecision.model_validate_json('"abc123"') == RecordedDecision(record_id="abc123")

"""The decision-record store, the same tests on SQLite and on a real PostgreSQL server.

Insert once, a conflicting write refused, evidence encrypted at rest under rotating keys, filters."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba.crypto._sealing import TokenSealer, id_token_context
from temporal_ciba.records import (
    DecisionRecord,
    DecisionRecorder,
    DecisionStore,
    EvidenceError,
    EvidenceKeys,
    LogSigner,
    PostgresStore,
    RecordConflict,
    RecordDecisionInput,
    RecordQuery,
    RecordStoreError,
    SqliteStore,
    open_store,
)
from temporal_ciba.records._store import TABLE
from tests.support.postgres import PostgresServer

KEY_A, KEY_B, TOKEN_KEY = os.urandom(32), os.urandom(32), os.urandom(32)
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WORKFLOW = "agent-1.approval-abc"
PAYMENT = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "120.00"}}]


def decision(
    auth_req_id: str | None = "req-1",
    *,
    status: str = "approved",
    sub: str | None = "alice",
    decided_at: datetime = T0,
    details: list[dict[str, object]] | None = PAYMENT,
) -> RecordDecisionInput:
    outcome = ApprovalOutcome(
        status=status,  # type: ignore[arg-type]
        workflow_id=WORKFLOW,
        auth_req_id=auth_req_id,
        reason="approved by alice" if status == "approved" else status,
        sub=sub if status == "approved" else None,
        acr="urn:example:acr:mfa" if status == "approved" else None,
        decided_at=decided_at,
        requested_at=decided_at - timedelta(seconds=30),
    )
    request = ApprovalRequest(login_hint="alice", binding_message="Pay EUR 120.00", authorization_details=details)
    return RecordDecisionInput(outcome=outcome, request=request, first_run_id="run-1", run_id="run-1")


def record(auth_req_id: str | None = "req-1", **fields: object) -> DecisionRecord:
    input = decision(auth_req_id, **fields)  # type: ignore[arg-type]
    return input.record(ID_TOKEN if input.outcome.status == "approved" else None)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionStore]:
    made: DecisionStore
    if request.param == "sqlite":
        made = SqliteStore(tmp_path / "records.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        made = PostgresStore(server.new_database())
    made.create()
    made.create()  # idempotent: every worker creates it on its first record
    yield made


def raw_rows(store: DecisionStore) -> list[tuple[object, ...]]:
    with store._connect() as connection:
        return [tuple(row) for row in connection.execute(f"SELECT record_id, body, evidence FROM {TABLE}").fetchall()]  # noqa: S608


def test_a_record_is_written_once(store: DecisionStore) -> None:
    keys = EvidenceKeys([KEY_A])
    assert store.insert(record(), keys) is True
    assert store.insert(record(), keys) is False  # a retried write: the same decision
    (stored,) = store.select()
    assert stored.record == record().model_copy(update={"id_token": None})
    assert stored.open(keys) == record()


def test_another_decision_under_the_same_id_is_refused(store: DecisionStore) -> None:
    keys = EvidenceKeys([KEY_A])
    store.insert(record(), keys)
    with pytest.raises(RecordConflict):
        store.insert(record().model_copy(update={"sub": "mallory"}), keys)
    assert [stored.record.sub for stored in store.select()] == ["alice"]


def test_concurrent_writes_of_one_decision_leave_one_record(store: DecisionStore) -> None:
    keys = EvidenceKeys([KEY_A])
    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(lambda _: store.insert(record(), keys), range(4)))
    assert sorted(written) == [False, False, False, True] and len(list(store.select())) == 1
    assert [leaf.seq for leaf in store.log_leaves()] == [0]


def test_a_write_that_loses_the_race_leaves_no_gap(store: DecisionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer stores the record between this one's check and its insert: nothing is appended."""
    keys = EvidenceKeys([KEY_A])
    store.insert(record("req-1"), keys)
    checked = store._stored_digest
    calls: list[str] = []

    def not_yet_there(connection: object, record_id: str) -> object:
        calls.append(record_id)
        return None if len(calls) == 1 else checked(connection, record_id)

    monkeypatch.setattr(store, "_stored_digest", not_yet_there)
    assert store.insert(record("req-1"), keys) is False
    monkeypatch.undo()
    with pytest.raises(RecordConflict):
        monkeypatch.setattr(store, "_stored_digest", lambda connection, record_id: None)
        store.insert(record("req-1").model_copy(update={"sub": "mallory"}), keys)
    monkeypatch.undo()
    assert store.insert(record("req-2"), keys) is True
    assert [leaf.seq for leaf in store.log_leaves()] == [0, 1]


def test_the_id_token_is_encrypted_at_rest_and_keys_rotate(store: DecisionStore) -> None:
    store.insert(record(), EvidenceKeys([KEY_A]))
    ((_, body, evidence),) = raw_rows(store)
    assert ID_TOKEN not in str(body) and ID_TOKEN not in str(evidence)
    assert str(evidence).startswith(f"evidence.v1.{EvidenceKeys([KEY_A]).current_key_id}.")
    (stored,) = store.select()
    # Rotated: the new key first, the old one still configured to read.
    assert stored.open(EvidenceKeys([KEY_B, KEY_A])).id_token == ID_TOKEN
    with pytest.raises(EvidenceError, match="not configured"):
        stored.open(EvidenceKeys([KEY_B]))


def test_sealed_values_of_another_kind_or_cut_short_are_none_of_a_record() -> None:
    """The prefix says what a sealed value is: evidence never opens as an outcome, nor an outcome
    as evidence, nor a value without its ciphertext (or a MAC without its value) as either."""
    keys = EvidenceKeys([KEY_A])
    evidence = keys.encrypt(ID_TOKEN, body_digest="d")
    outcome = keys.encrypt_outcome("{}", body_digest="d")
    for sealed in (outcome, evidence.rsplit(".", 1)[0], ""):
        with pytest.raises(EvidenceError, match=r"^not the evidence of a record$"):
            keys.decrypt(sealed, body_digest="d")
    for sealed in (evidence, outcome.rsplit(".", 1)[0]):
        with pytest.raises(EvidenceError, match=r"^not the outcome of a record$"):
            keys.decrypt_outcome(sealed, body_digest="d")
    mac = keys.mac("rec-1", 0, b"\x00" * 32)
    assert keys.check_mac(mac, "rec-1", 0, b"\x00" * 32) is None
    for wrong in (mac.rsplit(".", 1)[0], "evidence" + mac.removeprefix("mac"), None):
        with pytest.raises(EvidenceError, match=r"^the record carries no MAC of the record key$"):
            keys.check_mac(wrong, "rec-1", 0, b"\x00" * 32)


def test_a_record_altered_in_the_store_no_longer_opens_its_evidence(store: DecisionStore) -> None:
    keys = EvidenceKeys([KEY_A])
    store.insert(record(), keys)
    (stored,) = store.select()
    altered = stored.record.model_dump_json().replace("120.00", "9120.00")
    with store._connect() as connection:
        connection.execute(
            f"UPDATE {TABLE} SET body = {store.placeholder} WHERE record_id = {store.placeholder}",  # noqa: S608
            (altered, stored.record.record_id),
        )
    (tampered,) = store.select()
    assert tampered.record.authorization_details != PAYMENT
    with pytest.raises(EvidenceError, match="does not open"):
        tampered.open(keys)


def test_filters(store: DecisionStore) -> None:
    keys = EvidenceKeys([KEY_A])
    store.insert(record("req-1"), keys)
    store.insert(record("req-2", status="denied", decided_at=T0 + timedelta(hours=1)), keys)
    store.insert(record("req-3", sub="bob", decided_at=T0 + timedelta(hours=2), details=None), keys)
    store.insert(record(None, status="error", decided_at=T0 + timedelta(hours=3)), keys)

    def ids(**query: object) -> list[str | None]:
        return [stored.record.auth_req_id for stored in store.select(RecordQuery(**query))]  # type: ignore[arg-type]

    assert ids() == ["req-1", "req-2", "req-3", None]  # oldest decision first
    assert ids(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3)) == ["req-2", "req-3"]
    assert ids(sub="bob") == ["req-3"]
    assert ids(status="denied") == ["req-2"]
    assert ids(action_type="payment_initiation") == ["req-1", "req-2", None]
    assert ids(action_type="payment_initiation", status="approved", sub="alice") == ["req-1"]


def test_outcomes_without_an_auth_req_id_get_distinct_ids() -> None:
    first, later = record(None, status="error"), record(None, status="error", decided_at=T0 + timedelta(seconds=1))
    assert first.record_id != later.record_id and record("req-1").record_id != record("req-2").record_id
    assert record("req-1").record_id == record("req-1").record_id


def test_the_activity_retried_writes_one_record(store: DecisionStore) -> None:
    sealer = TokenSealer(TOKEN_KEY)
    recorder = DecisionRecorder(store, EvidenceKeys([KEY_A]), sealer, LogSigner(TOKEN_KEY))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=WORKFLOW)
    input = decision().model_copy(
        update={"sealed_id_token": sealer.seal(ID_TOKEN, context=id_token_context("req-1", WORKFLOW))}
    )
    ids = [asyncio.run(env.run(recorder.record_decision, input)) for _ in range(2)]
    assert ids[0] == ids[1]
    (stored,) = store.select()
    assert stored.open(EvidenceKeys([KEY_A])).id_token == ID_TOKEN


def test_the_sqlite_file_is_plain_sqlite(tmp_path: Path) -> None:
    """Operators can read the store with any SQLite tool (the evidence stays encrypted)."""
    store = SqliteStore(tmp_path / "records.sqlite3")
    store.create()
    store.insert(record(), EvidenceKeys([KEY_A]))
    with sqlite3.connect(tmp_path / "records.sqlite3") as connection:
        assert connection.execute(f"SELECT status, sub FROM {TABLE}").fetchall() == [("approved", "alice")]  # noqa: S608


def test_a_postgres_connection_dropped_by_the_server_is_replaced(postgres: PostgresServer) -> None:
    """The store reuses a connection per thread; one the server dropped fails once, unseen, and is replaced."""
    import psycopg

    dsn = postgres.new_database()
    store = PostgresStore(dsn)
    store.create()
    keys = EvidenceKeys([KEY_A])
    assert store.insert(record("req-1"), keys) is True
    dropped = store._local.connection
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    assert store.insert(record("req-2"), keys) is True
    assert [stored.seq for stored in store.select()] == [0, 1]
    assert store._local.connection is not dropped
    assert dropped.closed and dropped not in store._opened


def test_a_postgres_store_keeps_one_session_per_thread(postgres: PostgresServer) -> None:
    store = PostgresStore(postgres.new_database())

    def backend() -> int:
        with store._connect() as connection:
            return int(connection.execute("SELECT pg_backend_pid()").fetchone()[0])

    first = backend()
    assert backend() == first
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(backend).result() != first


def test_a_connection_never_made_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a reused session that fails is worth a second try (the server may have dropped it)."""
    import psycopg

    attempts: list[tuple[str, dict[str, object]]] = []

    def refused(dsn: str, **options: object) -> None:
        attempts.append((dsn, options))
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", refused)
    dsn = "postgresql://agent@127.0.0.1:1/records"
    with pytest.raises(RecordStoreError):
        PostgresStore(dsn, connect_timeout=7).create()
    with pytest.raises(RecordStoreError):
        open_store(path=Path("unused.sqlite3"), dsn=dsn).create()  # a DSN given: PostgreSQL, never the file
    # Each connection attempt is bounded: an unreachable server fails the write, never hangs it.
    assert attempts == [(dsn, {"connect_timeout": 7}), (dsn, {"connect_timeout": 10})]


def test_a_session_that_fails_its_first_statement_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new session the server drops at once would be dropped again: one attempt, then the error."""
    import psycopg

    class Dropped:
        closed = broken = False

        def execute(self, *args: object) -> None:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        def rollback(self) -> None: ...

        def close(self) -> None:
            self.closed = True

    sessions: list[Dropped] = []
    monkeypatch.setattr(psycopg, "connect", lambda dsn, **options: sessions.append(Dropped()) or sessions[-1])
    with pytest.raises(RecordStoreError, match="server closed the connection unexpectedly"):
        PostgresStore("postgresql://agent@127.0.0.1:1/records").create()
    assert len(sessions) == 1 and sessions[0].closed


def test_closing_a_postgres_store_ends_the_sessions_of_every_thread(postgres: PostgresServer) -> None:
    """A worker that stops leaves no session open (the server's smart shutdown would wait for them)."""
    import psycopg

    dsn = postgres.new_database()
    store = PostgresStore(dsn)
    store.create()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: store.insert(record(f"req-{n}"), EvidenceKeys([KEY_A])), range(4)))

    def sessions() -> int:
        with psycopg.connect(dsn, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            return int(row[0]) if row else -1

    assert sessions() >= 1
    store.close()
    deadline = time.monotonic() + 10  # a closed session's backend exits a moment later
    while sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions() == 0
    assert store.insert(record("req-9"), EvidenceKeys([KEY_A])) is True  # a new session

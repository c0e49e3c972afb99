"""When the decision log's checkpoints are signed: every N records, T seconds after the first one
not yet signed, and when the worker stops (CibaPlugin's run context); and a worker refuses a
store others could plant."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._settings import ConfigError, OPSettings, RecordSettings
from temporal_ciba.crypto._sealing import TokenSealer
from temporal_ciba.records import (
    DecisionRecorder,
    EvidenceKeys,
    LogSigner,
    RecordDecisionInput,
    RecordStoreError,
    SqliteStore,
)
from temporal_ciba.records import _activity as recorder_module
from tests.support.records import written_before_the_log
from tests.support.temporal import free_port

TOKEN_KEY = os.urandom(32)


def decision(n: int) -> RecordDecisionInput:
    outcome = ApprovalOutcome(
        status="denied",
        workflow_id=f"wf-{n}",
        auth_req_id=f"req-{n}",
        reason="denied",
        decided_at=datetime(2026, 3, 1, 12, n, tzinfo=UTC),
    )
    request = ApprovalRequest(login_hint="alice", binding_message=f"Pay EUR {n}.00")
    return RecordDecisionInput(outcome=outcome, request=request, first_run_id="r", run_id="r")


async def record(recorder: DecisionRecorder, n: int) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"wf-{n}")
    await env.run(recorder.record_decision, decision(n))


def signed_size(store: SqliteStore) -> int | None:
    checkpoint = store.latest_checkpoint()
    return checkpoint.size if checkpoint is not None else None


async def test_a_checkpoint_every_n_records_and_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_RECORDS", 2)
    store = SqliteStore(tmp_path / "records.sqlite3")
    signer = LogSigner(os.urandom(32))
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), signer)
    await record(recorder, 0)
    assert signed_size(store) is None
    await record(recorder, 1)
    assert signed_size(store) == 2
    await record(recorder, 1)  # written already: nothing new to sign
    await record(recorder, 2)
    assert signed_size(store) == 2
    await recorder.checkpoint_now()
    checkpoint = store.latest_checkpoint()
    assert checkpoint is not None and checkpoint.size == 3 and checkpoint.verifies(signer.public_key)


async def test_a_checkpoint_once_the_oldest_unsigned_record_is_t_seconds_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_SECONDS", 0.0)
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    assert signed_size(store) == 1


async def test_the_worker_signs_a_checkpoint_when_it_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """And closes the store's connections after it."""
    closed: list[SqliteStore] = []
    monkeypatch.setattr(SqliteStore, "close", lambda self: closed.append(self))
    records = RecordSettings(record_db=tmp_path / "records.sqlite3")
    op = OPSettings(issuer=f"http://127.0.0.1:{free_port()}", client_id="agent", client_secret="s")  # type: ignore[arg-type]
    plugin = CibaPlugin(payload_key=os.urandom(32), token_key=TOKEN_KEY, op=op, records=records)
    async with plugin._run_context():  # the OP is down: said once, the worker runs
        recorder = plugin._recorder
        assert recorder is not None
        await record(recorder, 0)
        store = SqliteStore(records.record_db)
        assert signed_size(store) is None
    checkpoint = store.latest_checkpoint()
    assert checkpoint is not None and checkpoint.size == 1
    assert checkpoint.verifies(LogSigner(records.log_key_bytes(TOKEN_KEY)).public_key)
    assert closed == [recorder.store]


def test_a_worker_refuses_a_store_in_a_directory_every_user_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    records = RecordSettings(record_db=shared / "records.sqlite3")
    op = OPSettings(issuer="https://op.example", client_id="agent", client_secret="s")  # type: ignore[arg-type]
    plugin = CibaPlugin(payload_key=os.urandom(32), token_key=TOKEN_KEY, op=op, records=records)
    with pytest.raises(
        ConfigError, match=r"^the decision-record store \(CIBA_RECORD_DB\) is in .*every user can write"
    ):
        plugin._build_activities()


async def test_the_first_write_appends_the_records_written_before_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's adoption (tests/unit/records/test_decision_log.py) runs once, on the recorder's first write."""
    store = SqliteStore(tmp_path / "records.sqlite3")
    calls = []
    adopt = store.append_unlogged
    monkeypatch.setattr(store, "append_unlogged", lambda keys: calls.append(keys) or adopt(keys))
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    await record(recorder, 1)
    assert len(calls) == 1


async def test_a_record_written_before_the_log_joins_it_with_its_evidence(tmp_path: Path) -> None:
    """The recorder adopts it under its own record keys: its ID token opens, and it is in the log."""
    store = SqliteStore(tmp_path / "records.sqlite3")
    keys = EvidenceKeys([TOKEN_KEY])
    earlier = decision(9).record("header.claims.signature")
    written_before_the_log(store, [(earlier, keys)])
    recorder = DecisionRecorder(store, keys, TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    (adopted,) = [stored for stored in store.select() if stored.record.record_id == earlier.record_id]
    assert adopted.seq == 0 and adopted.open(keys).id_token == "header.claims.signature"


async def test_a_checkpoint_t_seconds_after_the_oldest_unsigned_record_t_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured from the first record not yet signed, not the latest, on the recorder's clock."""
    now = [1000.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_SECONDS", 30.0)
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    now[0] = 1029.0
    await record(recorder, 1)
    assert signed_size(store) is None  # 29 s after the oldest unsigned one
    now[0] = 1030.0
    await record(recorder, 2)
    assert signed_size(store) == 3


async def test_records_of_a_checkpoint_that_failed_count_toward_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed checkpoint gives its records back, added to those written while it ran."""
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_RECORDS", 1000)
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    started, go = threading.Event(), threading.Event()

    def failing(signer: LogSigner) -> None:
        started.set()
        go.wait(30)
        raise RecordStoreError("the store is down")

    sign = store.checkpoint
    monkeypatch.setattr(store, "checkpoint", failing)
    checkpointing = asyncio.create_task(recorder.checkpoint_now())
    await asyncio.to_thread(started.wait, 30)
    await record(recorder, 1)  # written while the checkpoint runs
    go.set()
    with pytest.raises(RecordStoreError):
        await checkpointing
    monkeypatch.setattr(store, "checkpoint", sign)
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_RECORDS", 3)
    await record(recorder, 2)  # the third unsigned record: due
    assert signed_size(store) == 3


async def test_the_ticker_signs_what_was_written_and_outlives_a_store_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    await record(recorder, 0)
    sign, failures = store.checkpoint, []

    def fails_once(signer: LogSigner) -> None:
        if not failures:
            failures.append(signer)
            raise RecordStoreError("the store is down")
        sign(signer)

    monkeypatch.setattr(store, "checkpoint", fails_once)
    ticker = asyncio.create_task(recorder.checkpoint_every(0.01))
    try:
        while signed_size(store) is None and not ticker.done():
            await asyncio.sleep(0.01)  # waits for the ticker; decides nothing
        assert not ticker.done()  # it runs until cancelled
    finally:
        ticker.cancel()
    assert len(failures) == 1 and signed_size(store) == 1


async def test_a_record_is_written_when_its_checkpoint_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record is what matters: a store that cannot sign now leaves the record to the next checkpoint."""
    monkeypatch.setattr(recorder_module, "CHECKPOINT_EVERY_RECORDS", 1)
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    sign = store.checkpoint

    def down(signer: LogSigner) -> None:
        raise RecordStoreError("the store is down")

    monkeypatch.setattr(store, "checkpoint", down)
    await record(recorder, 0)
    assert [stored.record.workflow_id for stored in store.select()] == ["wf-0"]
    assert signed_size(store) is None
    monkeypatch.setattr(store, "checkpoint", sign)
    await recorder.checkpoint_now()
    assert signed_size(store) == 1


async def test_nothing_written_since_the_last_checkpoint_signs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops, or a tick, with no new record: no checkpoint that says nothing new."""
    store = SqliteStore(tmp_path / "records.sqlite3")
    recorder = DecisionRecorder(store, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(os.urandom(32)))
    signed: list[LogSigner] = []
    sign = store.checkpoint
    monkeypatch.setattr(store, "checkpoint", lambda signer: signed.append(signer) or sign(signer))
    await recorder.checkpoint_now()
    assert signed == []
    await record(recorder, 0)
    await recorder.checkpoint_now()
    await recorder.checkpoint_now()
    assert len(signed) == 1

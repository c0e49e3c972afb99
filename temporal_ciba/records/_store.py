"""Where decision records live: SQLite (a file, the default) or PostgreSQL (CIBA_RECORD_DSN).

Insert-once: the record id is the primary key; writing a record again is a no-op when it is the
same decision (same content digest), and RecordConflict when it differs. The ID token is stored
encrypted (records.evidence), and so is the outcome the approval returned (`recorded_outcome`):
a worker that died after writing a record, before its workflow task completed, leaves the
approval to decide again, and the second decision differs (the OP no longer redeems the
auth_req_id); the approval then takes back the first.

Append-only: the insert that writes a record also appends it to the decision log
(records.log) in the same transaction: it takes the next sequence number from the log's head
row (UPDATE ... RETURNING, which locks that row until the commit; SQLite: BEGIN IMMEDIATE,
its single writer) and stores the record's leaf hash and MAC, so concurrent writers from any
number of workers take consecutive numbers, with no gap and no fork; a writer killed
mid-append rolls back, its retried write appends once. A unique index on the sequence number
holds it even against a bug. Checkpoints keep the tree's compact range, so the next one extends
it by the leaves appended since.

SQLite opens the file for each call. PostgreSQL keeps one connection per thread and reuses it
(opening one costs more than the append itself: bench/log_append.py); a reused connection
that fails (a restarted server, an idle one dropped) is closed and the call made once more on
a new one, which is safe as every operation is idempotent (the insert keyed by record id). A
stopping worker closes them all (`close`).

Every error of the database driver is turned into RecordStoreError at this boundary, naming the
setting (CIBA_RECORD_DSN, CIBA_RECORD_DB) and never its value: libpq quotes the connection
string it cannot parse, password included, and what the store raises reaches logs, the CLI's
standard error and the activity's failure in workflow history.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from temporal_ciba.records._evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records._log import Checkpoint, LogSigner, record_leaf_hash
from temporal_ciba.records._merkle import Frontier
from temporal_ciba.records._model import DecisionRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")
TABLE = "ciba_decision_records"
HEAD_TABLE = "ciba_decision_log"
CHECKPOINT_TABLE = "ciba_decision_log_checkpoints"
# Column order of every SELECT.
COLUMNS = "record_id, body, evidence, seq, leaf_hash, body_mac"
# Columns added to a table created before them: the log's (such rows stay outside the log), and
# the approval's outcome kept beside its record (`recorded_outcome`; such rows have none).
ADDED_COLUMNS = (("seq", "BIGINT"), ("leaf_hash", "TEXT"), ("body_mac", "TEXT"), ("outcome", "TEXT"))


class RecordConflict(Exception):
    """A record with this id exists and holds another decision."""


class RecordStoreError(Exception):
    """The store could not be reached or refused a statement; the message names the setting, never its value."""


# The parts of a PostgreSQL connection string that are secret.
_SECRET_PARAMETERS = ("password",)


@dataclass(frozen=True)
class RecordQuery:
    """What `audit export` selects: decided in [since, until), by this approver, in this status."""

    since: datetime | None = None
    until: datetime | None = None
    sub: str | None = None
    status: str | None = None
    action_type: str | None = None

    @property
    def selects_all(self) -> bool:
        """True when no filter is set: the export holds every record of the log."""
        return self == RecordQuery()


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: everything but the evidence in `record`, the evidence encrypted."""

    record: DecisionRecord
    evidence: str | None
    seq: int | None = None
    leaf_hash: str | None = None
    mac: str | None = None

    def open(self, keys: EvidenceKeys) -> DecisionRecord:
        """The record with its ID token decrypted, checked against its leaf hash and MAC.

        EvidenceError if the evidence does not open, or the record (with or without evidence) is
        not the one written: its leaf hash differs from the stored one, or the MAC under the
        record key does not authenticate its id, sequence number and leaf hash."""
        record = self.record
        if self.evidence is not None:
            id_token = keys.decrypt(self.evidence, body_digest=self.record.body_digest())
            record = self.record.model_copy(update={"id_token": id_token})
        if self.seq is None or self.leaf_hash is None:
            raise EvidenceError("the record is not in the decision log (written before the log)")
        leaf = record_leaf_hash(record)
        if leaf.hex() != self.leaf_hash:
            raise EvidenceError("the record was altered in the store (it no longer gives its leaf hash)")
        keys.check_mac(self.mac, record.record_id, self.seq, leaf)
        return record


@dataclass(frozen=True)
class LogLeaf:
    """A position of the log: its sequence number and leaf hash."""

    seq: int
    leaf_hash: bytes


class DecisionStore(ABC):
    """The store's operations; all block (the activity runs them in a thread)."""

    placeholder = "?"
    # The setting that names this store, for error messages (its value never appears in them).
    setting = "CIBA_RECORD_DB"

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _schema(self) -> str: ...

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]: ...

    def _begin_append(self, connection: Any) -> None:  # noqa: B027 (PostgreSQL's transaction begins by itself)
        """Begin the append's transaction (SQLite takes its write lock here)."""

    def _next_seq(self, connection: Any) -> int:
        """Take the next sequence number: the head row moved on, and locked until this transaction ends."""
        (size,) = connection.execute(
            f"UPDATE {HEAD_TABLE} SET size = size + 1 WHERE id = 1 RETURNING size"  # noqa: S608
        ).fetchone()
        return int(size) - 1

    @abstractmethod
    def _add_columns(self, connection: Any) -> None: ...

    def _describe(self, exc: BaseException) -> str:
        return type(exc).__name__

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        """`operation()`, a driver error turned into RecordStoreError naming the setting and what failed.

        Raised outside the handler, so the driver's error (whose text may quote the DSN) is neither
        its cause nor its context: no traceback, log or workflow history shows it. A failure on a
        reused connection is tried once more, on a new one (`_discard_stale`)."""
        message = ""
        for attempt in range(2):
            try:
                return operation()
            except self._driver_errors() as exc:
                if attempt == 0 and self._discard_stale(exc):
                    continue
                message = f"the decision-record store ({self.setting}) failed while {doing}: {self._describe(exc)}"
            break
        raise RecordStoreError(message)

    def _discard_stale(self, exc: BaseException) -> bool:
        """Whether `exc` came from a reused connection, now discarded, so the call is worth repeating."""
        return False

    def _decided_at(self, value: datetime) -> Any:
        return value

    def _row(self, row: tuple[Any, ...]) -> StoredRecord:
        record_id, body, evidence, seq, leaf_hash, mac = row
        record = DecisionRecord.model_validate_json(body)
        if record.record_id != record_id:
            raise RecordConflict(f"record {record_id}: its body names another record id")
        return StoredRecord(record, evidence, seq, leaf_hash, mac)

    def close(self) -> None:  # noqa: B027 (SQLite closes the file after each call)
        """Close the connections the store keeps (the next call opens another)."""

    def check_at_rest(self) -> None:  # noqa: B027 (a PostgreSQL server keeps its own files)
        """Refuse a store whose files others could read or replace (RecordStoreError naming the setting)."""

    def create(self) -> None:
        """Create the tables, the index and the log's head unless they exist."""
        self._call("creating its table", self._create)

    def _create(self) -> None:
        with self._connect() as connection:
            statements = [statement for statement in self._schema().split(";") if statement.strip()]
            connection.execute(statements[0])  # the records' table
            self._add_columns(connection)
            for statement in statements[1:]:
                connection.execute(statement)

    def insert(self, record: DecisionRecord, keys: EvidenceKeys, *, outcome: str | None = None) -> bool:
        """Write `record` once and append it to the log; True if written now.

        `outcome`, the approval's outcome as JSON, is kept encrypted beside it (`recorded_outcome`).
        False if this very decision was already recorded (a retried or replayed write);
        RecordConflict if another decision has its id."""
        digest = record.content_digest()
        body_digest = record.body_digest()
        evidence = keys.encrypt(record.id_token, body_digest=body_digest) if record.id_token is not None else None
        sealed_outcome = keys.encrypt_outcome(outcome, body_digest=body_digest) if outcome is not None else None
        body = record.model_dump_json(exclude={"id_token"})
        leaf = record_leaf_hash(record)
        p = self.placeholder

        def write() -> tuple[bool, Any]:
            try:
                with self._connect() as connection:
                    self._begin_append(connection)
                    found = self._stored_digest(connection, record.record_id)
                    if found is not None:
                        return False, found
                    # From here to the commit the head row is locked: as few round trips as can be.
                    seq = self._next_seq(connection)
                    if not append(connection, seq):
                        raise _Raced  # the same record, written meanwhile: roll the head back
            except _Raced:
                with self._connect() as connection:
                    return False, self._stored_digest(connection, record.record_id)
            return True, None

        def append(connection: Any, seq: int) -> bool:
            cursor = connection.execute(
                f"INSERT INTO {TABLE} (record_id, decided_at, status, sub, body, evidence, content_digest, "  # noqa: S608
                f"recorded_at, seq, leaf_hash, body_mac, outcome) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, "
                f"{p}, {p}, {p}, {p}) ON CONFLICT (record_id) DO NOTHING",
                (
                    record.record_id,
                    self._decided_at(record.decided_at),
                    record.status,
                    record.sub,
                    body,
                    evidence,
                    digest,
                    self._decided_at(datetime.now(UTC)),
                    seq,
                    leaf.hex(),
                    keys.mac(record.record_id, seq, leaf),
                    sealed_outcome,
                ),
            )
            return bool(cursor.rowcount == 1)

        written, existing = self._call("writing a record", write)
        if written:
            return True
        if existing is None or existing[0] != digest:
            raise RecordConflict(f"record {record.record_id} already holds another decision")
        return False

    def append_unlogged(self, keys: EvidenceKeys) -> list[str]:
        """Append the records stored before the log (no sequence number), oldest write first; the ids left out.

        From then on the log attests them as they are now: what happened to them before is not
        covered. One whose evidence does not open under `keys` is left out (its leaf would not
        hold its ID token) and stays outside the log, as export and verify report."""
        p = self.placeholder

        def adopt() -> list[str]:
            left_out = []
            with self._connect() as connection:
                self._begin_append(connection)
                rows = connection.execute(
                    f"SELECT {COLUMNS} FROM {TABLE} WHERE seq IS NULL ORDER BY recorded_at, record_id"  # noqa: S608
                ).fetchall()
                for row in rows:
                    stored = self._row(tuple(row))
                    try:
                        record = stored.record
                        if stored.evidence is not None:
                            id_token = keys.decrypt(stored.evidence, body_digest=record.body_digest())
                            record = record.model_copy(update={"id_token": id_token})
                    except EvidenceError:
                        left_out.append(record.record_id)
                        continue
                    leaf = record_leaf_hash(record)
                    seq = self._next_seq(connection)
                    connection.execute(
                        f"UPDATE {TABLE} SET seq = {p}, leaf_hash = {p}, body_mac = {p} WHERE record_id = {p}",  # noqa: S608
                        (seq, leaf.hex(), keys.mac(record.record_id, seq, leaf), record.record_id),
                    )
            return left_out

        return self._call("appending the records written before the log", adopt)

    def recorded_outcome(self, record_id: str, keys: EvidenceKeys) -> tuple[DecisionRecord, str] | None:
        """The record stored under `record_id`, checked, and the outcome JSON kept beside it; None without one.

        EvidenceError unless the record opens (its leaf hash and MAC, its evidence) and the
        outcome was encrypted for this record's body under a record key."""
        p = self.placeholder

        def read() -> Any:
            with self._connect() as connection:
                return connection.execute(
                    f"SELECT {COLUMNS}, outcome FROM {TABLE} WHERE record_id = {p}",  # noqa: S608
                    (record_id,),
                ).fetchone()

        row = self._call("reading a record", read)
        if row is None or row[-1] is None:
            return None
        stored = self._row(tuple(row[:-1]))
        record = stored.open(keys)
        return record, keys.decrypt_outcome(row[-1], body_digest=record.body_digest())

    def _stored_digest(self, connection: Any, record_id: str) -> Any:
        """The content digest of the record stored under `record_id` (a row), or None."""
        return connection.execute(
            f"SELECT content_digest FROM {TABLE} WHERE record_id = {self.placeholder}",  # noqa: S608
            (record_id,),
        ).fetchone()

    def select(self, query: RecordQuery = RecordQuery()) -> Iterator[StoredRecord]:
        """The records that match, in log order (records outside the log last, oldest decision first)."""
        p = self.placeholder
        where, values = [], []
        for clause, value in (
            (f"decided_at >= {p}", self._decided_at(query.since) if query.since else None),
            (f"decided_at < {p}", self._decided_at(query.until) if query.until else None),
            (f"sub = {p}", query.sub),
            (f"status = {p}", query.status),
        ):
            if value is not None:
                where.append(clause)
                values.append(value)
        sql = f"SELECT {COLUMNS} FROM {TABLE}"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)

        def read() -> list[Any]:
            with self._connect() as connection:
                order = " ORDER BY seq IS NULL, seq, decided_at, record_id"
                return list(connection.execute(sql + order, values).fetchall())

        rows = self._call("reading records", read)
        for row in rows:
            stored = self._row(tuple(row))
            if query.action_type is None or query.action_type in stored.record.action_types:
                yield stored

    def log_leaves(self) -> list[LogLeaf]:
        """Every position of the log, in sequence order."""

        def read() -> list[Any]:
            with self._connect() as connection:
                return list(
                    connection.execute(
                        # A position whose leaf hash was erased in the store is a gap (export names it).
                        f"SELECT seq, leaf_hash FROM {TABLE} "  # noqa: S608
                        "WHERE seq IS NOT NULL AND leaf_hash IS NOT NULL ORDER BY seq"
                    ).fetchall()
                )

        return [LogLeaf(int(seq), bytes.fromhex(leaf)) for seq, leaf in self._call("reading the log", read)]

    def latest_checkpoint(self) -> Checkpoint | None:
        """The largest signed checkpoint, if any."""

        def read() -> Any:
            with self._connect() as connection:
                return connection.execute(
                    f"SELECT checkpoint FROM {CHECKPOINT_TABLE} ORDER BY size DESC LIMIT 1"  # noqa: S608
                ).fetchone()

        row = self._call("reading the latest checkpoint", read)
        return Checkpoint.model_validate_json(row[0]) if row else None

    def checkpoint(self, signer: LogSigner) -> Checkpoint:
        """Sign a checkpoint of the log as it is now, unless the latest one already has its size; that checkpoint.

        The root comes from the previous checkpoint's compact range, extended by the leaves
        appended since (the head and its records commit together, so every sequence number below
        the head's size is there). Several writers may sign the same size at once: the first
        stored wins, and every one of them computes the same root."""
        p = self.placeholder

        def sign() -> Any:
            with self._connect() as connection:
                (size,) = connection.execute(f"SELECT size FROM {HEAD_TABLE} WHERE id = 1").fetchone()  # noqa: S608
                size = int(size)
                latest = connection.execute(
                    f"SELECT checkpoint FROM {CHECKPOINT_TABLE} WHERE size = {p}",  # noqa: S608
                    (size,),
                ).fetchone()
                if latest is not None:
                    return latest[0]
                before = connection.execute(
                    f"SELECT size, frontier FROM {CHECKPOINT_TABLE} WHERE size < {p} ORDER BY size DESC LIMIT 1",  # noqa: S608
                    (size,),
                ).fetchone()
                frontier = _frontier(before[0], before[1]) if before else Frontier()
                leaves = connection.execute(
                    f"SELECT seq, leaf_hash FROM {TABLE} WHERE seq >= {p} AND seq < {p} ORDER BY seq",  # noqa: S608
                    (frontier.size, size),
                ).fetchall()
                for seq, leaf in leaves:
                    if int(seq) != frontier.size:
                        break
                    frontier.append(bytes.fromhex(leaf))
                if frontier.size != size:
                    return None
                signed = signer.sign(size, frontier.root)
                connection.execute(
                    f"INSERT INTO {CHECKPOINT_TABLE} (size, checkpoint, frontier) VALUES ({p}, {p}, {p}) "  # noqa: S608
                    "ON CONFLICT (size) DO NOTHING",
                    (signed.size, signed.model_dump_json(), ",".join(node.hex() for node in frontier.hashes)),
                )
                return connection.execute(
                    f"SELECT checkpoint FROM {CHECKPOINT_TABLE} WHERE size = {p}",  # noqa: S608
                    (size,),
                ).fetchone()[0]

        signed = self._call("signing a checkpoint", sign)
        if signed is None:
            raise RecordStoreError(f"the decision log ({self.setting}) has a gap below its head: not signed")
        return Checkpoint.model_validate_json(signed)


def _frontier(size: Any, compact: str) -> Frontier:
    return Frontier(int(size), [bytes.fromhex(node) for node in compact.split(",") if node])


def _log_schema(bigint: str) -> str:
    """The log's index, head row and checkpoints, after the records' table (its first statement)."""
    return f"""
        CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_seq ON {TABLE} (seq);
        CREATE TABLE IF NOT EXISTS {HEAD_TABLE} (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            size {bigint} NOT NULL
        );
        INSERT INTO {HEAD_TABLE} (id, size) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
        CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
            size {bigint} PRIMARY KEY,
            checkpoint TEXT NOT NULL,
            frontier TEXT NOT NULL
        )
    """  # noqa: S608


class SqliteStore(DecisionStore):
    """A SQLite file; times as ISO 8601 UTC text, which sorts as time does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connect(self) -> Any:
        if not self.path.exists():
            self._create_file()
        connection = sqlite3.connect(self.path, timeout=30)
        return _Closing(connection)

    def _create_file(self) -> None:
        """Create the store owner-only (0600) before SQLite opens it; its journal takes the same mode."""
        self.check_at_rest()
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass

    def check_at_rest(self) -> None:
        """RecordStoreError if the store's directory is writable by every user; a warning if others can read it.

        In a world-writable directory (/tmp) another user could plant the file, or a link, before
        the first record; a store others can read shows them login hints, subjects and actions."""
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            mode = directory.stat().st_mode
        except OSError:
            return  # SQLite reports a missing directory itself
        if mode & stat.S_IWOTH:
            raise RecordStoreError(
                f"the decision-record store (CIBA_RECORD_DB) is in {directory}, which every user can write to: "
                "set CIBA_RECORD_DB to a file in a directory only the worker's user can write"
            )
        try:
            file_mode = self.path.stat().st_mode
        except OSError:
            return
        if file_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "the decision-record store (CIBA_RECORD_DB) %s can be read by other users (mode %o): chmod 600 it",
                self.path,
                file_mode & 0o777,
            )

    def _begin_append(self, connection: Any) -> None:
        connection.execute("BEGIN IMMEDIATE")  # the single writer's lock, before anything is read

    def _add_columns(self, connection: Any) -> None:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})").fetchall()}
        for name, kind in ADDED_COLUMNS:
            if name not in present:
                connection.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}")

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"  # SQLite's messages hold no secret

    def _decided_at(self, value: datetime) -> Any:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def _schema(self) -> str:
        return f"""
            CREATE TABLE IF NOT EXISTS {TABLE} (
                record_id TEXT PRIMARY KEY,
                decided_at TEXT NOT NULL,
                status TEXT NOT NULL,
                sub TEXT,
                body TEXT NOT NULL,
                evidence TEXT,
                content_digest TEXT NOT NULL,
                recorded_at TEXT NOT NULL,
                seq BIGINT,
                leaf_hash TEXT,
                body_mac TEXT,
                outcome TEXT
            );
            CREATE INDEX IF NOT EXISTS {TABLE}_decided_at ON {TABLE} (decided_at);
        """ + _log_schema("INTEGER")


class PostgresStore(DecisionStore):
    """PostgreSQL through psycopg 3 (the `postgres` extra); times as timestamptz."""

    placeholder = "%s"
    setting = "CIBA_RECORD_DSN"

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._local = threading.local()
        # Every connection opened, so that close() reaches those of every thread.
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()

    def __repr__(self) -> str:
        return "PostgresStore()"  # the DSN may hold a password

    def _connect(self) -> Any:
        return _Reused(self)

    def _connection(self) -> Any:
        """This thread's connection: the one an earlier call opened (`_local.reused`), or a new one."""
        import psycopg

        connection = getattr(self._local, "connection", None)
        if connection is not None and not connection.closed and not connection.broken:
            self._local.reused = True
            return connection
        self._local.connection = None
        connection = psycopg.connect(self._dsn, connect_timeout=self._connect_timeout)
        self._local.connection, self._local.reused = connection, False
        with self._opened_lock:
            self._opened = [kept for kept in self._opened if not kept.closed] + [connection]
        return connection

    def close(self) -> None:
        """Close every connection the store keeps, in every thread (a worker stopping)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def _drop(self) -> None:
        connection, self._local.connection = getattr(self._local, "connection", None), None
        if connection is not None:
            connection.close()

    def _discard_stale(self, exc: BaseException) -> bool:
        import psycopg

        reused = getattr(self._local, "reused", False)
        if isinstance(exc, psycopg.OperationalError):
            self._drop()
            return bool(reused)
        return False

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)

    def _describe(self, exc: BaseException) -> str:
        """The error's class and SQLSTATE, and why it failed, without the connection string.

        A statement's error: what the server said (it never echoes a password). A connection's:
        libpq's reason after its last "failed:" ("Connection refused", 'FATAL: database "x" does
        not exist'), without the host and port before it. Either is scrubbed of the password and
        the DSN all the same."""
        detail = type(exc).__name__
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            detail += f" (SQLSTATE {sqlstate})"
        diag = getattr(exc, "diag", None)
        said = getattr(diag, "message_primary", None) if diag is not None else None
        if not said and type(exc).__name__ == "OperationalError":
            lines = str(exc).strip().splitlines()
            said = " ".join(lines[0].rpartition("failed:")[2].split()) if lines else ""
        return f"{detail}: {self._scrub(said)}" if said else detail

    def _scrub(self, text: str) -> str:
        from urllib.parse import unquote

        try:
            from psycopg.conninfo import conninfo_to_dict

            secrets = [str(conninfo_to_dict(self._dsn).get(name) or "") for name in _SECRET_PARAMETERS]
        except Exception:
            return "(withheld)"
        for secret in {self._dsn, *secrets, *(unquote(secret) for secret in secrets)}:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _schema(self) -> str:
        return f"""
            CREATE TABLE IF NOT EXISTS {TABLE} (
                record_id TEXT PRIMARY KEY,
                decided_at TIMESTAMPTZ NOT NULL,
                status TEXT NOT NULL,
                sub TEXT,
                body TEXT NOT NULL,
                evidence TEXT,
                content_digest TEXT NOT NULL,
                recorded_at TIMESTAMPTZ NOT NULL,
                seq BIGINT,
                leaf_hash TEXT,
                body_mac TEXT,
                outcome TEXT
            );
            CREATE INDEX IF NOT EXISTS {TABLE}_decided_at ON {TABLE} (decided_at);
        """ + _log_schema("BIGINT")

    def _add_columns(self, connection: Any) -> None:
        for name, kind in ADDED_COLUMNS:
            connection.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}")


class _Raced(Exception):
    """The record was written by another writer between the check and the insert."""


class _Reused:
    """A PostgreSQL store's connection for one transaction: committed on success, rolled back on error, kept."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._connection: Any = None

    def __enter__(self) -> Any:
        self._connection = self._store._connection()
        return self._connection

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._connection.commit()
            return
        try:
            self._connection.rollback()
        except Exception:
            self._store._drop()  # broken: the next call opens another


class _Closing:
    """sqlite3's context manager commits but does not close; this one does both."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        return self._connection

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._connection.commit()
            else:
                self._connection.rollback()
        finally:
            self._connection.close()


def open_store(*, path: Path, dsn: str | None) -> DecisionStore:
    """PostgreSQL when a DSN is given, else the SQLite file."""
    return PostgresStore(dsn) if dsn else SqliteStore(path)

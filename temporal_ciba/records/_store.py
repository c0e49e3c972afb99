"""Where decision records live: SQLite (a file, the default) or PostgreSQL (CIBA_RECORD_DSN).

Insert-once: the record id is the primary key; writing a record again is a no-op when it is the
same decision (same content digest), and RecordConflict when it differs, which only a bug or a
tampered store can cause. The ID token is stored encrypted (records.evidence). Each call opens
its own connection: the worker writes a record per decision, seldom enough that a pool is not
worth its failure modes, and a restarted database server is simply reconnected to.

Every error of the database driver is turned into RecordStoreError at this boundary, naming the
setting (CIBA_RECORD_DSN, CIBA_RECORD_DB) and never its value: libpq quotes the connection
string it cannot parse, password included, and what the store raises reaches logs, the CLI's
standard error and the activity's failure in workflow history.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from temporal_ciba.records._evidence import EvidenceKeys
from temporal_ciba.records._model import DecisionRecord

T = TypeVar("T")
TABLE = "ciba_decision_records"
# Column order of every SELECT.
COLUMNS = "record_id, body, evidence, content_digest, recorded_at"


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


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: everything but the evidence in `record`, the evidence encrypted."""

    record: DecisionRecord
    evidence: str | None
    content_digest: str
    recorded_at: datetime

    def open(self, keys: EvidenceKeys) -> DecisionRecord:
        """The record with its ID token decrypted (EvidenceError if it does not open)."""
        if self.evidence is None:
            return self.record
        id_token = keys.decrypt(self.evidence, body_digest=self.record.body_digest())
        return self.record.model_copy(update={"id_token": id_token})


class DecisionStore(ABC):
    """The store's two operations; both block (the activity runs them in a thread)."""

    placeholder = "?"
    # The setting that names this store, for error messages (its value never appears in them).
    setting = "CIBA_RECORD_DB"

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _schema(self) -> str: ...

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]: ...

    def _describe(self, exc: BaseException) -> str:
        return type(exc).__name__

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        """`operation()`, a driver error turned into RecordStoreError naming the setting and what failed.

        Raised outside the handler, so the driver's error (whose text may quote the DSN) is neither
        its cause nor its context: no traceback, log or workflow history shows it."""
        try:
            return operation()
        except self._driver_errors() as exc:
            message = f"the decision-record store ({self.setting}) failed while {doing}: {self._describe(exc)}"
        raise RecordStoreError(message)

    def _decided_at(self, value: datetime) -> Any:
        return value

    def _row(self, row: tuple[Any, ...]) -> StoredRecord:
        record_id, body, evidence, content_digest, recorded_at = row
        if isinstance(recorded_at, str):
            recorded_at = datetime.fromisoformat(recorded_at)
        record = DecisionRecord.model_validate_json(body)
        if record.record_id != record_id:
            raise RecordConflict(f"record {record_id}: its body names another record id")
        return StoredRecord(record, evidence, content_digest, recorded_at)

    def create(self) -> None:
        """Create the table and its index unless they exist."""
        self._call("creating its table", self._create)

    def _create(self) -> None:
        with self._connect() as connection:
            for statement in self._schema().split(";"):
                if statement.strip():
                    connection.execute(statement)

    def insert(self, record: DecisionRecord, keys: EvidenceKeys) -> bool:
        """Write `record` once; True if written now.

        False if this very decision was already recorded (a retried or replayed write);
        RecordConflict if another decision has its id."""
        digest = record.content_digest()
        evidence = (
            keys.encrypt(record.id_token, body_digest=record.body_digest()) if record.id_token is not None else None
        )
        body = record.model_dump_json(exclude={"id_token"})
        p = self.placeholder

        def write() -> tuple[bool, Any]:
            with self._connect() as connection:
                cursor = connection.execute(
                    f"INSERT INTO {TABLE} (record_id, decided_at, status, sub, body, evidence, content_digest, "  # noqa: S608
                    f"recorded_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (record_id) DO NOTHING",
                    (
                        record.record_id,
                        self._decided_at(record.decided_at),
                        record.status,
                        record.sub,
                        body,
                        evidence,
                        digest,
                        self._decided_at(datetime.now(UTC)),
                    ),
                )
                if cursor.rowcount == 1:
                    return True, None
                existing = connection.execute(
                    f"SELECT content_digest FROM {TABLE} WHERE record_id = {p}",  # noqa: S608
                    (record.record_id,),
                ).fetchone()
            return False, existing

        written, existing = self._call("writing a record", write)
        if written:
            return True
        if existing is None or existing[0] != digest:
            raise RecordConflict(f"record {record.record_id} already holds another decision")
        return False

    def select(self, query: RecordQuery = RecordQuery()) -> Iterator[StoredRecord]:
        """The records that match, oldest decision first."""
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
                return list(connection.execute(sql + " ORDER BY decided_at, record_id", values).fetchall())

        rows = self._call("reading records", read)
        for row in rows:
            stored = self._row(tuple(row))
            if query.action_type is None or query.action_type in stored.record.action_types:
                yield stored


class SqliteStore(DecisionStore):
    """A SQLite file; times as ISO 8601 UTC text, which sorts as time does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connect(self) -> Any:
        connection = sqlite3.connect(self.path, timeout=30)
        return _Closing(connection)

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
                recorded_at TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {TABLE}_decided_at ON {TABLE} (decided_at)
        """


class PostgresStore(DecisionStore):
    """PostgreSQL through psycopg 3 (the `postgres` extra); times as timestamptz."""

    placeholder = "%s"
    setting = "CIBA_RECORD_DSN"

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return "PostgresStore()"  # the DSN may hold a password

    def _connect(self) -> Any:
        import psycopg

        # psycopg's connection context manager commits on success, rolls back on error, closes.
        return psycopg.connect(self._dsn, connect_timeout=self._connect_timeout)

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
                recorded_at TIMESTAMPTZ NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {TABLE}_decided_at ON {TABLE} (decided_at)
        """


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

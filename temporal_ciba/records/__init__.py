"""Decision records: one per approval outcome, in SQLite or PostgreSQL.

Each holds the OP-signed ID token as encrypted evidence; they are exported and verified by
`temporal-ciba audit` (docs/operations/decision-records.md)."""

from temporal_ciba.records._activity import DecisionRecorder
from temporal_ciba.records._audit import discover_jwks, export, load_jwks, parse_export, verify
from temporal_ciba.records._evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records._model import DecisionRecord, RecordDecisionInput, record_id
from temporal_ciba.records._store import (
    DecisionStore,
    PostgresStore,
    RecordConflict,
    RecordQuery,
    RecordStoreError,
    SqliteStore,
    StoredRecord,
    open_store,
)

__all__ = [
    "DecisionRecord",
    "DecisionRecorder",
    "DecisionStore",
    "EvidenceError",
    "EvidenceKeys",
    "PostgresStore",
    "RecordConflict",
    "RecordDecisionInput",
    "RecordQuery",
    "RecordStoreError",
    "SqliteStore",
    "StoredRecord",
    "discover_jwks",
    "export",
    "load_jwks",
    "open_store",
    "parse_export",
    "record_id",
    "verify",
]

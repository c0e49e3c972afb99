"""Decision records: one per approval outcome, in SQLite or PostgreSQL.

Each holds the OP-signed ID token as encrypted evidence and is a leaf of an append-only Merkle
log whose checkpoints the worker signs; they are exported and verified by `temporal-ciba audit`
(docs/operations/decision-records.md)."""

from temporal_ciba.records._activity import DecisionRecorder
from temporal_ciba.records._audit import (
    Report,
    discover_jwks,
    export,
    load_jwks,
    parse_export,
    verify,
    verify_export,
)
from temporal_ciba.records._evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records._log import Checkpoint, LogSigner, load_log_key
from temporal_ciba.records._model import DecisionRecord, RecordDecisionInput, RecordedDecision, record_id
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
    "Checkpoint",
    "DecisionRecord",
    "DecisionRecorder",
    "DecisionStore",
    "EvidenceError",
    "EvidenceKeys",
    "LogSigner",
    "PostgresStore",
    "RecordConflict",
    "RecordDecisionInput",
    "RecordQuery",
    "RecordStoreError",
    "RecordedDecision",
    "Report",
    "SqliteStore",
    "StoredRecord",
    "discover_jwks",
    "export",
    "load_jwks",
    "load_log_key",
    "open_store",
    "parse_export",
    "record_id",
    "verify",
    "verify_export",
]

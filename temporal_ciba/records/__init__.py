"""Decision records: one per approval outcome, in SQLite or PostgreSQL, with the OP-signed ID
token as encrypted evidence; exported and verified by `temporal-ciba audit` (README,
"Decision records")."""

from temporal_ciba.records.activity import DecisionRecorder
from temporal_ciba.records.evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records.model import DecisionRecord, RecordDecisionInput, record_id
from temporal_ciba.records.store import (
    DecisionStore,
    PostgresStore,
    RecordConflict,
    RecordQuery,
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
    "SqliteStore",
    "StoredRecord",
    "open_store",
    "record_id",
]

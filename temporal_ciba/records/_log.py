"""The decision log: every record a leaf of an RFC 9162 Merkle tree, its heads signed.

A record's leaf is the canonical JSON of everything it states, its ID token included
(`record_leaf`): changing any field, or dropping the evidence, changes the leaf. Records are
appended in sequence (0, 1, 2, ...); the writer signs checkpoints, (size, root hash, time),
with the log signing key (Ed25519, CIBA_LOG_SIGNING_KEY). An export carries each record's
inclusion proof and a checkpoint; an auditor who kept an earlier checkpoint checks that the new
one extends it (a consistency proof). Why a Merkle tree rather than a hash chain:
docs/operations/decision-records.md, "The log".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

from temporal_ciba.records._merkle import leaf_hash
from temporal_ciba.records._model import DecisionRecord, canonical_json

CHECKPOINT_FORMAT: Literal["temporal-ciba.log-checkpoint.v1"] = "temporal-ciba.log-checkpoint.v1"
EXPORT_FORMAT: Literal["temporal-ciba.decision-export.v1"] = "temporal-ciba.decision-export.v1"
# A checkpoint is signed after this many records are appended, or this long after the first
# one not yet signed, whichever comes first; and when the worker stops.
CHECKPOINT_EVERY_RECORDS = 100
CHECKPOINT_EVERY_SECONDS = 10.0


def record_leaf(record: DecisionRecord) -> bytes:
    """The leaf data: the canonical JSON of every field of the record, its ID token included."""
    return canonical_json(record.model_dump(mode="json")).encode()


def record_leaf_hash(record: DecisionRecord) -> bytes:
    """The record's leaf hash, SHA-256(0x00 || record_leaf(record))."""
    return leaf_hash(record_leaf(record))


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class Checkpoint(BaseModel):
    """A signed tree head: the log had `size` records, whose tree has `root_hash`, at `timestamp`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["temporal-ciba.log-checkpoint.v1"] = CHECKPOINT_FORMAT
    size: int
    root_hash: str
    timestamp: datetime
    key_id: str
    signature: str

    @staticmethod
    def signed_bytes(size: int, root_hash: str, timestamp: datetime, key: str) -> bytes:
        """What the log key signs: the canonical JSON of the format, size, root, time and key id."""
        return canonical_json(
            {
                "format": CHECKPOINT_FORMAT,
                "size": size,
                "root_hash": root_hash,
                "timestamp": timestamp.astimezone(UTC).isoformat(),
                "key_id": key,
            }
        ).encode()

    def verifies(self, public_key: Ed25519PublicKey) -> bool:
        """Whether the log key `public_key` signed this checkpoint."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
            public_key.verify(signature, self.signed_bytes(self.size, self.root_hash, self.timestamp, self.key_id))
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    @property
    def root(self) -> bytes:
        """The root hash as bytes (ValueError if it is not hex)."""
        return bytes.fromhex(self.root_hash)


class LogSigner:
    """Signs checkpoints with the log signing key (an Ed25519 private key from its 32-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"LogSigner(key_id={self.key_id!r})"

    @property
    def public_key_text(self) -> str:
        """The public key, base64 of its 32 raw bytes: what `audit log-key` prints and `verify --log-key` takes."""
        return base64.b64encode(self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")

    def sign(self, size: int, root: bytes, timestamp: datetime | None = None) -> Checkpoint:
        """The checkpoint of a tree of `size` records with root `root`, signed now (or at `timestamp`)."""
        timestamp = (timestamp or datetime.now(UTC)).astimezone(UTC)
        signed = Checkpoint.signed_bytes(size, root.hex(), timestamp, self.key_id)
        signature = base64.b64encode(self._key.sign(signed)).decode("ascii")
        return Checkpoint(size=size, root_hash=root.hex(), timestamp=timestamp, key_id=self.key_id, signature=signature)


def load_log_key(source: str) -> Ed25519PublicKey:
    """The log's public key: base64 of its 32 raw bytes, or a file holding that (ValueError otherwise)."""
    text = source.strip()
    if not _looks_like_key(text):
        try:
            text = Path(source).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--log-key is neither a key (base64 of 32 bytes) nor a file: {exc.strerror}") from None
    if not _looks_like_key(text):
        raise ValueError("--log-key: not an Ed25519 public key (base64 of 32 bytes, as `audit log-key` prints)")
    return Ed25519PublicKey.from_public_bytes(_b64(text))


def _b64(text: str) -> bytes:
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)


def _looks_like_key(text: str) -> bool:
    try:
        return len(_b64(text)) == 32
    except (binascii.Error, ValueError):
        return False


class Consistency(BaseModel):
    """A consistency proof from an earlier tree size to the export's checkpoint (RFC 9162 §2.1.4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    old_size: int
    proof: list[str]


class ExportHeader(BaseModel):
    """An export's first line: the checkpoint its proofs lead to, and what it selected.

    `complete` is true when no filter was given: every position of the log up to the checkpoint
    is in the export, which `audit verify` then checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["temporal-ciba.decision-export.v1"] = EXPORT_FORMAT
    checkpoint: Checkpoint | None
    complete: bool
    consistency: Consistency | None = None


class LogPlace(BaseModel):
    """A record's place in the log: its sequence number and its inclusion proof in the checkpoint's tree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    tree_size: int | None = None
    inclusion: list[str] | None = None

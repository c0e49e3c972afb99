"""AES-256-GCM payload codec: every payload in history is ciphertext, bound to its workflow.

The key is derived from CIBA_PAYLOAD_KEY for this purpose only; each payload carries the id
of the key that sealed it, so a wrong key fails loudly instead of returning garbage.

Temporal hands the codec a serialization context naming the workflow a payload belongs to
(its input, a signal to it, an activity it schedules). The codec writes that workflow id into
the payload's metadata and its associated data, and, given a context, opens only payloads of
that workflow: a ciphertext copied into another workflow's history does not decrypt. Without
a context (the codec server decoding for the UI) the id in the metadata is used as written.

A codec that requires encryption (the worker's and the client's) refuses payloads that are not
encrypted under its key, so nothing runs on input anyone without the key could write
(`temporal workflow signal` with plain JSON, say). Refused, the codec either raises
PayloadDecryptionError, or (`mark_refused`, what CibaPlugin's data converter uses) puts a
refusal marker in the payload's place: decoding a workflow activation then goes on, and the
payload converter refuses the marker for the one value it stood for (temporal_ciba._plugin): an
undecodable signal is dropped, an update rejected, a start input fails its workflow, and the
workflow task never fails for input someone else wrote.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext

from temporal_ciba.crypto._keys import derive_key

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
WORKFLOW_ID_METADATA = "encryption-workflow-id"
NONCE_BYTES = 12
TAG_BYTES = 16
# A refused payload's stand-in (mark_refused): its encoding, and why it was refused.
REFUSED_ENCODING = b"binary/ciba-refused"
REFUSED_REASON_METADATA = "ciba-refused-reason"
REFUSED_KIND_METADATA = "ciba-refused-kind"
MAX_REASON_CHARS = 200
_KEY_ID = re.compile(rb"[0-9a-f]{16}")
# The one payload Temporal's server writes itself into a workflow's history: the details of an
# activity it cancelled before an attempt started (one waiting to be retried). Passed through
# as it is: refused, the cancellation it answers would fail the workflow that asked for it.
SERVER_CANCEL_DETAILS = Payload(metadata={"encoding": b"json/plain"}, data=b'"ACTIVITY_ID_NOT_STARTED"')


class PayloadDecryptionError(Exception):
    """A payload was sealed with another key, for another workflow, altered, or not encrypted.

    `kind`: "other_key" (sealed under another key id: a worker with the wrong CIBA_PAYLOAD_KEY
    looks the same), or "refused" (plaintext, another workflow's, unbound, altered, malformed)."""

    def __init__(self, message: str, *, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


def refusal_marker(error: PayloadDecryptionError) -> Payload:
    """The stand-in for a refused payload: no data, only why it was refused."""
    reason = str(error)[:MAX_REASON_CHARS].encode("ascii", errors="backslashreplace")
    return Payload(
        metadata={
            "encoding": REFUSED_ENCODING,
            REFUSED_REASON_METADATA: reason,
            REFUSED_KIND_METADATA: error.kind.encode("ascii"),
        }
    )


def refusal(payload: Payload) -> PayloadDecryptionError | None:
    """The refusal a marker stands for; None for any other payload."""
    if payload.metadata.get("encoding") != REFUSED_ENCODING:
        return None
    reason = payload.metadata.get(REFUSED_REASON_METADATA, b"refused").decode("ascii", errors="backslashreplace")
    kind = payload.metadata.get(REFUSED_KIND_METADATA, b"refused").decode("ascii", errors="backslashreplace")
    return PayloadDecryptionError(reason, kind="other_key" if kind == "other_key" else "refused")


@dataclasses.dataclass(frozen=True)
class _Binding:
    """What a codec instance binds to.

    Its workflow (from the serialization context), and whether payloads bound to no workflow
    are accepted."""

    workflow_id: str | None = None
    accept_unbound: bool = True


class AesGcmCodec(PayloadCodec, WithSerializationContext):
    """AES-GCM payload codec whose ciphertext names the workflow it was written for.

    `require_encryption`: refuse plaintext payloads (the worker and clients); the codec server
    passes False to show whatever history holds. `accept_unbound`: accept ciphertext that names
    no workflow, which pending approvals of a deployment upgraded from a codec without workflow
    binding still hold; set False once none can be pending. `mark_refused`: decode a refused
    payload to a refusal marker (refusal_marker) instead of raising PayloadDecryptionError, for a
    payload converter that refuses the marker (CibaPlugin's)."""

    def __init__(
        self,
        payload_key: bytes,
        *,
        require_encryption: bool = True,
        accept_unbound: bool = True,
        mark_refused: bool = False,
    ) -> None:
        key = derive_key(payload_key, "payload codec v1")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]
        self.require_encryption = require_encryption
        self.mark_refused = mark_refused
        self._binding = _Binding(accept_unbound=accept_unbound)

    def __repr__(self) -> str:
        return f"AesGcmCodec(key_id={self.key_id!r}, workflow_id={self._binding.workflow_id!r})"

    @property
    def workflow_id(self) -> str | None:
        return self._binding.workflow_id

    def with_context(self, context: SerializationContext) -> AesGcmCodec:
        workflow_id = getattr(context, "workflow_id", None)
        if workflow_id == self._binding.workflow_id:
            return self
        bound = copy.copy(self)  # shares the AEAD; only the binding differs
        bound._binding = dataclasses.replace(self._binding, workflow_id=workflow_id)
        return bound

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt_or_mark(payload) for payload in payloads]

    def _decrypt_or_mark(self, payload: Payload) -> Payload:
        if not self.mark_refused:
            return self._decrypt(payload)
        try:
            return self._decrypt(payload)
        except PayloadDecryptionError as error:
            return refusal_marker(error)

    def _associated_data(self, key_id: bytes, workflow_id: bytes | None) -> bytes:
        # Authenticated, not secret: the key id, and the workflow the payload belongs to.
        return key_id if workflow_id is None else key_id + b"\x00workflow\x00" + workflow_id

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.key_id.encode()
        workflow_id = self._binding.workflow_id.encode() if self._binding.workflow_id is not None else None
        ciphertext = self._aead.encrypt(nonce, payload.SerializeToString(), self._associated_data(key_id, workflow_id))
        metadata = {"encoding": ENCODING, KEY_ID_METADATA: key_id}
        if workflow_id is not None:
            metadata[WORKFLOW_ID_METADATA] = workflow_id
        return Payload(metadata=metadata, data=nonce + ciphertext)

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self.require_encryption and payload != SERVER_CANCEL_DETAILS:
                raise PayloadDecryptionError("refused a payload that is not encrypted with the payload key")
            return payload
        # Input from history or a codec server's caller may be anything: malformed is an error, not a crash.
        key_id_bytes = payload.metadata.get(KEY_ID_METADATA, b"")
        if key_id_bytes != self.key_id.encode():
            shown = key_id_bytes.decode("ascii", errors="backslashreplace")[:64]
            # A well-formed key id of another key is what a worker with the wrong key sees.
            kind = "other_key" if _KEY_ID.fullmatch(key_id_bytes) else "refused"
            raise PayloadDecryptionError(
                f"payload encrypted with key {shown!r}, this codec holds {self.key_id!r}", kind=kind
            )
        written_for = payload.metadata.get(WORKFLOW_ID_METADATA)
        expected = self._binding.workflow_id
        if expected is not None:
            if written_for is None and not self._binding.accept_unbound:
                raise PayloadDecryptionError("refused a payload that names no workflow")
            if written_for is not None and written_for != expected.encode():
                raise PayloadDecryptionError("refused a payload written for another workflow")
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError("payload is too short to be ciphertext (altered or not encrypted)")
        try:
            plaintext = self._aead.decrypt(
                payload.data[:NONCE_BYTES],
                payload.data[NONCE_BYTES:],
                self._associated_data(key_id_bytes, written_for),
            )
        except InvalidTag:
            raise PayloadDecryptionError("payload failed authentication (altered or wrong key)") from None
        try:
            return Payload.FromString(plaintext)
        except DecodeError:
            raise PayloadDecryptionError("payload decrypted to something that is not a payload") from None

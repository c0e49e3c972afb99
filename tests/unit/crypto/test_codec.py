"""The payload codec.

Ciphertext bound to its workflow, plaintext refused, malformed input an error. Temporal hands the
codec a serialization context naming the workflow."""

from __future__ import annotations

import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import WorkflowSerializationContext

from temporal_ciba.crypto._codec import WORKFLOW_ID_METADATA, AesGcmCodec, PayloadDecryptionError

KEY = os.urandom(32)
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"amount":"120.00"}')


def bound(workflow_id: str, **options: bool) -> AesGcmCodec:
    return AesGcmCodec(KEY, **options).with_context(
        WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)
    )


async def test_a_payload_opens_in_its_own_workflow_and_without_a_context() -> None:
    [sealed] = await bound("wf-a").encode([PLAIN])
    assert sealed.metadata[WORKFLOW_ID_METADATA] == b"wf-a" and b"120.00" not in sealed.data
    assert await bound("wf-a").decode([sealed]) == [PLAIN]
    assert await AesGcmCodec(KEY).decode([sealed]) == [PLAIN]  # the codec server, for the UI


async def test_a_payload_moved_to_another_workflow_is_refused() -> None:
    [sealed] = await bound("wf-a").encode([PLAIN])
    with pytest.raises(PayloadDecryptionError, match="another workflow"):
        await bound("wf-b").decode([sealed])
    # Rewriting the name in the metadata breaks the authentication instead.
    sealed.metadata[WORKFLOW_ID_METADATA] = b"wf-b"
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await bound("wf-b").decode([sealed])


async def test_plaintext_is_refused_unless_asked_to_show_it() -> None:
    with pytest.raises(PayloadDecryptionError, match="not encrypted"):
        await bound("wf-a").decode([PLAIN])
    assert await AesGcmCodec(KEY, require_encryption=False).decode([PLAIN]) == [PLAIN]


async def test_payloads_from_before_binding_are_accepted_only_while_allowed() -> None:
    [legacy] = await AesGcmCodec(KEY).encode([PLAIN])  # no context: names no workflow
    assert WORKFLOW_ID_METADATA not in legacy.metadata
    assert await bound("wf-a").decode([legacy]) == [PLAIN]
    with pytest.raises(PayloadDecryptionError, match="names no workflow"):
        await bound("wf-a", accept_unbound=False).decode([legacy])


@pytest.mark.parametrize(
    "metadata,data",
    [
        ({"encoding": b"binary/encrypted", "encryption-key-id": b"\xff\xfe"}, b"x" * 40),
        ({"encoding": b"binary/encrypted"}, b"x" * 40),
        ({"encoding": b"binary/encrypted", "encryption-key-id": None}, b"short"),
    ],
    ids=["non_utf8_key_id", "no_key_id", "shorter_than_a_nonce"],
)
async def test_malformed_ciphertext_is_an_error_not_a_crash(metadata: dict[str, bytes | None], data: bytes) -> None:
    codec = AesGcmCodec(KEY)
    if metadata.get("encryption-key-id", b"") is None:
        metadata["encryption-key-id"] = codec.key_id.encode()
    payload = Payload(metadata={k: v for k, v in metadata.items() if v is not None}, data=data)
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([payload])

"""The payload codec.

Ciphertext bound to its workflow, plaintext refused, malformed input an error. Temporal hands the
codec a serialization context naming the workflow."""

from __future__ import annotations

import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import WorkflowSerializationContext

from temporal_ciba.crypto._codec import (
    REFUSED_ENCODING,
    WORKFLOW_ID_METADATA,
    AesGcmCodec,
    PayloadDecryptionError,
    refusal,
    refusal_marker,
)

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


async def test_the_servers_own_cancel_details_are_the_one_plaintext_passed_through() -> None:
    """The server cancels an activity waiting to be retried and writes these details itself; a
    workflow that cancels its approval then must not fail on them. Any other plaintext is refused."""
    server_details = Payload(metadata={"encoding": b"json/plain"}, data=b'"ACTIVITY_ID_NOT_STARTED"')
    assert await bound("wf-a").decode([server_details]) == [server_details]
    for other in (
        Payload(metadata={"encoding": b"json/plain"}, data=b'"ACTIVITY_ID_UNKNOWN"'),
        Payload(metadata={"encoding": b"json/plain", "x": b"y"}, data=b'"ACTIVITY_ID_NOT_STARTED"'),
        Payload(metadata={"encoding": b"binary/plain"}, data=b'"ACTIVITY_ID_NOT_STARTED"'),
    ):
        with pytest.raises(PayloadDecryptionError, match="not encrypted"):
            await bound("wf-a").decode([other])


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


async def test_marking_codec_puts_a_refusal_marker_in_place_of_each_refused_payload() -> None:
    """What CibaPlugin's codec does: decoding goes on, the marker says why, and holds nothing sent."""
    [sealed] = await bound("wf-a").encode([PLAIN])
    [other_key] = (
        await AesGcmCodec(os.urandom(32))
        .with_context(WorkflowSerializationContext(namespace="default", workflow_id="wf-a"))
        .encode([PLAIN])
    )
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1])
    garbage = Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"\xff`*"}, data=sealed.data)
    codec = bound("wf-a", mark_refused=True)
    decoded = await codec.decode([PLAIN, sealed, other_key, truncated, garbage])
    assert decoded[1] == PLAIN
    refusals = [refusal(payload) for payload in decoded]
    assert refusals[1] is None
    reasons = [(str(error), error.kind) for error in refusals if error is not None]
    assert [kind for _, kind in reasons] == ["refused", "other_key", "refused", "refused"]
    assert "not encrypted" in reasons[0][0] and "failed authentication" in reasons[2][0]
    for index in (0, 2, 3, 4):
        assert decoded[index].metadata["encoding"] == REFUSED_ENCODING and decoded[index].data == b""
    # Without mark_refused the same payloads raise, as before.
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await bound("wf-a").decode([truncated])


def test_only_a_marker_is_a_refusal() -> None:
    lookalike = Payload(metadata={"encoding": b"json/plain", "ciba-refused-reason": b"x"}, data=b"{}")
    assert refusal(lookalike) is None and refusal(PLAIN) is None
    error = refusal(refusal_marker(PayloadDecryptionError("why\n" * 100, kind="other_key")))
    assert error is not None and error.kind == "other_key" and len(str(error)) <= 200


@pytest.mark.parametrize(
    ("key_id", "kind"),
    [
        (b"0123456789abcdef", "other_key"),
        (b"0123456789ABCDEF", "refused"),
        (b"0123456789abcde", "refused"),
        (b"\xff\xfe", "refused"),
        (b"", "refused"),
    ],
)
async def test_only_a_well_formed_key_id_of_another_key_reads_as_the_wrong_key(key_id: bytes, kind: str) -> None:
    """A worker holding the wrong CIBA_PAYLOAD_KEY sees "other_key"; anything else is refused."""
    payload = Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": key_id}, data=b"x" * 40)
    with pytest.raises(PayloadDecryptionError) as refused:
        await AesGcmCodec(KEY).decode([payload])
    assert refused.value.kind == kind


def test_a_marker_holds_why_in_ascii_and_nothing_else() -> None:
    reason = "payé " + "x" * 300
    marker = refusal_marker(PayloadDecryptionError(reason, kind="other_key"))
    assert dict(marker.metadata) == {
        "encoding": REFUSED_ENCODING,
        "ciba-refused-reason": reason[:200].encode("ascii", errors="backslashreplace"),
        "ciba-refused-kind": b"other_key",
    }
    assert marker.data == b""


@pytest.mark.parametrize(
    ("metadata", "reason", "kind"),
    [
        ({}, "refused", "refused"),
        ({"ciba-refused-reason": b"pay\xc3\xa9", "ciba-refused-kind": b"other_key"}, "pay\\xc3\\xa9", "other_key"),
        ({"ciba-refused-reason": b"\xff", "ciba-refused-kind": b"\xc3\xa9"}, "\\xff", "refused"),
        ({"ciba-refused-kind": b"wrong_key"}, "refused", "refused"),
    ],
    ids=["nothing_but_the_encoding", "non_ascii_reason", "not_utf8", "unknown_kind"],
)
def test_a_marker_reads_whatever_its_metadata_holds(metadata: dict[str, bytes], reason: str, kind: str) -> None:
    """Never an exception while decoding an activation: missing or odd fields read as a plain refusal."""
    error = refusal(Payload(metadata={"encoding": REFUSED_ENCODING, **metadata}))
    assert error is not None
    assert (str(error), error.kind) == (reason, kind)

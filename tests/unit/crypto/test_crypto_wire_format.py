"""What this version wrote opens with the next one.

Pending approvals wait across deploys, so a notification token, a sealed token and a history
payload written under a key must keep opening under it after an upgrade, and an approval's DPoP
key must stay the same (docs/guides/changing-workflow-code.md).
The values below were written by this code under a fixed key; a change to a key derivation, an
associated data, a prefix or a layout fails here."""

from __future__ import annotations

from temporalio.api.common.v1 import Payload

from temporal_ciba.crypto._codec import AesGcmCodec
from temporal_ciba.crypto._dpop_keys import DPoPKeys
from temporal_ciba.crypto._keys import derive_key
from temporal_ciba.crypto._notification import NotificationProofs, NotificationTokens, NotifiedApproval
from temporal_ciba.crypto._sealing import TokenSealer, access_token_context, tokens_context

KEY = bytes(range(32))
NOTIFICATION_TOKEN = (
    "RnfZszG8V04Rn-byLXWVCQoESF0D2IdyJsSjdty4DsNYEMW_nFMXN4s5YxcAfHm0rqy0TK2aTErlr3LhASUw7RCiiidEkENH8g"
)
NOTIFICATION_PROOF = "WLnoBlEfLk39bow2i7Kj2ZqS13yP8x7r4V51hV_4bIo"
SEALED_TOKEN_RESPONSE = "sealed.v1.LDf8v7Kf26QT_iW0WRpfVF1SInl4vIwOxeD_goNbn26N2un2JlDT5p5JpAn4qA=="
KEY_ID = "9bc1b24e1c8064a6"
BOUND_PAYLOAD = bytes.fromhex(
    "ceeddef1922409e4ef8b1c8c3b8964df92c20b9ecca3d76591a9b803555a31ec1327a423d2ddcf7f7d863e6e3077f503683e2d97982a"
    "c24b187a40fabc"
)
UNBOUND_PAYLOAD = bytes.fromhex(
    "131a830d6cf4c9310e1f77ee27adb4e7ff7f9642d48ce59aa41e7c01bd90a02bc373e47c3eb4437a89b1ea518dcae6308915cccecbbf"
    "86dd1ae51f3f85"
)
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')


class _Context:
    workflow_id = "agent-1"


def test_wire_format_rule_key_derivation_is_hkdf_sha256_per_purpose() -> None:
    assert derive_key(KEY, "token seal v1").hex() == "451965437ce6a8be4bb07dd6e6cbde59422ff4fdce4155ed76ae3365d92706ac"


def test_wire_format_rule_an_approval_s_dpop_key_stays_the_same() -> None:
    # The OP bound the access token to this key (cnf.jkt); an upgraded worker that uses or
    # revokes the token of a pending approval must prove possession of the same one.
    key = DPoPKeys(KEY).for_approval("req-1")
    assert key.thumbprint == "oW8-Imf9e0XSRBX9sygQ7q7Zt2pGSqR6EPX1FJ06BP8"


def test_wire_format_rule_a_notification_token_of_this_version_still_opens() -> None:
    assert NotificationTokens(KEY).open(NOTIFICATION_TOKEN) == NotifiedApproval("agent-1.approval-0123", "run-abc")


def test_wire_format_rule_a_notification_proof_of_this_version_still_holds() -> None:
    # A push's proof travels in its signal and is checked when the workflow redeems, possibly by
    # an upgraded worker: the message (a JSON array, compact, ASCII-escaped) and its key stay put.
    proofs = NotificationProofs(KEY)
    push = {"workflow_id": "agent-1.approval-0123", "signal": "ciba.deliver", "auth_req_id": "req-1"}
    content = (None, "access_denied", "refusé")
    assert proofs.prove(**push, first_run_id="run-abc", content=content) == NOTIFICATION_PROOF
    assert proofs.check(NOTIFICATION_PROOF, **push, first_run_id="run-abc", content=content)


def test_wire_format_rule_a_sealed_token_response_of_this_version_still_opens() -> None:
    context = tokens_context("req-1", "approval-1")
    assert context == "token-response v2 5:req-1 approval-1"
    assert TokenSealer(KEY).unseal(SEALED_TOKEN_RESPONSE, context=context) == "the-token-response"


def test_wire_format_rule_access_token_context_names_action_workflow_and_run() -> None:
    digest = "d" * 8
    context = access_token_context("req-1", action_digest=digest, workflow_id="agent-1", run_id="run-1")
    assert context == "access-token v2 5:req-1 dddddddd agent-1 run-1"
    unbound = access_token_context("req-1", action_digest=None, workflow_id="agent-1", run_id="run-1")
    assert unbound == "access-token v2 5:req-1 - agent-1 run-1"


async def test_wire_format_rule_history_payloads_of_this_version_still_decode() -> None:
    codec = AesGcmCodec(KEY)
    assert codec.key_id == KEY_ID
    bound = Payload(
        metadata={
            "encoding": b"binary/encrypted",
            "encryption-key-id": KEY_ID.encode(),
            "encryption-workflow-id": b"agent-1",
        },
        data=BOUND_PAYLOAD,
    )
    unbound = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": KEY_ID.encode()}, data=UNBOUND_PAYLOAD
    )
    assert await codec.with_context(_Context()).decode([bound]) == [PLAIN]  # type: ignore[arg-type]
    assert await codec.decode([bound, unbound]) == [PLAIN, PLAIN]
    # What it writes now carries the same metadata.
    (written,) = await codec.with_context(_Context()).encode([PLAIN])  # type: ignore[arg-type]
    assert dict(written.metadata) == dict(bound.metadata)

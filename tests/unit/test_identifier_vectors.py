"""Test vectors for every digest and identifier whose format others depend on.

Approvals are bound to digests, resource servers deduplicate on idempotency keys, auditors
recompute record ids, and operators find approvals by workflow id. Each vector here is the
value for fixed inputs: a changed format fails this file, so it is a deliberate change (with
its migration) and never a silent one."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba import ApprovalOutcome, ApprovalRequest, idempotency_key
from temporal_ciba._quorum import quorum_child_id
from temporal_ciba.agents import approval_workflow_id, tool_action_digest
from temporal_ciba.mcp import McpClient, mcp_call_workflow_id
from temporal_ciba.records import EvidenceKeys, LogSigner
from temporal_ciba.records._model import record_id, request_digest
from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest

TOOL_ARGUMENTS = {"service": "api", "replicas": 3, "note": "é"}
TOOL_DIGEST = "d6b7c1cb3b1bd07af98a7c4e4b1e6299c99bf9fd272b955299b4e7948a19ad27"


def outcome(**changes: object) -> ApprovalOutcome:
    approved = ApprovalOutcome(
        status="approved",
        workflow_id="agent-1.approval",
        auth_req_id="req-1",
        reason="approved by alice",
        action_digest=TOOL_DIGEST,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return approved.model_copy(update=changes)


def test_tool_call_digest() -> None:
    # SHA-256 of the canonical JSON (sorted keys, no whitespace, UTF-8 unescaped) of tool and arguments.
    canonical = '{"arguments":{"note":"é","replicas":3,"service":"api"},"tool":"deploy"}'
    assert hashlib.sha256(canonical.encode()).hexdigest() == TOOL_DIGEST
    assert tool_action_digest("deploy", TOOL_ARGUMENTS) == TOOL_DIGEST


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_tool_call_digest_refuses_numbers_json_cannot_state(number: float) -> None:
    # NaN and infinities have no JSON form: two tools could read the same text differently.
    with pytest.raises(ValueError):
        tool_action_digest("deploy", {"replicas": number})


def test_binding_code() -> None:
    # The first 4 base32 characters of the digest's first 3 bytes.
    request = ApprovalRequest(login_hint="alice", binding_message="Deploy", action_digest=TOOL_DIGEST)
    assert request.code == "2234"


def test_tool_approval_workflow_id() -> None:
    assert approval_workflow_id("agent-1", "call_1", TOOL_DIGEST) == "agent-1.tool-call_1-d6b7c1cb3b1b"
    # A call id with characters outside the safe set is cut and named by its hash.
    assert (
        approval_workflow_id("agent-1", "call/1 ü", TOOL_DIGEST)
        == "agent-1.tool-call_1__-d5710452198fd903-d6b7c1cb3b1b"
    )


def test_quorum_child_workflow_id() -> None:
    assert (
        quorum_child_id("agent-1.approval", "run-1", 2, "bob@example.com")
        == "agent-1.approval.q-run-1.2-bob@example.com"
    )
    assert (
        quorum_child_id("agent-1.approval", "run-1", 0, "Bob Smith <bob@example.com>")
        == "agent-1.approval.q-run-1.0-Bob_Smith__bob@example.c-7f93b5b08301"
    )


def test_idempotency_key() -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="agent-1", workflow_run_id="run-1")
    assert env.run(idempotency_key, outcome()) == "agent-1:a2911f8a133754bcab11fe3aefe96717"
    # An approval that asked nobody (a policy's) has no auth_req_id; one not bound to an action no digest.
    assert env.run(idempotency_key, outcome(auth_req_id=None)) == "agent-1:4f53ff02cc559e637f705e894e317ad5"
    assert env.run(idempotency_key, outcome(action_digest=None)) == "agent-1:9aea14b9d756a4cd775e6b14c7a8b6a1"


def test_record_ids() -> None:
    assert (
        record_id(workflow_id="agent-1.approval", first_run_id="run-1", outcome=outcome())
        == "22570c1939a4df1b243136c10e8cac78953bb61b6c67a685faafd54b1213d927"
    )
    # An outcome without an auth_req_id (the OP refused the request) is named by status, time and action.
    refused = outcome(auth_req_id=None, status="error")
    assert (
        record_id(workflow_id="agent-1.approval", first_run_id="run-1", outcome=refused)
        == "2b9b80af7ac342efaebee31c5eb767acd9d77bf32736faa6432c322b317ba6b2"
    )


def test_request_digest() -> None:
    digest = request_digest(
        login_hint="alice",
        binding_message="Pay",
        scope="openid",
        acr_values=None,
        authorization_details=None,
        action_digest=TOOL_DIGEST,
    )
    assert digest == "d96338868857499dbc206094618462d89d2465755ffc7d23a501857928b13dcb"


def test_payment_action_digest() -> None:
    # The sample's resource server enforces one payment per action digest.
    action = PaymentAction(
        amount="120.5",
        currency="EUR",
        creditor_name="ACME GmbH",
        creditor_iban="DE02 1203 0000 0000 2020 51",
        reference="INV-1",
    )
    canonical = (
        '{"amount":"120.50","creditor_iban":"DE02120300000000202051","creditor_name":"ACME GmbH",'
        '"currency":"EUR","reference":"INV-1"}'
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == action_digest(action)
    assert action_digest(action) == "baf49128f889c633357aef0d181d2a23d31e4de7dbabf11c055f02a562b1a0aa"


def test_record_evidence_and_mac_under_a_record_key() -> None:
    """Records written under one version must open under the next: the key derivation (its
    purposes), the key id, the evidence's layout and the MAC's message are all fixed here."""
    keys = EvidenceKeys([bytes(range(32))])
    assert keys.current_key_id == "512f4ba311e69796"
    evidence = "evidence.v1.512f4ba311e69796.AAAAAAAAAAAAAAAACpSswEvjDVthulV85JTmoFaPV0h24uT4MVEx4w=="
    assert keys.decrypt(evidence, body_digest="ab" * 32) == "eyJ.id.token"
    assert keys.mac("rec-1", 7, bytes(32)) == (
        "mac.v1.512f4ba311e69796.90d7fd6cea402f38fa47d0e9041f95175e0e84d3055756a31385aebe34f651f8"
    )


def test_log_signing_key_id_and_public_key_text() -> None:
    """Checkpoints name the key that signed them; auditors pass the public key as this text."""
    signer = LogSigner(bytes(range(32)))
    assert signer.key_id == "56475aa75463474c"
    assert signer.public_key_text == "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


def test_mcp_client_key_and_gated_call_workflow_id() -> None:
    """A retry of a gated MCP call from any gateway replica must find the same workflow."""
    alice = McpClient(subject="alice", client_id="agent-app", issuer="https://login.example")
    assert alice.key() == "91c414265003aa2a"
    assert McpClient(transport="stdio").key() == "83da6e1609dc47f7"  # no subject, client or issuer
    base = "mcp-91c414265003aa2a.call-"
    assert mcp_call_workflow_id(alice, "call-1", TOOL_DIGEST) == base + "call-1-d6b7c1cb3b1b"
    # A safe call id of up to 64 characters is kept; longer, or unsafe, it is cut and hashed.
    assert mcp_call_workflow_id(alice, "c" * 64, TOOL_DIGEST) == base + "c" * 64 + "-d6b7c1cb3b1b"
    assert mcp_call_workflow_id(alice, "c" * 65, TOOL_DIGEST) == base + "c" * 32 + "-b30855e510446ac3-d6b7c1cb3b1b"
    assert mcp_call_workflow_id(alice, "call 1/2", TOOL_DIGEST) == base + "call_1_2-257101a75c7df1ff-d6b7c1cb3b1b"

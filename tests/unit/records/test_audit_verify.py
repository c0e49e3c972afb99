"""`audit verify`'s rules on the evidence, on literal records and tokens signed here (no OP, no store).

Each record sits at its place in a log signed here (tests.support.records.logged_export), so
only the rule under test can fail it; each rule fails the record it should, and a record that
keeps every rule passes. The log's own rules: test_decision_log.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, PolicyDecision
from temporal_ciba.ciba import AUTH_REQ_ID_CLAIM
from temporal_ciba.ciba._jwks import parse_jwks
from temporal_ciba.records import DecisionRecord, LogSigner, RecordDecisionInput
from temporal_ciba.records._audit import verify
from tests.support.records import logged_export

ISSUER, CLIENT = "https://op.example", "agent"
DECIDED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIGEST = "ab" * 32
KEY = rsa.generate_private_key(65537, 2048)
OTHER_KEY = rsa.generate_private_key(65537, 2048)
LOG = LogSigner(b"\x07" * 32)
JWKS = parse_jwks({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1"}]})


def id_token(key: Any = KEY, **claims: Any) -> str:
    payload = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "alice",
        "acr": "mfa",
        "amr": ["pwd", "otp"],
        "auth_time": int(DECIDED.timestamp()) - 20,
        "iat": int(DECIDED.timestamp()) - 5,
        "exp": int(DECIDED.timestamp()) + 600,
        AUTH_REQ_ID_CLAIM: "req-1",
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, key, algorithm="RS256", headers={"kid": "k1"}
    )


def record(token: str | None = None, **fields: Any) -> DecisionRecord:
    outcome = ApprovalOutcome(
        status="approved",
        workflow_id="wf",
        auth_req_id="req-1",
        reason="approved by alice",
        sub="alice",
        acr="mfa",
        amr=["pwd", "otp"],
        auth_time=int(DECIDED.timestamp()) - 20,
        action_digest=DIGEST,
        requested_at=DECIDED - timedelta(seconds=60),
        decided_at=DECIDED,
    )
    request = ApprovalRequest(
        login_hint="alice",
        binding_message="Pay EUR 120.00",
        action_digest=DIGEST,
        authorization_details=[{"type": "payment_initiation", "actionDigest": DIGEST}],
    )
    made = RecordDecisionInput(
        outcome=outcome, request=request, first_run_id="r1", run_id="r1", issuer=ISSUER, client_id=CLIENT
    ).record(token if token is not None else id_token())
    return made.model_copy(update=fields)


def failures(*records: DecisionRecord | str) -> list[str]:
    """The reasons verify gives for a log of the records, in order; a string is a line added as is."""
    logged = logged_export([r for r in records if not isinstance(r, str)], LOG)
    lines = logged + [r for r in records if isinstance(r, str)]
    return [failure.reason for failure in verify(lines, JWKS, LOG.public_key)]


def test_an_intact_record_verifies() -> None:
    assert failures(record()) == []


REQUESTED = int(DECIDED.timestamp()) - 60  # the record's requested_at


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (id_token(OTHER_KEY), "the ID token does not verify: the ID token signature does not verify"),
        (id_token(sub="bob"), "the ID token's sub differs from the record's"),
        (id_token(acr="pwd"), "the ID token's acr differs from the record's"),
        (id_token(amr=["pwd"]), "the ID token's amr differs from the record's"),
        (id_token(auth_time=1), "the ID token's auth_time differs from the record's"),
        (id_token(iss="https://evil.example"), "the ID token's iss differs from the record's"),
        (id_token(aud="another-client"), "the ID token is not for the recorded client"),
        (id_token(aud=f"{CLIENT}-other"), "the ID token is not for the recorded client"),  # a string, not a list
        (id_token(aud=["another-client"]), "the ID token is not for the recorded client"),
        (id_token(**{AUTH_REQ_ID_CLAIM: "req-2"}), "the ID token answers another auth_req_id"),
        (id_token(iat=None), "the ID token has no iat"),
        (id_token(iat=True), "the ID token has no iat"),
        (id_token(iat=REQUESTED - 3600), "the ID token was issued before the request (another decision's)"),
        (id_token(iat=REQUESTED - 61), "the ID token was issued before the request (another decision's)"),
        (
            id_token(iat=int(DECIDED.timestamp()) + 3600),
            "the ID token was issued after the decision (another decision's)",
        ),
        (
            id_token(iat=int(DECIDED.timestamp()) + 61),
            "the ID token was issued after the decision (another decision's)",
        ),
    ],
)
def test_evidence_that_does_not_match_the_record_fails(token: str, reason: str) -> None:
    assert failures(record(token)) == [reason]


@pytest.mark.parametrize(
    "token",
    [
        id_token(aud=[CLIENT, "another-client"]),
        id_token(iat=REQUESTED - 60),  # the leeway's edges
        id_token(iat=int(DECIDED.timestamp()) + 60),
        id_token(amr=None, auth_time=None),  # claims an OP may leave out
    ],
)
def test_evidence_within_the_rules_verifies(token: str) -> None:
    assert failures(record(token)) == []


def test_a_token_without_the_auth_req_id_claim_still_verifies() -> None:
    """oidc-provider as shipped adds no auth_req_id claim; the other claims still bind it."""
    assert failures(record(id_token(**{AUTH_REQ_ID_CLAIM: None}))) == []


def test_an_action_altered_or_inconsistent_fails() -> None:
    altered = record(binding_message="Pay EUR 9120.00")
    other_digest = record(authorization_details=[{"type": "payment_initiation", "actionDigest": "cd" * 32}])
    assert ["altered" in failure for failure in failures(altered)] == [True]
    # Both the digest check and the actionDigest check catch this one; the digest is checked first.
    assert len(failures(other_digest)) == 1


def test_an_approval_without_evidence_a_duplicate_and_a_malformed_line_fail() -> None:
    assert ["without its ID token" in found for found in failures(record().model_copy(update={"id_token": None}))] == [
        True
    ]
    duplicate, malformed = failures(record(), record(), "{}")
    assert "its record id is also" in duplicate and "two records of one decision" in duplicate
    assert "not a decision record" in malformed


def test_a_record_id_that_its_fields_do_not_give_fails() -> None:
    (found,) = failures(record().model_copy(update={"record_id": "ab" * 32}))
    assert "record id is not the one its workflow, run and auth_req_id give" in found


def test_two_records_may_not_share_an_auth_req_id_or_an_id_token() -> None:
    other_workflow = record().model_copy(update={"workflow_id": "wf-2"})
    other_workflow = other_workflow.model_copy(update={"record_id": other_workflow.expected_record_id()})
    (same_request,) = failures(record(), other_workflow)
    assert "its auth_req_id is also" in same_request
    # oidc-provider adds no auth_req_id claim: the same ID token then fits another request's record.
    token = id_token(**{AUTH_REQ_ID_CLAIM: None})
    other_request = record(token, auth_req_id="req-2")
    other_request = other_request.model_copy(update={"record_id": other_request.expected_record_id()})
    (same_token,) = failures(record(token), other_request)
    assert "its ID token is also" in same_token


def test_a_key_the_auditor_does_not_have_is_named() -> None:
    token = jwt.encode({"sub": "alice"}, KEY, algorithm="RS256", headers={"kid": "rotated-away"})
    (found,) = failures(record(token))
    assert "no key of the OP verifies it" in found


def test_an_action_the_policy_let_through_needs_no_evidence_and_names_no_approver() -> None:
    policy = PolicyDecision(rule="small amounts", reason="under 100", approval="none")
    assert failures(record().model_copy(update={"id_token": None, "policy": policy, "sub": None})) == []
    (with_token,) = failures(record().model_copy(update={"policy": policy}))
    (with_sub,) = failures(record().model_copy(update={"id_token": None, "policy": policy}))
    assert "yet it names an approver" in with_token and "yet it names an approver" in with_sub

"""The decision record: one per approval outcome, kept after Temporal's history is gone.

Who decided (the validated `sub`, `acr`, `amr`, `auth_time`), what (the action digest, the
authorization_details, the binding message), when (requested, decided), where (the approval's
workflow id, its run chain, the auth_req_id), how it ended and why, what the policy decided, and
the OP-signed ID token as evidence that anyone can re-verify against the OP's published keys
(`temporal-ciba audit verify`). The record id is derived from where the decision was taken, so a
retried or replayed write lands on the same record.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, OutcomeStatus, PolicyDecision
from temporal_ciba.ciba import AuthorizationDetails

RECORD_FORMAT: Literal["temporal-ciba.decision-record.v1"] = "temporal-ciba.decision-record.v1"


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same record everywhere."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record_id(*, workflow_id: str, first_run_id: str, outcome: ApprovalOutcome) -> str:
    """One id per decision, the same for the same inputs.

    It names the approval's workflow and run chain, and its auth_req_id; an outcome without one
    (the OP refused the request) is named by its status, time and action instead. The same
    inputs always give the same id, so a second write is recognised as the same."""
    return _record_id(
        workflow_id=workflow_id,
        first_run_id=first_run_id,
        auth_req_id=outcome.auth_req_id,
        status=outcome.status,
        decided_at=outcome.decided_at,
        action_digest=outcome.action_digest,
    )


def _record_id(
    *,
    workflow_id: str,
    first_run_id: str,
    auth_req_id: str | None,
    status: str,
    decided_at: datetime,
    action_digest: str | None,
) -> str:
    if auth_req_id is not None:
        return auth_req_record_id(workflow_id=workflow_id, first_run_id=first_run_id, auth_req_id=auth_req_id)
    return _id_of([workflow_id, first_run_id, "", status, decided_at.isoformat(), action_digest or ""])


def auth_req_record_id(*, workflow_id: str, first_run_id: str, auth_req_id: str) -> str:
    """The id of the record of the decision on `auth_req_id` in this approval (what `record_id` gives it)."""
    return _id_of([workflow_id, first_run_id, auth_req_id])


def _id_of(parts: list[str]) -> str:
    return _sha256("\n".join(f"{len(part)}:{part}" for part in parts))


def request_digest(
    *,
    login_hint: str | None,
    binding_message: str,
    scope: str,
    acr_values: str | None,
    authorization_details: AuthorizationDetails | None,
    action_digest: str | None,
) -> str:
    """SHA-256 of what was asked: the action as the approver saw it and as it was bound.

    `audit verify` recomputes it from the exported record."""
    return _sha256(
        canonical_json(
            {
                "login_hint": login_hint,
                "binding_message": binding_message,
                "scope": scope,
                "acr_values": acr_values,
                "authorization_details": authorization_details,
                "action_digest": action_digest,
            }
        )
    )


class RecordedPolicy(PolicyDecision):
    """What the policy decided, as a record states it: no field its leaf hash does not cover."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DecisionRecord(BaseModel):
    """One decision, as stored (the ID token encrypted) and as exported (`audit export`)."""

    # Forbid unknown fields: an export's record states nothing its leaf hash does not cover.
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["temporal-ciba.decision-record.v1"] = RECORD_FORMAT
    record_id: str
    status: OutcomeStatus
    reason: str
    error: str | None = None
    # Who: the person asked, and the validated claims of who approved.
    login_hint: str | None
    sub: str | None = None
    acr: str | None = None
    amr: list[str] | None = None
    auth_time: int | None = None
    subject_pinned: bool | None = None
    # What: the action, as bound and as shown to the approver.
    action_digest: str | None = None
    binding_message: str
    scope: str
    acr_values: str | None = None
    authorization_details: AuthorizationDetails | None = None
    request_digest: str
    # When.
    requested_at: datetime | None = None
    decided_at: datetime
    # Where: the approval's workflow, its run chain (first run) and the run that decided.
    workflow_id: str
    first_run_id: str
    run_id: str
    auth_req_id: str | None = None
    issuer: str | None = None
    client_id: str | None = None
    policy: RecordedPolicy | None = None
    # The OP-signed ID token of an approval: the evidence. Encrypted in the store; in clear in
    # an export (README, "Decision records").
    id_token: str | None = Field(default=None, repr=False)

    @property
    def action_types(self) -> list[str]:
        """The authorization_details types (RFC 9396 §2), what `audit export --action-type` filters on."""
        return [str(entry.get("type")) for entry in self.authorization_details or []]

    def expected_record_id(self) -> str:
        """The record id recomputed from the fields that name the decision (`record_id`)."""
        return _record_id(
            workflow_id=self.workflow_id,
            first_run_id=self.first_run_id,
            auth_req_id=self.auth_req_id,
            status=self.status,
            decided_at=self.decided_at,
            action_digest=self.action_digest,
        )

    def body_digest(self) -> str:
        """SHA-256 of the record but its evidence: the evidence's associated data (records.evidence)."""
        return _sha256(canonical_json(self.model_dump(mode="json", exclude={"id_token"})))

    def content_digest(self) -> str:
        """SHA-256 of the whole record, evidence included: two writes of one decision agree on it."""
        return _sha256(canonical_json(self.model_dump(mode="json")))


class RecordDecisionInput(BaseModel):
    """The `ciba.record_decision` activity's input: the outcome and what it answers.

    The ID token travels sealed (temporal_ciba.crypto.id_token_context), never in clear in
    history; so does the outcome's access token, kept beside the record (RecordedDecision)."""

    outcome: ApprovalOutcome
    request: ApprovalRequest
    first_run_id: str
    run_id: str
    issuer: str | None = None
    client_id: str | None = None
    sealed_id_token: str | None = Field(default=None, repr=False)

    def record(self, id_token: str | None) -> DecisionRecord:
        outcome, request = self.outcome, self.request
        return DecisionRecord(
            record_id=record_id(workflow_id=outcome.workflow_id, first_run_id=self.first_run_id, outcome=outcome),
            status=outcome.status,
            reason=outcome.reason,
            error=outcome.error,
            login_hint=request.login_hint,
            sub=outcome.sub,
            acr=outcome.acr,
            amr=outcome.amr,
            auth_time=outcome.auth_time,
            subject_pinned=outcome.subject_pinned,
            action_digest=request.action_digest,
            binding_message=request.binding_message,
            scope=request.scope,
            acr_values=request.acr_values,
            authorization_details=request.authorization_details,
            request_digest=request_digest(
                login_hint=request.login_hint,
                binding_message=request.binding_message,
                scope=request.scope,
                acr_values=request.acr_values,
                authorization_details=request.authorization_details,
                action_digest=request.action_digest,
            ),
            requested_at=outcome.requested_at,
            decided_at=outcome.decided_at,
            workflow_id=outcome.workflow_id,
            first_run_id=self.first_run_id,
            run_id=self.run_id,
            auth_req_id=outcome.auth_req_id,
            issuer=self.issuer,
            client_id=self.client_id,
            policy=RecordedPolicy(**outcome.policy.model_dump()) if outcome.policy is not None else None,
            id_token=id_token,
        )


class RecordedDecision(BaseModel):
    """The `ciba.record_decision` activity's answer: the record's id, and the decision to return.

    `outcome` is set when the store already held another decision under this id, written by an
    earlier workflow task of the same approval that never completed (its worker died after the
    write). That decision was taken first and is the one on record: the approval returns it, its
    sealed access token included, instead of the one it reached again."""

    record_id: str
    outcome: ApprovalOutcome | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_record_id(cls, value: Any) -> Any:
        # Histories recorded by workers whose activity answered with the record id alone.
        return {"record_id": value} if isinstance(value, str) else value

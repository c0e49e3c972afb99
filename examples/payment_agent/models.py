"""The example agent's action: a payment, its digest, and what the approver sees on the phone.

Pure functions, used alike by the workflow (deterministic) and by the payment activity, which
recomputes the digest before it pays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from temporal_ciba import ApprovalOutcome

AUTHORIZATION_DETAILS_TYPE = "payment_initiation"
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$")


class PaymentAction(BaseModel):
    """One payment, as the agent decided it and the human approves it."""

    model_config = ConfigDict(frozen=True)

    amount: str = Field(description="decimal amount with two places, e.g. '120.00'")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    creditor_name: str = Field(min_length=1, max_length=70)
    creditor_iban: str
    reference: str = Field(min_length=1, max_length=35)

    @field_validator("amount")
    @classmethod
    def _two_places(cls, amount: str) -> str:
        value = Decimal(amount)
        if value <= 0 or value != value.quantize(Decimal("0.01")):
            raise ValueError("amount must be positive with at most two decimal places")
        return f"{value:.2f}"

    @field_validator("creditor_iban")
    @classmethod
    def _iban(cls, iban: str) -> str:
        compact = iban.replace(" ", "").upper()
        if not _IBAN.match(compact):
            raise ValueError("creditor_iban is not an IBAN")
        return compact


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; amounts are strings, so this is RFC 8785 form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def action_digest(action: PaymentAction) -> str:
    """SHA-256 (hex) of the canonical JSON of the action."""
    return hashlib.sha256(canonical_json(action.model_dump()).encode()).hexdigest()


def short_code(digest: str) -> str:
    """Four characters the approver can compare between the agent's screen and the phone."""
    return base64.b32encode(bytes.fromhex(digest)[:3]).decode()[:4]


def binding_message(action: PaymentAction, digest: str) -> str:
    """CIBA §7.1 binding_message: short, plain, readable on a phone."""
    return f"Pay {action.currency} {action.amount} to {action.creditor_name[:40]}, code {short_code(digest)}"


def summary(action: PaymentAction) -> list[str]:
    """How the payment reads for operators in the Temporal UI (ApprovalRequest.summary)."""
    return [
        f"pay {action.currency} {action.amount} to {action.creditor_name}",
        f"IBAN {action.creditor_iban}",
        f"reference {action.reference}",
    ]


def authorization_details(action: PaymentAction, digest: str) -> list[dict[str, Any]]:
    """RFC 9396 authorization_details of type payment_initiation, carrying the action and its digest."""
    return [
        {
            "type": AUTHORIZATION_DETAILS_TYPE,
            "actions": ["initiate"],
            "instructedAmount": {"currency": action.currency, "amount": action.amount},
            "creditorName": action.creditor_name,
            "creditorAccount": {"iban": action.creditor_iban},
            "remittanceInformationUnstructured": action.reference,
            "actionDigest": digest,
        }
    ]


class PaymentAgentInput(BaseModel):
    """What the agent is asked to do: pay this invoice, with approval from this person."""

    action: PaymentAction
    approver: str = Field(min_length=1, description="login_hint of the person who must approve")
    scope: str = "openid payments"
    acr_values: str | None = None
    requested_expiry: int | None = Field(default=None, gt=0)
    expected_subject: str | None = None
    # Wait for the approval in the agent's own workflow (ping and push mode) instead of a child.
    inline: bool = False
    # Ask as the worker's approval policy says (CIBA_POLICY_FILE; the approver is the role
    # "owner"), with these other parties (role -> login_hint, e.g. {"treasury": "bob"}).
    use_policy: bool = False
    parties: dict[str, str] = {}


class ExecutePaymentInput(BaseModel):
    """The payment and its approval; the idempotency key is derived inside the activity
    (temporal_ciba._grant), never taken from here."""

    action: PaymentAction
    outcome: ApprovalOutcome


class PaymentReceipt(BaseModel):
    payment_id: str
    idempotency_key: str
    duplicate: bool = False


class PaymentAgentResult(BaseModel):
    outcome: ApprovalOutcome
    receipt: PaymentReceipt | None = None

"""The example agent's action: a payment, its digest, and what the approver sees on the phone.

Pure functions, used alike by the workflow (deterministic) and by the payment activity, which
recomputes the digest before it pays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from temporal_ciba import ApprovalOutcome
from temporal_ciba.ciba import BINDING_MESSAGE_MAX_LENGTH

AUTHORIZATION_DETAILS_TYPE = "payment_initiation"
# Every pattern here is matched against the whole string (re.fullmatch): `$` would let a trailing
# newline through, and "DE02...03" and "DE02...03\n" would be two actions for one account.
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}")
_AMOUNT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")
# What a text bound into the action (a creditor name, a reference) must not hold: control and
# format characters (Unicode categories C*: newlines, tabs, bidi overrides, zero-width
# characters) and line or paragraph separators; they would hide or reorder text on the phone.
_REFUSED_CATEGORIES = ("C", "Zl", "Zp")
_TEXT_MAX_LENGTH = {"creditor_name": 70, "reference": 35}


def normalize_text(text: str, field: str) -> str:
    """A text as it is bound and digested: NFKC (a fullwidth letter is its ASCII letter), whitespace runs
    collapsed to one space, stripped; ValueError for a control or format character."""
    text = unicodedata.normalize("NFKC", text)
    if any(unicodedata.category(c).startswith(_REFUSED_CATEGORIES) for c in text):
        raise ValueError(f"{field} must not contain control or format characters")
    return " ".join(text.split())


def canonical_iban(iban: str) -> str:
    """An IBAN as it is bound and digested: spaces removed, upper case; ValueError for anything but
    ASCII letters, digits and spaces in the IBAN's shape (no newline, tab or lookalike)."""
    compact = iban.replace(" ", "")
    if not compact.isascii() or not _IBAN.fullmatch(compact.upper()):
        raise ValueError("creditor_iban is not an IBAN")
    return compact.upper()


class PaymentAction(BaseModel):
    """One payment, as the agent decided it and the human approves it.

    Canonical once validated: two spellings of one payment (an IBAN with spaces or in lower case, a
    name with a double space) are one action with one digest."""

    model_config = ConfigDict(frozen=True)

    amount: str = Field(description="decimal amount with two places, e.g. '120.00'")
    # pydantic-core's regex engine: `$` is the end of the text, never before a final newline.
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    creditor_name: str = Field(min_length=1, max_length=_TEXT_MAX_LENGTH["creditor_name"])
    creditor_iban: str
    reference: str = Field(min_length=1, max_length=_TEXT_MAX_LENGTH["reference"])

    @field_validator("amount")
    @classmethod
    def _two_places(cls, amount: str) -> str:
        if not _AMOUNT.fullmatch(amount):
            raise ValueError("amount must be digits with at most two decimal places, e.g. '120.00'")
        value = Decimal(amount)
        if value <= 0:
            raise ValueError("amount must be positive")
        return f"{value:.2f}"

    @field_validator("creditor_name", "reference")
    @classmethod
    def _plain_text(cls, text: str, info: ValidationInfo) -> str:
        normalized = normalize_text(text, str(info.field_name))
        if not normalized:
            raise ValueError(f"{info.field_name} must not be blank")
        longest = _TEXT_MAX_LENGTH[str(info.field_name)]
        if len(normalized) > longest:  # NFKC may lengthen a text ("ﬃ" is "ffi")
            raise ValueError(f"{info.field_name} must be at most {longest} characters")
        return normalized

    @field_validator("creditor_iban")
    @classmethod
    def _iban(cls, iban: str) -> str:
        return canonical_iban(iban)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; amounts are strings, so this is RFC 8785 form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def action_digest(action: PaymentAction) -> str:
    """SHA-256 (hex) of the canonical JSON of the action."""
    return hashlib.sha256(canonical_json(action.model_dump()).encode()).hexdigest()


def short_code(digest: str) -> str:
    """Four characters the approver can compare between the agent's screen and the phone."""
    return base64.b32encode(bytes.fromhex(digest)[:3]).decode()[:4]


def binding_message(action: PaymentAction, digest: str, max_length: int = BINDING_MESSAGE_MAX_LENGTH) -> str:
    """CIBA §7.1 binding_message: what the approver's phone shows, short and plain.

    The amount, where the money goes (the whole IBAN), who it is for and the code, e.g.
    "Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH, code 7Q4K". Two payments to
    different accounts never read alike. The name comes last: where the message must be shorter
    (at most `max_length`, or an OP's rule when the library fits it), the name is shortened, never
    the amount, the account or the code. Within 128 characters only a name of over 47 characters
    with a long IBAN and amount is shortened, marked "..."."""
    head = f"Pay {action.currency} {action.amount} to IBAN {action.creditor_iban} of "
    tail = f", code {short_code(digest)}"
    name = action.creditor_name
    room = max_length - len(head) - len(tail)
    if len(name) > room:
        name = name[: max(room - 3, 1)].rstrip() + "..."
    return f"{head}{name}{tail}"


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

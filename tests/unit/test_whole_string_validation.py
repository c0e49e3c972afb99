"""Every pattern that validates input matches the whole string.

Each validator in the library and the samples is fed a valid value with whitespace before or
after it (a newline, which `$` lets through with `re.match`, and other whitespace) and with one
character swapped for a Unicode lookalike (a fullwidth or Arabic-Indic digit, a Cyrillic or
fullwidth letter, a look-alike dash, dot, colon or slash): each is refused. Texts bound into a
payment (creditor name, reference) are normalized instead: whitespace collapsed, a fullwidth
letter read as its ASCII letter, control and format characters refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._programs.callback_settings import CallbackSettings
from temporal_ciba._programs.codec_server_settings import CodecServerSettings
from temporal_ciba._settings import WorkerSettings
from temporal_ciba.ciba import BindingMessageRule
from temporal_ciba.ciba._backchannel import (
    _whole_number,
    check_client_notification_token,
    check_resource_indicators,
)
from temporal_ciba.ciba._http import retry_after_seconds
from temporal_ciba.ciba._profiles import PROFILES
from temporal_ciba_examples.payment_agent.models import PaymentAction, canonical_iban
from temporal_ciba_examples.payment_agent.payment_api import (
    valid_access_token,
    valid_action_digest,
    valid_idempotency_key,
)

DIGEST = hashlib.sha256(b"an action").hexdigest()
PAYMENT = {
    "amount": "120.00",
    "currency": "EUR",
    "creditor_name": "ACME GmbH",
    "creditor_iban": "DE02100100109307118603",
    "reference": "INV-2026-118",
}


def accepts(check: Callable[[str], Any]) -> Callable[[str], bool]:
    """A validator that raises (ValueError, pydantic's ValidationError) or returns None or False
    to refuse, as a predicate."""

    def accepted(value: str) -> bool:
        try:
            result = check(value)
        except ValueError:
            return False
        return result is not None and result is not False

    return accepted


def field_pattern(model: type[BaseModel], name: str) -> Callable[[str], bool]:
    """A settings field's own constraints (pydantic-core's regex engine, as the model applies them)."""
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, *model.model_fields[name].metadata])
    return accepts(adapter.validate_python)


def payment_field(name: str) -> Callable[[str], bool]:
    return accepts(lambda value: PaymentAction.model_validate({**PAYMENT, name: value}))


def profile_rule(name: str) -> Callable[[str], bool]:
    rule = PROFILES[name].request.binding_message
    assert isinstance(rule, BindingMessageRule) and rule.pattern is not None
    return rule.allows


# name -> (the validator as a predicate, a value it accepts)
VALIDATORS: dict[str, tuple[Callable[[str], bool], str]] = {
    "payment IBAN": (accepts(canonical_iban), "DE02100100109307118603"),
    "payment creditor_iban": (payment_field("creditor_iban"), "DE02100100109307118603"),
    "payment amount": (payment_field("amount"), "120.00"),
    "payment currency": (payment_field("currency"), "EUR"),
    "payment API action_digest": (valid_action_digest, DIGEST),
    "payment API Idempotency-Key": (valid_idempotency_key, "pay-2026-0001"),
    "payment API access token": (valid_access_token, "eyJhbGciOi.abc_DEF-123~+/=="),
    "client_notification_token": (accepts(check_client_notification_token), "N0tificationToken-abcdefghijk_0123"),
    "resource indicator": (accepts(lambda v: check_resource_indicators((v,))), "https://rs.example/payments"),
    "a number the OP sent as a string": (accepts(lambda v: _whole_number(v, "expires_in")), "120"),
    "ApprovalRequest.binding_code": (
        accepts(lambda v: ApprovalRequest(login_hint="alice", binding_message="Pay", binding_code=v)),
        "7Q4K",
    ),
    "ApprovalRequest.action_digest": (
        accepts(lambda v: ApprovalRequest(login_hint="alice", binding_message="Pay", action_digest=v)),
        DIGEST,
    ),
    "CIBA_METRICS_BIND": (field_pattern(WorkerSettings, "metrics_bind"), "localhost:9464"),
    "CIBA_CODEC_OIDC_REQUIRED_SCOPE": (
        field_pattern(CodecServerSettings, "codec_oidc_required_scope"),
        "temporal:codec",
    ),
    "CIBA_CALLBACK_PATH": (field_pattern(CallbackSettings, "callback_path"), "/ciba/notify"),
    **{
        f"binding message rule of {name}": (profile_rule(name), "Pay-EUR-120.00-7Q4K")
        for name, profile in PROFILES.items()
        if profile.request.binding_message.pattern is not None
    },
}

# Whitespace none of them allows around a value (an Idempotency-Key may hold spaces, an IBAN is
# written with them: a plain space is not here).
WHITESPACE = ["\n", "\r\n", "\r", "\t", "\x0b", "\x0c", "\x85", "\u00a0", "\u2028", "\u3000", "\u200b", "\ufeff"]
_CYRILLIC = dict(
    zip(
        "AaBCcEeHKMOoPpTXxy",
        "\u0410\u0430\u0412\u0421\u0441\u0415\u0435\u041d\u041a\u041c\u041e\u043e\u0420\u0440\u0422\u0425\u0445\u0443",
        strict=True,
    )
)
_PUNCTUATION = {"-": "\u2010\u2212", ".": "\u2024", ":": "\u2236", "/": "\u2215", "_": "\uff3f"}


def lookalikes(character: str) -> str:
    """Characters that look like `character` and are not it."""
    found = ""
    if "0" <= character <= "9":
        digit = int(character)
        found += chr(0xFF10 + digit) + chr(0x0660 + digit) + chr(0x06F0 + digit)
    elif character.isascii() and character.isalpha():
        found += chr(ord(character) - ord("A") + 0xFF21 if character.isupper() else ord(character) - ord("a") + 0xFF41)
    return found + _CYRILLIC.get(character, "") + _PUNCTUATION.get(character, "")


def test_every_valid_sample_is_accepted() -> None:
    """Else the properties below would hold for a validator that refuses everything."""
    assert [name for name, (valid, sample) in VALIDATORS.items() if not valid(sample)] == []


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALIDATORS)), st.sampled_from(WHITESPACE), st.booleans(), st.integers(1, 3))
def test_whitespace_around_a_valid_value_is_refused(name: str, space: str, before: bool, times: int) -> None:
    valid, sample = VALIDATORS[name]
    value = space * times + sample if before else sample + space * times
    assert not valid(value), f"{name} accepted {value!r}"


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(VALIDATORS)), st.data())
def test_a_lookalike_character_is_refused(name: str, data: st.DataObject) -> None:
    valid, sample = VALIDATORS[name]
    at = data.draw(st.integers(0, len(sample) - 1))
    choices = lookalikes(sample[at])
    assume(choices)
    value = sample[:at] + data.draw(st.sampled_from(choices)) + sample[at + 1 :]
    assert not valid(value), f"{name} accepted {value!r}"


@pytest.mark.parametrize("delay", ["120", " 120 "])
def test_retry_after_reads_ascii_digits(delay: str) -> None:
    response = httpx.Response(503, headers={"retry-after": delay})
    assert retry_after_seconds(response, 0.0) == 120.0


@given(st.sampled_from("0123456789"), st.data())
def test_retry_after_never_reads_lookalike_digits(digit: str, data: st.DataObject) -> None:
    """ "²" and "١٢" pass str.isdigit; as a Retry-After they are no number (None), never an error."""
    value = "1" + data.draw(st.sampled_from(lookalikes(digit) + "²³¹")) + "0"
    response = httpx.Response(503, headers=[(b"retry-after", value.encode())])
    assert retry_after_seconds(response, 0.0) is None


# Texts bound into a payment: normalized, so two spellings are one action --------------------------

TEXT_FIELDS = ["creditor_name", "reference"]
CONTROL = [*"\n\r\t\x00\x1b\x7f\x85", "\u200b", "\u200e", "\u202e", "\u2066", "\u2028", "\u2029", "\ufeff"]


@given(st.sampled_from(TEXT_FIELDS), st.sampled_from(CONTROL), st.integers(0, 9))
def test_a_control_or_format_character_in_a_bound_text_is_refused(name: str, control: str, at: int) -> None:
    text = PAYMENT[name]
    at = min(at, len(text))
    with pytest.raises(ValidationError):
        PaymentAction.model_validate({**PAYMENT, name: text[:at] + control + text[at:]})


@given(
    st.sampled_from(TEXT_FIELDS),
    st.lists(st.sampled_from([" ", "  ", "\u00a0", "\u3000", " \u2009 "]), min_size=3, max_size=3),
)
def test_whitespace_in_a_bound_text_is_collapsed(name: str, spaces: list[str]) -> None:
    words = PAYMENT[name].replace("-", " ").split()
    spelled = spaces[0] + spaces[1].join(words) + spaces[2]
    assert PaymentAction.model_validate({**PAYMENT, name: spelled}).model_dump()[name] == " ".join(words)


def test_two_spellings_of_one_payment_are_one_action() -> None:
    plain = PaymentAction.model_validate(PAYMENT)
    spelled = PaymentAction.model_validate(
        {
            **PAYMENT,
            "amount": "120",
            "creditor_name": "\uff21\uff23\uff2d\uff25  GmbH ",
            "creditor_iban": "de02 1001 0010 9307 1186 03",
        }
    )
    assert spelled == plain


@pytest.mark.parametrize(("name", "longest"), [("creditor_name", 70), ("reference", 35)])
def test_a_bound_text_is_as_long_as_allowed_after_normalizing(name: str, longest: int) -> None:
    """NFKC may lengthen a text: the ligature "\ufb03" is "ffi"."""
    assert PaymentAction.model_validate({**PAYMENT, name: "\ufb03" * (longest // 3)}).model_dump()[name] == "ffi" * (
        longest // 3
    )
    with pytest.raises(ValidationError, match=f"at most {longest} characters"):
        PaymentAction.model_validate({**PAYMENT, name: "\ufb03" * (longest // 3 + 1)})

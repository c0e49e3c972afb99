"""What the approver's phone shows for a payment of the example agent tells payments apart.

The binding message names the amount, the whole IBAN, the creditor and the code; the name comes
last and is the only part ever shortened, by the sample (to 128 characters) or by the library's
fitting to an OP's rule.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from temporal_ciba.ciba import BINDING_MESSAGE_MAX_LENGTH, BindingMessageRule, fit_binding_message
from temporal_ciba.ciba._profiles import PROFILES
from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest, binding_message, short_code

# The longest name shown whole whatever the IBAN and amount: 128 less "Pay EUR
# 999999999999.99 to IBAN <34 characters> of " and ", code 7Q4K".
ALWAYS_WHOLE = BINDING_MESSAGE_MAX_LENGTH - 70 - 11

ibans = st.builds(
    lambda country, check, rest: country + check + rest,
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
    st.text("0123456789", min_size=2, max_size=2),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=10, max_size=30),
)
amounts = st.integers(1, 10**14 - 1).map(lambda cents: f"{cents // 100}.{cents % 100:02d}")
names = st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="\u00a0"), min_size=1, max_size=70
)


def action(name: str, iban: str, amount: str = "120.00", reference: str = "INV-1") -> PaymentAction | None:
    try:
        return PaymentAction(amount=amount, currency="EUR", creditor_name=name, creditor_iban=iban, reference=reference)
    except ValidationError:
        return None


def message(payment: PaymentAction) -> str:
    return binding_message(payment, action_digest(payment))


def text(payment: PaymentAction) -> str:
    """The message without its code: what an approver reads, not what they compare character by
    character (two payments' codes differ anyway, as their digests do)."""
    return message(payment).removesuffix(short_code(action_digest(payment)))


@settings(max_examples=300, deadline=None)
@given(names, ibans, amounts)
def test_the_message_fits_and_shows_the_amount_the_whole_iban_and_the_code(name: str, iban: str, amount: str) -> None:
    payment = action(name, iban, amount)
    assume(payment is not None)
    assert payment is not None
    shown = message(payment)
    assert BindingMessageRule().allows(shown)  # the library's own rule: 128 characters, one plain line
    code = short_code(action_digest(payment))
    assert shown.startswith(f"Pay EUR {payment.amount} to IBAN {payment.creditor_iban} of ")
    assert shown.endswith(f", code {code}")
    creditor = shown.removeprefix(f"Pay EUR {payment.amount} to IBAN {payment.creditor_iban} of ")
    creditor = creditor.removesuffix(f", code {code}")
    if creditor != payment.creditor_name:  # shortened: only a name that does not fit whole
        assert len(payment.creditor_name) > ALWAYS_WHOLE
        assert creditor.endswith("...") and payment.creditor_name.startswith(creditor.removesuffix("..."))


@settings(max_examples=500, deadline=None)
@given(names, names, ibans, ibans, amounts)
def test_two_payments_to_other_accounts_or_creditors_never_read_alike(
    name: str, other_name: str, iban: str, other_iban: str, amount: str
) -> None:
    first, second = action(name, iban, amount), action(other_name, other_iban, amount)
    assume(first is not None and second is not None)
    assert first is not None and second is not None
    if first.creditor_iban != second.creditor_iban:
        assert text(first) != text(second)
    if first.creditor_name != second.creditor_name and max(len(first.creditor_name), len(second.creditor_name)) <= (
        ALWAYS_WHOLE
    ):
        assert text(first) != text(second)


@given(names, ibans)
def test_a_padded_name_with_another_iban_does_not_read_like_the_genuine_payment(suffix: str, iban: str) -> None:
    genuine = action("ACME GmbH", "DE02100100109307118603")
    forged = action("ACME GmbH" + " " * 31 + suffix, iban)
    assume(forged is not None and forged.creditor_iban != "DE02100100109307118603")
    assert genuine is not None and forged is not None
    assert text(genuine) != text(forged)


RULES = [
    BindingMessageRule(),
    *(profile.request.binding_message for profile in PROFILES.values()),
    *(BindingMessageRule(max_length=length) for length in (40, 50, 64, 80, 100)),
]


@settings(max_examples=300, deadline=None)
@given(names, ibans, amounts, st.sampled_from(RULES))
def test_an_op_rule_shortens_the_name_never_the_amount_the_account_or_the_code(
    name: str, iban: str, amount: str, rule: BindingMessageRule
) -> None:
    payment = action(name, iban, amount)
    assume(payment is not None)
    assert payment is not None
    code = short_code(action_digest(payment))
    # What must survive, in the rule's own spelling (the fitter's separator for spaces).
    essential = f"Pay EUR {payment.amount} to IBAN {payment.creditor_iban} of {code}"
    assume(len(essential) <= rule.max_length)
    fitted = fit_binding_message(message(payment), rule, code=code)
    assert rule.allows(fitted)
    words = fitted.replace("-", " ").split() if " " not in fitted else fitted.split()
    assert words[:6] == ["Pay", "EUR", payment.amount, "to", "IBAN", payment.creditor_iban]
    assert words[-1] == code

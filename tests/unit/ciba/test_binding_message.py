"""Binding messages fitted to the OP's rule.

The full message where the rule allows it, else a shortened one that keeps the code, else the code
alone, never one the rule refuses. Table-driven on literal data."""

from __future__ import annotations

import pytest

from temporal_ciba.ciba._binding_message import BindingMessageRule, BindingMessageUnfit, fit_binding_message
from temporal_ciba.ciba._profiles import PROFILES

MESSAGE = "Pay EUR 120.00 to ACME GmbH, code 7Q4K"
# The rules of the OPs we have profiles for (temporal_ciba/ciba/_profiles.py cites their sources).
OIDC_PROVIDER = BindingMessageRule(max_length=20, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,20}$")
KEYCLOAK = BindingMessageRule(max_length=50, pattern=r"^[a-zA-Z0-9-._+/!?#]{1,50}$")
AUTH0 = BindingMessageRule(max_length=64, pattern=r"^[a-zA-Z0-9+\-_.,:#]{1,64}$")
GENERIC = BindingMessageRule()


@pytest.mark.parametrize(
    "message,rule,code,expected",
    [
        (MESSAGE, GENERIC, "7Q4K", MESSAGE),
        (MESSAGE, BindingMessageRule(max_length=100), "7Q4K", MESSAGE),
        (MESSAGE, OIDC_PROVIDER, "7Q4K", "Pay-EUR-120.00-7Q4K"),
        (MESSAGE, KEYCLOAK, "7Q4K", "Pay-EUR-120.00-to-ACME-GmbH-7Q4K"),
        (MESSAGE, AUTH0, "7Q4K", "Pay-EUR-120.00-to-ACME-GmbH,-7Q4K"),
        (MESSAGE, BindingMessageRule(max_length=20), "7Q4K", "Pay EUR 120.00 7Q4K"),
        (MESSAGE, BindingMessageRule(max_length=8), "7Q4K", "Pay 7Q4K"),
        (MESSAGE, BindingMessageRule(max_length=4), "7Q4K", "7Q4K"),
        ("Pay EUR 1 200 000 to ACME", BindingMessageRule(max_length=18), "7Q4K", "Pay EUR 7Q4K"),
        ("Reset account prod-7", KEYCLOAK, None, "Reset-account-prod-7"),
        ("Reset prod-7", OIDC_PROVIDER, "AB12", "Reset-prod-7-AB12"),
        ("Überweisung 120 €", OIDC_PROVIDER, "AB12", "berweisung-120-AB12"),
        ("Pay EUR 1 2,50 now", BindingMessageRule(max_length=16), "7Q4K", "Pay EUR 7Q4K"),
        ("Pay EUR1 200 now", BindingMessageRule(max_length=14), "7Q4K", "Pay 7Q4K"),
        ("1 200 EUR to ACME", BindingMessageRule(max_length=8), "7Q4K", "7Q4K"),
        ("Confirm 7Q4K for EUR 120", BindingMessageRule(max_length=20), "7Q4K", "Confirm for EUR 7Q4K"),
        ("7Q4K is your code", OIDC_PROVIDER, "7Q4K", "is-your-code-7Q4K"),
        ("Code 7Q4K pay EUR 120", BindingMessageRule(max_length=16), "7Q4K", "pay EUR 120 7Q4K"),
        ("Code: 7Q4K for EUR 120", BindingMessageRule(max_length=16), "7Q4K", "for EUR 120 7Q4K"),
        (
            "Pay EUR 120, code 7Q4K",
            BindingMessageRule(max_length=20, pattern=r"^[A-Za-z0-9]{1,20}$"),
            "7Q4K",
            "PayEUR1207Q4K",
        ),
    ],
    ids=[
        "fits_generic",
        "fits_longer_rule",
        "oidc_provider_default_rule",
        "keycloak_rule",
        "auth0_rule",
        "spaces_allowed_shortened",
        "one_word_and_code",
        "code_alone",
        "never_splits_a_number",
        "no_code_sanitized_whole",
        "code_appended",
        "refused_characters_left_out",
        # A number is never split, whatever follows its first digit or precedes its last one,
        # nor after the first word.
        "never_splits_a_number_whose_next_group_has_punctuation",
        "never_splits_a_number_glued_to_a_currency",
        "never_splits_a_number_that_starts_the_message",
        # Only a "code" label right before the code is dropped with it.
        "word_before_the_code_kept_unless_a_label",
        "code_first_keeps_a_last_word_named_code",
        "code_label_first_dropped",
        "code_label_with_colon_dropped",
        # With no separator allowed, the words are joined as they are.
        "no_separator_allowed_words_joined",
    ],
)
def test_fitted(message: str, rule: BindingMessageRule, code: str | None, expected: str) -> None:
    fitted = fit_binding_message(message, rule, code=code)
    assert fitted == expected
    assert rule.allows(fitted)


@pytest.mark.parametrize(
    "message,rule,code",
    [
        (MESSAGE, BindingMessageRule(max_length=3), "7Q4K"),
        (MESSAGE, OIDC_PROVIDER, None),
        ("Reset account prod-7 now", BindingMessageRule(max_length=10), None),
        ("Reset account prod-7 now", BindingMessageRule(max_length=20), None),
        (MESSAGE, BindingMessageRule(pattern=r"^[0-9]+$"), "7Q4K"),
    ],
    ids=[
        "code_too_long",
        "no_code_and_too_long",
        "no_code_never_truncated",
        "no_code_never_drops_even_the_last_word",
        "code_refused_by_pattern",
    ],
)
def test_unfit_is_refused_before_sending(message: str, rule: BindingMessageRule, code: str | None) -> None:
    with pytest.raises(BindingMessageUnfit) as caught:
        fit_binding_message(message, rule, code=code)
    assert caught.value.error == "binding_message_unfit"


@pytest.mark.parametrize(
    "message,allowed",
    [("ok", True), ("", False), ("   ", False), ("a\nb", False), ("x" * 129, False), ("x" * 128, True)],
    ids=["plain", "empty", "blank", "newline", "too_long", "at_limit"],
)
def test_generic_rule_is_todays(message: str, allowed: bool) -> None:
    assert GENERIC.allows(message) is allowed


def test_rule_refuses_a_pattern_that_does_not_compile() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        BindingMessageRule(pattern="[a-")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_fits_the_example_agents_message(name: str) -> None:
    """Every profile's rule accepts what fit_binding_message makes of the payment agent's message."""
    rule = PROFILES[name].request.binding_message
    fitted = fit_binding_message(MESSAGE, rule, code="7Q4K")
    assert rule.allows(fitted) and fitted.endswith("7Q4K")

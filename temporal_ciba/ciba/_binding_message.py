"""Binding messages that fit the OP (CIBA §7.1).

CIBA says only that a binding_message "SHOULD be relatively short and use a limited set of plain
text characters"; every OP sets its own rule and refuses a message that breaks it with
`invalid_binding_message` (§13), after which the approval can only end in `error`. So the rule
is known here (`BindingMessageRule`, from the OP profile or the settings) and the message is
fitted before the request is sent: the full message where the rule allows it, else a shortened
one that keeps the code the approver compares, else the code alone, and never one the rule
refuses (`BindingMessageUnfit`, before anything is sent).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._errors import InvalidAuthenticationRequest

# Our own ceiling, whatever the OP allows: a message the approver can read on a phone.
BINDING_MESSAGE_MAX_LENGTH = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Word separators to use, in order of preference, when the rule refuses spaces.
_SEPARATORS = (" ", "-", "_", ".", "+")


class BindingMessageUnfit(InvalidAuthenticationRequest):
    """No binding message the OP's rule allows can be made from the message and its code."""

    error = "binding_message_unfit"


class BindingMessageRule(BaseModel):
    """What the OP accepts: at most `max_length` characters, matching `pattern` (whole message)."""

    model_config = ConfigDict(frozen=True)

    max_length: int = Field(default=BINDING_MESSAGE_MAX_LENGTH, ge=1, le=BINDING_MESSAGE_MAX_LENGTH)
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        return check_pattern(pattern)

    def allows(self, message: str) -> bool:
        if not message.strip() or len(message) > self.max_length or _CONTROL.search(message):
            return False
        return self.pattern is None or re.fullmatch(self.pattern, message) is not None

    def allows_character(self, character: str) -> bool:
        """Whether one character may appear (for a rule that is a character class and a length)."""
        return self.pattern is None or re.fullmatch(self.pattern, character) is not None


def _words(message: str, rule: BindingMessageRule, code: str | None) -> list[str]:
    """The message's words, each stripped of characters the rule refuses, without the code.

    The code (and a "code" label before it) is left out because the shortened message puts it
    last."""
    words = [word for word in ("".join(c for c in w if rule.allows_character(c)) for w in message.split()) if word]
    if code is not None and code in words:
        at = words.index(code)
        del words[at]
        if at > 0 and words[at - 1].lower().rstrip(":") == "code":
            del words[at - 1]
    return words


def _splits_a_number(words: list[str], keep: int) -> bool:
    """Cutting after `keep` words would cut "1 200 000" to "1 200": never shorten there."""
    return 0 < keep < len(words) and words[keep - 1][-1:].isdigit() and words[keep][:1].isdigit()


def fit_binding_message(message: str, rule: BindingMessageRule, *, code: str | None) -> str:
    """The binding message to send: the full one, a shortened one with the code, or the code.

    The full one if the rule allows it; else the longest run of its leading whole words followed
    by the code (words are never cut, nor a number split), with refused characters left out and
    a separator the rule allows; else the code alone.

    Without a code only the full message (its refused characters left out) will do: a shortened
    message without the code would bind nothing. BindingMessageUnfit when nothing fits.
    """
    if rule.allows(message):
        return message
    words = _words(message, rule, code)
    separators = [sep for sep in _SEPARATORS if rule.allows_character(sep)] or [""]
    tail = [code] if code is not None else []
    for keep in range(len(words), 0 if code is not None else len(words) - 1, -1):
        if _splits_a_number(words, keep):
            continue
        for separator in separators:
            candidate = separator.join(words[:keep] + tail)
            if candidate and rule.allows(candidate):
                return candidate
    if code is not None and rule.allows(code):
        return code
    raise BindingMessageUnfit(
        f"binding_message {message[:40]!r} does not fit the OP's rule (at most {rule.max_length} characters"
        + (f" matching {rule.pattern}" if rule.pattern else "")
        + ("), nor does its code" if code is not None else ") and there is no code to send instead")
    )


def check_pattern(pattern: str | None) -> str | None:
    """The pattern, if it is a regular expression; ValueError saying why not otherwise."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return pattern

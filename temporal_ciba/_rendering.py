"""How an approval reads in the Temporal UI: Markdown for `workflow.set_current_details`, and
the static summary and details an approval carries from its start.

Any RFC 9396 `authorization_details` is shown generically, its type and then its fields (nested
objects as dotted paths), so the core knows no application's detail types; an application that
wants its own wording passes `ApprovalRequest.summary`. Every value came from the caller and may
be hostile Markdown, so each is shown as inline code, cut short, on one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from temporal_ciba._models import ApprovalRequest

MAX_FIELDS_PER_DETAIL = 20
MAX_VALUE_CHARS = 80


def code(value: object) -> str:
    """`value` as one short Markdown code span that no text inside can break out of."""
    text = " ".join(str(value).split()).replace("`", "'")
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return f"`{text}`"


def _fields(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _fields(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        for index, inner in enumerate(value):
            yield from _fields(inner, f"{path}[{index}]")
    else:
        yield path, ", ".join(map(str, value)) if isinstance(value, list) else value


def describe_authorization_details(details: list[dict[str, Any]]) -> list[str]:
    """One Markdown list item per detail, its fields nested below it."""
    lines = []
    for detail in details:
        lines.append(f"- {code(detail.get('type', '?'))}")
        fields = [(path, value) for path, value in _fields(detail) if path != "type"]
        for path, value in fields[:MAX_FIELDS_PER_DETAIL]:
            lines.append(f"  - {code(path)}: {code(value)}")
        if len(fields) > MAX_FIELDS_PER_DETAIL:
            lines.append(f"  - … {len(fields) - MAX_FIELDS_PER_DETAIL} more fields")
    return lines


def static_summary(request: ApprovalRequest) -> str:
    """The one line the Temporal UI's workflow list shows for an approval (its static summary),
    set when the approval starts and readable with no worker running."""
    return f"CIBA approval: {code(request.binding_message)} for {code(request.approver)}"


def static_details(request: ApprovalRequest) -> str:
    """Markdown for the static details: what was asked of whom, fixed at start (the current
    details, from the workflow, add the live state)."""
    lines = [f"**CIBA approval** asked of {code(request.approver)}:", f"> {code(request.binding_message)}", ""]
    if request.summary:
        lines += [f"- {code(line)}" for line in request.summary]
    elif request.authorization_details:
        lines += describe_authorization_details(request.authorization_details)
    lines.append(f"- scope {code(request.scope)}")
    if request.acr_values:
        lines.append(f"- acr_values {code(request.acr_values)}")
    if request.requested_expiry is not None:
        lines.append(f"- requested expiry {request.requested_expiry} s")
    if request.expected_subject is not None:
        lines.append(f"- only {code(request.expected_subject)} may approve")
    if request.action_digest is not None:
        lines.append(f"- action digest `{request.action_digest[:16]}…`")
    return "\n".join(lines)

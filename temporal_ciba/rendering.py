"""How an approval reads in the Temporal UI: Markdown for `workflow.set_current_details`.

Any RFC 9396 `authorization_details` is shown generically, its type and then its fields (nested
objects as dotted paths), so the core knows no application's detail types; an application that
wants its own wording passes `ApprovalRequest.summary`. Every value came from the caller and may
be hostile Markdown, so each is shown as inline code, cut short, on one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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

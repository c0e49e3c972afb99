"""What operators see of an approval, live and from its start.

Live: the `status` query's state, the search attributes and the current details (Markdown).
From its start: the static summary and details, readable with no worker running.

Any RFC 9396 `authorization_details` is shown generically, its type and then its fields (nested
objects as dotted paths), so the core knows no application's detail types; an application that
wants its own wording passes `ApprovalRequest.summary`. Every value came from the caller and may
be hostile Markdown, so each is shown as inline code, cut short, on one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._approval.compat import DecisionPath
    from temporal_ciba._models import ApprovalPhase, ApprovalRequest, ApprovalState, PendingState
    from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS

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
    """The one line the Temporal UI's workflow list shows for an approval (its static summary).

    Set when the approval starts, and readable with no worker running."""
    return f"CIBA approval: {code(request.binding_message)} for {code(request.approver)}"


def static_details(request: ApprovalRequest) -> str:
    """Markdown for the static details: what was asked of whom, fixed at start.

    The current details, from the workflow, add the live state."""
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


# The live state, from workflow code ---------------------------------------------------------------


def show_pending(state: ApprovalState, pending: PendingState) -> None:
    """The pending request in the `status` query's state."""
    state.auth_req_id = pending.auth_req_id
    state.requested_at = pending.requested_at
    state.deadline = pending.deadline
    state.interval_seconds = pending.interval_seconds
    state.polls = pending.polls
    state.runs = pending.runs


def show(state: ApprovalState, status: ApprovalPhase, *, pending: PendingState | None, path: DecisionPath) -> None:
    """One state change: the status query, the search attributes and the current details.

    On the redeem path the passing phases (requesting, validating) reach only the query and
    the details: the search attributes change twice, when the request is pending and at the end.
    """
    state.status = status
    if not (path.redeem and status in ("requesting", "validating")):
        _upsert(status, pending)
    workflow.set_current_details(current_details(state))


def _upsert(status: ApprovalPhase, pending: PendingState | None) -> None:
    current = workflow.info().typed_search_attributes
    updates: list[SearchAttributeUpdate[Any]] = []
    if current.get(CIBA_STATUS) != status:
        updates.append(CIBA_STATUS.value_set(status))
    if pending is not None:
        if current.get(CIBA_AUTH_REQ_ID) != pending.auth_req_id:
            updates.append(CIBA_AUTH_REQ_ID.value_set(pending.auth_req_id))
        if current.get(CIBA_DEADLINE) != pending.deadline:
            updates.append(CIBA_DEADLINE.value_set(pending.deadline))
    if updates:
        workflow.upsert_search_attributes(updates)


def show_dropped(state: ApprovalState) -> None:
    """One more notification dropped unread: the status query and the current details."""
    state.dropped_notifications += 1
    workflow.set_current_details(current_details(state))


def current_details(state: ApprovalState) -> str:
    """Markdown for `workflow.set_current_details`: what was asked of whom, and where it stands."""
    lines = [
        f"**CIBA approval: {state.status}**",
        "",
        f"Asked {code(state.login_hint)} to approve:",
        f"> {code(state.binding_message)}",
        "",
    ]
    if state.summary:
        lines += [f"- {code(line)}" for line in state.summary]
    elif state.authorization_details:
        lines += describe_authorization_details(state.authorization_details)
    if state.deadline is not None:
        lines.append(f"- until {state.deadline:%Y-%m-%d %H:%M:%S} UTC")
    if state.auth_req_id is not None:
        lines.append(f"- auth_req_id `{state.auth_req_id}`")
    if state.action_digest is not None:
        lines.append(f"- action digest `{state.action_digest[:16]}…`")
    if state.dropped_notifications:
        lines.append(f"- {state.dropped_notifications} notification(s) dropped: undecodable or unproven (see the log)")
    if state.outcome is not None:
        lines += ["", f"Outcome: **{state.outcome.status}**: {code(state.outcome.reason)}"]
    return "\n".join(lines)

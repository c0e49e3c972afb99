"""What the example agents' tools do: record the action in a ledger file, once.

The ledger (JSON lines) stands in for the production system or the account service a real tool
would call with the approved access token. Each entry is written once per execution key, so a
retried or replayed activity finds its entry instead of acting twice; tests count the entries.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba import GrantRefused, idempotency_key
from temporal_ciba.agents import ApprovedToolCall, open_tool_call
from temporal_ciba.crypto import TokenSealer


class LedgerEntry(BaseModel):
    key: str
    tool: str
    call_id: str
    arguments: dict[str, Any]
    approved_by: str | None = None


class ToolLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        return [LedgerEntry.model_validate_json(line) for line in self.path.read_text().splitlines() if line]

    def record_once(self, entry: LedgerEntry) -> tuple[LedgerEntry, bool]:
        """Append `entry` unless its key is there; the recorded entry, and whether it was new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as ledger:
            fcntl.flock(ledger, fcntl.LOCK_EX)  # two workers on one ledger record a key once
            ledger.seek(0)
            for line in ledger.read().splitlines():
                recorded = LedgerEntry.model_validate_json(line)
                if recorded.key == entry.key:
                    return recorded, False
            ledger.write(json.dumps(entry.model_dump(mode="json")) + "\n")
            return entry, True

    def record_call(self, call: ApprovedToolCall) -> bool:
        """Record this tool call once (by execution_key, from inside its activity); whether it
        was new, i.e. whether the action runs now rather than having run before."""
        entry = LedgerEntry(
            key=execution_key(call),
            tool=call.tool_name,
            call_id=call.call_id,
            arguments=call.arguments,
            approved_by=call.outcome.sub if call.outcome else None,
        )
        return self.record_once(entry)[1]


def open_call(sealer: TokenSealer, call: ApprovedToolCall, *, required: bool) -> str | None:
    """open_tool_call for an activity: a refusal fails the activity for good (retrying cannot
    make other arguments approved)."""
    try:
        return open_tool_call(sealer, call, required=required)
    except GrantRefused as exc:
        raise ApplicationError(str(exc), type="GrantRefused", non_retryable=True) from None


def execution_key(call: ApprovedToolCall) -> str:
    """The same for every retry of this call in this run: the approval's idempotency key, or,
    for a call that needed none, the run and the call id."""
    if call.outcome is not None:
        return idempotency_key(call.outcome)
    info = activity.info()
    return f"{info.workflow_id}:{info.workflow_run_id}:{call.call_id}"

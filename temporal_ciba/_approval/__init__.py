"""One approval, in workflow code: its state machine and the parts it is made of.

Each module holds one job; this one only re-exports what the rest of the library uses.

    machine.py   the state machine: send, wait, redeem, outcome (Approval)
    inbox.py     pings and pushes from the callback service, early ones kept
    calls.py     the activity calls with their options, revocations, the decision record
    view.py      what operators see: status query, search attributes, current and static details
    compat.py    the patch ids that keep older histories replaying, and when each may go
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._approval.calls import record_decision, revoke_access_token
    from temporal_ciba._approval.compat import (
        INLINE_DEFAULT_PATCH,
        PING_PACING_PATCH,
        QUORUM_VETO_PATCH,
        RECORD_PATCH,
        REDEEM_PATCH,
        DecisionPath,
    )
    from temporal_ciba._approval.machine import Approval, Holder
    from temporal_ciba._approval.view import (
        MAX_FIELDS_PER_DETAIL,
        MAX_VALUE_CHARS,
        code,
        describe_authorization_details,
        static_details,
        static_summary,
    )

__all__ = [
    "INLINE_DEFAULT_PATCH",
    "MAX_FIELDS_PER_DETAIL",
    "MAX_VALUE_CHARS",
    "PING_PACING_PATCH",
    "QUORUM_VETO_PATCH",
    "RECORD_PATCH",
    "REDEEM_PATCH",
    "Approval",
    "DecisionPath",
    "Holder",
    "code",
    "describe_authorization_details",
    "record_decision",
    "revoke_access_token",
    "static_details",
    "static_summary",
]

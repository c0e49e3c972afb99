"""What the replay tests replay: one committed history per name, and the key that decodes them.

Shared by the recorder (`python -m tests.replay.record`) and the replay tests.
"""

from __future__ import annotations

from pathlib import Path

from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba.mcp import McpToolCallWorkflow
from temporal_ciba_examples.payment_agent.models import PaymentAction, action_digest
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow

# A TEST-ONLY payload key, committed on purpose so the histories can be decoded on replay. It
# protects nothing: the histories hold only scripted test values, never a real token or secret.
KEY = bytes(range(32))

HISTORY_DIR = Path(__file__).parent / "histories"
WORKFLOWS: list[type] = [CibaApprovalWorkflow, PaymentAgentWorkflow]

ACTION = PaymentAction(
    amount="120.00",
    currency="EUR",
    creditor_name="ACME GmbH",
    creditor_iban="DE89370400440532013000",
    reference="INV-2024-001",
)
PAYMENT_AGENT_ID = "replay-payment_agent"
# require_approval's child id: the parent's id, ".approval-", the first 16 hex of the action digest.
PAYMENT_APPROVAL_ID = f"{PAYMENT_AGENT_ID}.approval-{action_digest(ACTION)[:16]}"
CONTINUE_AS_NEW_ID = "replay-continue_as_new"
PAYMENT_AGENT_INLINE_ID = "replay-payment_agent_inline"

# History file name (without .json) -> the workflow id it was recorded under (replay needs it).
# RECORDED: what `python -m tests.replay.record` writes from today's code.
RECORDED: dict[str, str] = {
    "poll_approved": "replay-poll_approved",  # pending, slow_down, pending, granted, validated
    "ping_approved": "replay-ping_approved",  # a foreign ping ignored, the ping, one token request
    "push_delivered": "replay-push_delivered",  # a foreign push ignored, the pushed tokens validated
    "cancelled_pending": "replay-cancelled_pending",  # one pending poll, cancelled while waiting
    "cancelled_token_in_flight": "replay-cancelled_token_in_flight",  # tokens after the cancel, revoked
    "rejected": "replay-rejected",  # tokens granted, validation fails, revoked
    "denied": "replay-denied",  # access_denied from the token endpoint
    "refused": "replay-refused",  # the OP refused the backchannel request
    "push_expired": "replay-push_expired",  # push mode, nothing delivered before the deadline
    "continue_as_new.run1": CONTINUE_AS_NEW_ID,  # polls_per_run polls, then continue-as-new
    "continue_as_new.run2": CONTINUE_AS_NEW_ID,  # resumed pending, approved
    "payment_agent": PAYMENT_AGENT_ID,  # the example agent: child approval, then the payment
    "payment_agent.approval": PAYMENT_APPROVAL_ID,  # its child CibaApprovalWorkflow
    "payment_agent_inline": PAYMENT_AGENT_INLINE_ID,  # the agent waiting inline in ping mode, then paying
}

# KEPT: histories recorded from earlier workflow code, kept on purpose after a change guarded by
# workflow.patched() (copy `<name>.json` to e.g. `<name>.before-<patch-id>.json` before
# re-recording, and list it here with its workflow id). The recorder never rewrites or deletes
# these; remove one with its patch, once no run started before the change can still be open.
KEPT: dict[str, str] = {
    # Recorded before the redeem decision path (temporal_ciba._approval.compat.REDEEM_PATCH):
    # separate token request and validation activities, four search-attribute upserts, a
    # describing callback.
    **{
        f"{name}.before-redeem-decision-path": workflow_id
        for name, workflow_id in RECORDED.items()
        if name != "payment_agent_inline"
    },
    # Recorded before decision records (temporal_ciba._approval.compat.RECORD_PATCH): no
    # ciba.record_decision marker.
    **{f"{name}.before-decision-record": workflow_id for name, workflow_id in RECORDED.items()},
    # Recorded from the workflow code laid out in single modules (approval, workflow, models)
    # rather than packages: a worker on the package layout finishes every approval that a worker
    # on the module layout started.
    **{f"{name}.before-package-layout": workflow_id for name, workflow_id in RECORDED.items()},
}

# Recorded from later workflow code only (no older recording of them is kept): a plaintext
# ciba.notify dropped (the codec refuses it; no workflow task fails), then the ping.
RECORDED["undecodable_ping_dropped"] = "replay-undecodable_ping_dropped"

# Recorded before pushes were checked for the callback's proof (compat.NOTIFICATION_PROOF_PATCH):
# the first push taken as it came.
KEPT["push_delivered.before-notification-proof"] = RECORDED["push_delivered"]
# A push without the callback's proof dropped (its check a local activity), then the real one.
RECORDED["push_unproven_dropped"] = "replay-push_unproven_dropped"

# Poll mode in one activity (SendRequestResult.poll_activity): pending, slow_down (it ends the
# activity; the next starts at the grown interval), pending, granted. The other poll-mode
# histories poll from workflow code (PollingPolicy(poll_in="workflow")).
RECORDED["poll_activity_approved"] = "replay-poll_activity_approved"

HISTORIES: dict[str, str] = {**RECORDED, **KEPT}


# The MCP gateway's gated tool call (temporal_ciba.mcp): its workflow and its child approval.
WORKFLOWS.append(McpToolCallWorkflow)
MCP_TOOL_CALL_ID = "replay-mcp_tool_call"
RECORDED["mcp_tool_call"] = MCP_TOOL_CALL_ID  # approved, then the upstream tool's activity once
RECORDED["mcp_tool_call.approval"] = f"{MCP_TOOL_CALL_ID}.approval"  # its child CibaApprovalWorkflow
HISTORIES.update({name: RECORDED[name] for name in ("mcp_tool_call", "mcp_tool_call.approval")})

# The ping's token request answered 503 with Retry-After twice, each time retried after it
# (compat.PING_RETRY_PATCH) rather than at the fallback poll, then granted.
RECORDED["ping_retry_after"] = "replay-ping_retry_after"
HISTORIES["ping_retry_after"] = RECORDED["ping_retry_after"]

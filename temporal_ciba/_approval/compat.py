"""Compatibility with recorded histories: every patch id, what it gates, and when it may go.

A worker replays the history of every approval it picks up, so a change in the commands the
workflow makes is gated by `workflow.patched(ID)`: a run recorded without the marker takes the
old branch, a new run the new one. tests/replay/cases.py keeps (KEPT) the histories recorded
before each patch, and tests/replay replays them.

Retiring a patch: once no run that started before it can still be open (an approval ends by
its deadline; an inline approval lives in its caller's workflow, which may run longer), delete
its old branch, turn `workflow.patched(ID)` into `workflow.deprecate_patch(ID)`, and remove its
KEPT histories from tests/replay/cases.py with it; drop the deprecate call once no run that
recorded the marker can still be open.

Compatibility that needs no patch, because the history itself says which way to go:
`SendRequestResult.records` (False in a history without decision records),
`SendRequestResult.poll_activity` (False in a history whose poll mode polled from workflow code,
with a timer and a redeem per poll: it replays so; True, the poll loop runs in one activity,
ciba.poll; the old loop stays for PollingPolicy(poll_in="workflow"), and the recorded
poll-mode histories that use it replay it), `PingNotice` and
`PushDelivery` without a `first_run_id` or a `proof` in a recorded history (what an older
callback signalled; a new ping without them is refused by the redeem activity, a new push by
NOTIFICATION_PROOF_PATCH's check), the redeem's `notice` (an input field: a replayed redeem reads
its recorded answer), and the unprefixed `notify` and `deliver` signals of CibaApprovalWorkflow
(an older callback's names). A signal whose payload the codec refuses is dropped without a patch:
a history holding one was never past it before.
"""

from __future__ import annotations

from dataclasses import dataclass

# Gates the redeem decision path of CibaApprovalWorkflow (DecisionPath.redeem): checked once, when
# the run starts. Inline approvals always take it. KEPT: `*.before-redeem-decision-path`.
REDEEM_PATCH = "redeem-decision-path"
# Gates the pacing of pings: a ping's token request waits until the interval has passed since the
# last request (CIBA §7.3), however many pings arrive. KEPT: none of its own.
PING_PACING_PATCH = "ping-pacing"
# Gates the decision record for an outcome reached before the send activity answered (an expired
# policy deadline, a cancellation); once it answered, SendRequestResult.records says whether to
# record, without a marker. KEPT: `*.before-decision-record`.
RECORD_PATCH = "decision-record"
# Gates the quorum's veto over a met quorum (temporal_ciba._quorum): a denial under on_denial
# "end" recorded together with, or after, the approvals that meet n ends the quorum denied, which
# revokes every approved token. Marked only in a run where it changes the outcome. KEPT: none of
# its own (a run without the marker takes the approval that n distinct subs met).
QUORUM_VETO_PATCH = "quorum-veto"
# Gates require_approval's default place (temporal_ciba._workflow._inline_by_default): without
# `inline`, a request expected to wait at most INLINE_WAIT_LIMIT runs inline, where the default
# was a child. Marked only where it runs inline. Retire once no caller's run that called
# require_approval without `inline` before it can still be open (callers may run long). KEPT:
# `payment_agent*.before-*` record explicit places; a caller of the default replays its child
# from any history recorded without the marker.
INLINE_DEFAULT_PATCH = "inline-by-default"


@dataclass(frozen=True)
class DecisionPath:
    """Which generation of the decision an approval runs, so a recorded run keeps its commands.

    redeem is False only for a CibaApprovalWorkflow run recorded without REDEEM_PATCH.

    redeem=True: the send and the redeem (one step that requests and validates the tokens) are
    local activities (no sealed token response in history, no task queue round trips); a ping or
    push for an auth_req_id not yet recorded is kept (machine.Approval's inbox); two
    search-attribute upserts (pending, outcome) instead of one per phase; the fallback poll of
    ping and push mode is jittered. redeem=False: the send, the token request and the validation
    are activities of their own.
    """

    redeem: bool


# Gates the check of a push's proof (temporal_ciba.crypto.NotificationProofs) before the approval
# acts on it: a local activity `ciba.verify_notification` per push, and an unproven push dropped
# (the next one waiting is checked in its turn). Marked when the first push arrives, on the
# redeem path only. A ping's proof is checked inside the redeem activity and needs no patch
# (its input grew a field; its answer "unproven" is new). KEPT: `push_delivered.before-notification-proof`.
NOTIFICATION_PROOF_PATCH = "notification-proof"

# Gates the retry of a ping's token request that the OP told to come back (503 with Retry-After,
# or slow_down): at the interval (or the Retry-After, if longer), as a poll would be, instead of at
# the slow fallback poll, which an approval whose deadline comes sooner never reaches (the OP
# pings once). Marked only in a run where such an answer came after a ping. KEPT: none of its own
# (a run without the marker waits for the fallback poll, as it did).
PING_RETRY_PATCH = "ping-retry-after"

# Gates what a CibaApprovalWorkflow does when a cancellation arrives while its decision record is
# written: once the write ends, the decision recorded is its result, instead of the run ending
# cancelled with no outcome while its record holds a decision (a quorum cancels its remaining
# approvers once it is decided). Marked only in a run where that happened. An inline approval is
# not gated: the cancellation is its host's, and goes on. KEPT: none of its own (a run without
# the marker ends cancelled, as it did).
DECISION_OUTLASTS_CANCEL_PATCH = "decision-outlasts-cancel"

# Gates the order of what an approval cancelled with tokens in hand does: it writes its record
# first and revokes the tokens after, only if the cancellation is what the record holds. The
# decision on record may be an approval taken with those very tokens, in a workflow task that
# never completed (the cancellation arrived while it was completing); that approval is then the
# outcome, with its access token alive, where the old order revoked the token and returned the
# approval with a dead one. Marked only in a run cancelled with tokens in hand. KEPT: none of its
# own (a run without the marker revokes first, as it did).
RECORD_BEFORE_REVOKE_PATCH = "record-before-revoke"

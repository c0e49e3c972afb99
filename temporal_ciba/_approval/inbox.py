"""An approval's inbox: the pings (CIBA §10.2) and pushes (CIBA §10.3) the callback signals.

Each was verified by the callback's bearer check and carries the callback's proof; here it is
checked against the approval's run chain, auth_req_id and delivery mode, and kept for an
activity to check its proof before the approval acts on it (machine.Approval): a ping's inside
the redeem, a push's in `ciba.verify_notification`. A push that fits waits in line (at most
MAX_WAITING_PUSHES; a newcomer takes the last place when the line is full, so the first is
never pushed out and the latest always gets in); the first proven one wins.

A notice can overtake the send activity's result (the OP answers the user before the workflow
records the auth_req_id): on the redeem path a few such early notices are kept, and the one for
the auth_req_id the OP acknowledged counts once the request is pending.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporal_ciba._approval.compat import DecisionPath
    from temporal_ciba._models import PendingState, PingNotice, PushDelivery
    from temporal_ciba.ciba import DeliveryMode

# Notices for an auth_req_id the approval has not recorded yet; a few are enough, the bearer
# was verified.
MAX_EARLY_NOTICES = 8
# Pushes for the pending request waiting for their proof to be checked.
MAX_WAITING_PUSHES = 64


class Inbox:
    """One approval's notifications: a ping that asks for the token now, a push that ends the wait.

    `notified` is set by a fitting ping (`notices`: a few distinct ones, for the redeem to check);
    `pushed` is the first fitting push not yet dropped."""

    def __init__(self, path: DecisionPath, *, notified: bool) -> None:
        self._path = path
        self.notified = notified
        self.notices: list[PingNotice] = []
        self._pushes: list[PushDelivery] = []
        self._early_notices: list[PingNotice] = []
        self._early_pushes: list[PushDelivery] = []

    @property
    def pushed(self) -> PushDelivery | None:
        return self._pushes[0] if self._pushes else None

    def drop_pushed(self) -> None:
        """The first push failed its proof: the next in line is `pushed`."""
        self._pushes.pop(0)

    def take_notices(self) -> list[PingNotice]:
        """The pings that set `notified`, for the redeem to check (none: a poll, or a resumed run)."""
        notices, self.notices = self.notices, []
        return notices

    def _keep(self, notice: PingNotice) -> None:
        # Distinct ones only, and a few: a forged ping beside the real one cannot push it out.
        if notice not in self.notices and len(self.notices) < MAX_EARLY_NOTICES:
            self.notices.append(notice)

    def notify(self, notice: PingNotice, pending: PendingState | None) -> None:
        """Ping (CIBA §10.2): request the token now."""
        if not _own_chain(notice.first_run_id):
            workflow.logger.warning("ignored a ping for another run chain")
        elif pending is None and self._path.redeem:
            if len(self._early_notices) < MAX_EARLY_NOTICES:
                self._early_notices.append(notice)
        elif (
            pending is not None
            and notice.auth_req_id == pending.auth_req_id
            and pending.binding.delivery_mode == "ping"
        ):
            self.notified = True
            self._keep(notice)
        else:
            workflow.logger.warning("ignored a ping for another auth_req_id or mode")

    def deliver(self, delivery: PushDelivery, pending: PendingState | None) -> None:
        """Push (CIBA §10.3): the tokens or an error; the first wins."""
        if pending is None and self._path.redeem and _own_chain(delivery.first_run_id):
            if len(self._early_pushes) < MAX_EARLY_NOTICES:
                self._early_pushes.append(delivery)
        elif (
            not _own_chain(delivery.first_run_id)
            or pending is None
            or delivery.auth_req_id != pending.auth_req_id
            or pending.binding.delivery_mode != "push"
        ):
            workflow.logger.warning("ignored a push for another auth_req_id, run chain or mode")
        elif len(self._pushes) < MAX_WAITING_PUSHES:
            self._pushes.append(delivery)
        else:
            workflow.logger.warning("too many pushes waiting for their proof: the latest takes the last place")
            self._pushes[-1] = delivery

    def sent(self, auth_req_id: str, delivery_mode: DeliveryMode) -> None:
        """The request for `auth_req_id` is pending: an early notice for it counts now, others go."""
        early = [notice for notice in self._early_notices if notice.auth_req_id == auth_req_id]
        if early and delivery_mode == "ping":
            self.notified = True
            for notice in early:
                self._keep(notice)
        if delivery_mode == "push":
            self._pushes = [d for d in self._early_pushes if d.auth_req_id == auth_req_id]
        self._early_notices.clear()
        self._early_pushes.clear()


def _own_chain(first_run_id: str | None) -> bool:
    # The bearer names a run chain; an earlier approval under the same workflow id is another.
    return first_run_id is None or first_run_id == workflow.info().first_execution_run_id

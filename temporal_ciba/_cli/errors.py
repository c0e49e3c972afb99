"""Exit statuses, and the one line a user sees instead of a traceback.

Exit status: 0 approved (or success), 1 any other outcome, 2 usage or configuration error.
A mistake the user can fix (a bad argument, a missing setting, a wrong Temporal namespace or
payload key) is one line naming what to change; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_NOT_APPROVED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or configuration: one line, exit status 2."""


class WaitInterrupted(Exception):
    """Ctrl-C (or SIGTERM) on `request --wait`: the approval goes on; one line, exit status 1.

    An interrupted wait saw no approval, so it exits as any outcome but approved does."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"interrupted: approval {workflow_id} goes on without this command; follow it with "
            f"`temporal-ciba status {workflow_id}` or cancel it with `temporal-ciba cancel {workflow_id}`"
        )


def first_line(text: str) -> str:
    """The first line of an error's text, which is all a one-line message has room for."""
    return text.strip().splitlines()[0] if text.strip() else "no detail"


def temporal_problem(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for a Temporal mistake a user can fix, or None.

    The mistakes: a wrong namespace, a workflow id in use, another payload key, a refused call.
    None for anything else: a bug, whose traceback is shown."""
    from temporalio.exceptions import WorkflowAlreadyStartedError
    from temporalio.service import RPCError, RPCStatusCode

    from temporal_ciba.crypto import PayloadDecryptionError

    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PayloadDecryptionError):
            return (
                f"cannot decrypt the approval ({first_line(str(error))}): set CIBA_PAYLOAD_KEY to the payload key "
                "of the worker that ran it"
            )
        if isinstance(error, WorkflowAlreadyStartedError):
            workflow_id = getattr(args, "workflow_id", None) or "this workflow id"
            return (
                f"workflow {workflow_id} is already running: choose another --workflow-id, "
                f"or follow it with `temporal-ciba status {workflow_id}`"
            )
        if isinstance(error, RPCError):
            message = first_line(error.message)
            if error.status == RPCStatusCode.NOT_FOUND and "namespace" in message.lower():
                return f"{message}: check TEMPORAL_NAMESPACE (or the namespace of your temporal.toml profile)"
            if error.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
                return f"Temporal refused the call ({error.status.name}: {message}): check TEMPORAL_API_KEY and TLS"
            return (
                f"Temporal refused the call ({error.status.name}: {message}): check TEMPORAL_ADDRESS "
                "and TEMPORAL_NAMESPACE"
            )
        error = error.__cause__ or error.__context__
    return None

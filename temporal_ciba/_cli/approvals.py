"""The approval commands: `request` (with --wait watching the worker), `status`, `list`, `cancel`.

Each connects to Temporal as a client only (the payload key, no token key) and talks to the
approval workflow by its type name, its query and its search attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from temporal_ciba._cli.errors import EXIT_NOT_APPROVED, EXIT_OK, UsageError, WaitInterrupted, first_line
from temporal_ciba._settings import TemporalSettings, load_settings

APPROVAL_WORKFLOW = "CibaApprovalWorkflow"


def print_json(value: Any) -> None:
    """One JSON object on a line of standard output, for scripts."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def _json_argument(value: str | None, option: str) -> Any:
    """A JSON option's value, or a UsageError naming the option."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise UsageError(f"{option}: not valid JSON") from None


def _token_argument(value: str | None, option: str) -> SecretStr | None:
    """A token given as is, or as @FILE (a command line is visible to other users of the machine)."""
    if value is None or not value.startswith("@"):
        return None if value is None else SecretStr(value)
    try:
        return SecretStr(Path(value[1:]).read_text().strip())
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None


def approval_request_from_args(args: argparse.Namespace) -> Any:
    """The ApprovalRequest that `request`'s options describe; a UsageError names the first bad one."""
    from temporal_ciba._models import ApprovalRequest

    details = _json_argument(args.authorization_details, "--authorization-details")
    try:
        return ApprovalRequest(
            login_hint=args.login_hint,
            login_hint_token=_token_argument(args.login_hint_token, "--login-hint-token"),
            id_token_hint=_token_argument(args.id_token_hint, "--id-token-hint"),
            binding_code=args.binding_code,
            audience=args.audience,
            resource=args.resource,
            claims=_json_argument(args.claims, "--claims"),
            binding_message=args.binding_message,
            scope=args.scope,
            acr_values=args.acr_values,
            authorization_details=details,
            requested_expiry=args.requested_expiry,
            user_code=args.user_code,
            expected_subject=args.expected_subject,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise UsageError(f"invalid request: {where + ': ' if where else ''}{error['msg']}") from None


def _outcome_line(outcome: Any) -> str:
    """An outcome as the one line `request --wait` prints without --json."""
    if outcome.approved:
        return f"approved by {outcome.sub} (acr {outcome.acr or '-'}, auth_req_id {outcome.auth_req_id})"
    return f"{outcome.status}{' (' + outcome.error + ')' if outcome.error else ''}: {outcome.reason}"


async def request(args: argparse.Namespace) -> int:
    """`temporal-ciba request`: start an approval, print its workflow id, and with --wait its outcome."""
    from temporal_ciba._approval import static_details, static_summary
    from temporal_ciba._models import ApprovalWorkflowInput
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._workflow import CibaApprovalWorkflow

    approval = approval_request_from_args(args)
    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    workflow_id = args.workflow_id or f"ciba-approval-{uuid.uuid4()}"
    handle = await client.start_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=approval),
        id=workflow_id,
        task_queue=settings.task_queue,
        # What the Temporal UI's list shows, readable with no worker running.
        static_summary=static_summary(approval),
        static_details=static_details(approval),
    )
    print(workflow_id, file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        outcome = await _wait_watching(client, handle, settings.task_queue, args.command)
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task; the workflow itself runs on.
        raise WaitInterrupted(workflow_id) from None
    if args.json:
        print_json(outcome.public_json())
    else:
        print(_outcome_line(outcome))
    return EXIT_OK if outcome.approved else EXIT_NOT_APPROVED


async def _wait_watching(client: Any, handle: Any, task_queue: str, command: str) -> Any:
    """Wait for the outcome, and say what keeps it from coming.

    Meanwhile, say once when no worker polls the task queue, and stop (WorkflowTaskFailing) when
    the worker cannot run the approval, rather than wait for an outcome that will not come."""
    from temporal_ciba._programs.progress import watch_progress

    def notice(line: str) -> None:
        print(f"temporal-ciba {command}: {line}", file=sys.stderr, flush=True)

    result = asyncio.ensure_future(handle.result())
    watcher = asyncio.ensure_future(watch_progress(client, handle, task_queue, notice=notice))
    try:
        await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not result.done():
        result.cancel()
        watcher.result()  # raises WorkflowTaskFailing (or whatever stopped the watch)
    return result.result()


async def status(args: argparse.Namespace) -> int:
    """`temporal-ciba status`: a running approval's state, or an ended one's outcome, as JSON."""
    from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
    from temporalio.service import RPCError

    from temporal_ciba._models import ApprovalOutcome
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._programs.progress import workflow_task_failure
    from temporal_ciba._workflow import CibaApprovalWorkflow

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    handle = client.get_workflow_handle(args.workflow_id, result_type=ApprovalOutcome)
    try:
        description = await handle.describe()
    except RPCError as exc:
        raise UsageError(f"no approval {args.workflow_id!r}: {exc.message}") from None
    if description.status == WorkflowExecutionStatus.RUNNING:
        # A query to a workflow whose task fails waits for the server's query timeout (30 s and
        # more): the pending task's attempts say so at once.
        cause = await workflow_task_failure(handle)
        if cause is not None:
            raise UsageError(
                f"{args.workflow_id} is running but its workflow task fails ({cause}): see the worker's log "
                "(a worker with another CIBA_PAYLOAD_KEY, or an outdated worker?)"
            )
        try:
            state = await handle.query(CibaApprovalWorkflow.status)
        except (RPCError, WorkflowQueryFailedError) as exc:
            raise UsageError(
                f"{args.workflow_id} is running but cannot answer ({first_line(str(exc))}): its workflow task is "
                "failing; see the worker's log (a worker with another CIBA_PAYLOAD_KEY, or an outdated worker?)"
            ) from None
        print_json(state.model_dump(mode="json", exclude={"outcome"}))
        return EXIT_OK
    if description.status == WorkflowExecutionStatus.COMPLETED:
        outcome = await handle.result()
        print_json(outcome.public_json())
        return EXIT_OK if outcome.approved else EXIT_NOT_APPROVED
    print_json(
        {"workflow_id": args.workflow_id, "status": description.status.name.lower() if description.status else None}
    )
    return EXIT_NOT_APPROVED


async def list_approvals(args: argparse.Namespace) -> int:
    """`temporal-ciba list`: one tab-separated line per approval, newest first, by the search attributes."""
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    query = f"WorkflowType = '{APPROVAL_WORKFLOW}'"
    if args.status:
        query += f" AND CibaStatus = '{args.status}'"
    count = 0
    async for execution in client.list_workflows(query, limit=args.limit):
        attributes = execution.typed_search_attributes
        deadline = attributes.get(CIBA_DEADLINE)
        print(
            f"{execution.id}\t{attributes.get(CIBA_STATUS) or '-'}\t{attributes.get(CIBA_AUTH_REQ_ID) or '-'}\t"
            f"{deadline.isoformat() if deadline else '-'}"
        )
        count += 1
    print(f"{count} approval(s)", file=sys.stderr)
    return EXIT_OK


async def cancel(args: argparse.Namespace) -> int:
    """`temporal-ciba cancel`: ask a running approval to stop; exit 1 when it had already ended."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from temporal_ciba._programs.connect import connect
    from temporal_ciba._search_attributes import CIBA_STATUS

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    handle = client.get_workflow_handle(args.workflow_id)
    try:
        description = await handle.describe()
        if description.status == WorkflowExecutionStatus.RUNNING:
            await handle.cancel()
    except RPCError as exc:
        raise UsageError(f"cannot cancel {args.workflow_id!r}: {exc.message}") from None
    if description.status != WorkflowExecutionStatus.RUNNING:
        execution = description.status.name.lower() if description.status else "unknown"
        status = description.typed_search_attributes.get(CIBA_STATUS) or execution
        print(f"temporal-ciba cancel: {args.workflow_id} already ended ({status}): nothing to cancel", file=sys.stderr)
        return EXIT_NOT_APPROVED
    print(f"cancellation requested for {args.workflow_id}")
    return EXIT_OK

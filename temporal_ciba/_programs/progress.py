"""What `request --wait` watches while it waits, so a stuck approval does not wait in silence.

It watches that a worker polls the task queue, and that the approval's workflow task does not
fail on every attempt.

Neither shows in the outcome (Temporal retries a failing workflow task forever, and a task
queue nobody polls just holds the task), so without a look at Temporal's own descriptions the
command would wait forever with no hint; only the worker's log would say why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio.api.enums.v1 import EventType, TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

# How often to look, and how long a task queue may go unpolled before we say so: a worker
# started together with the command needs a moment for its first poll.
CHECK_INTERVAL_SECONDS = 1.0
NO_POLLER_GRACE_CHECKS = 2


class WorkflowTaskFailing(Exception):
    """The worker cannot run the approval (another payload key, an outdated worker): one line."""


async def task_queue_polled(client: Client, task_queue: str) -> bool:
    """Whether a worker polled this task queue for workflow tasks recently (DescribeTaskQueue)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(response.pollers) > 0


async def workflow_task_failure(handle: WorkflowHandle) -> str | None:
    """The cause of a workflow task that failed and is being retried, or None when none is.

    DescribeWorkflowExecution shows the pending workflow task's attempt (2 or more once one
    failed); the first failure is in history as WorkflowTaskFailed, with the worker's message."""
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    raw = description.raw_description
    if not raw.HasField("pending_workflow_task") or raw.pending_workflow_task.attempt < 2:
        return None
    cause = "no detail"
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            messages = [failure.message]
            while failure.HasField("cause"):
                failure = failure.cause
                messages.append(failure.message)
            cause = ": ".join(dict.fromkeys(m.strip().splitlines()[0] for m in messages if m.strip())) or cause
    return cause


async def watch_progress(
    client: Client, handle: WorkflowHandle, task_queue: str, *, notice: Callable[[str], None]
) -> None:
    """Watch the task queue and the workflow task until cancelled.

    Calls `notice` once when no worker polls the task queue (and keeps watching: a worker may
    come later); raises WorkflowTaskFailing when the workflow task fails on every attempt."""
    unpolled_checks = 0
    noticed = False
    while True:
        cause = await workflow_task_failure(handle)
        if cause is not None:
            raise WorkflowTaskFailing(
                f"the worker cannot run {handle.id}: its workflow task fails ({cause}): give the worker and this "
                "command the same CIBA_PAYLOAD_KEY (the worker's log says more), then follow it with "
                f"`temporal-ciba status {handle.id}`"
            )
        unpolled_checks = 0 if await task_queue_polled(client, task_queue) else unpolled_checks + 1
        if unpolled_checks > NO_POLLER_GRACE_CHECKS and not noticed:
            noticed = True
            notice(
                f"no worker polls task queue {task_queue!r}: start `temporal-ciba worker` with "
                f"CIBA_TASK_QUEUE={task_queue} (or correct CIBA_TASK_QUEUE here); still waiting"
            )
        await asyncio.sleep(CHECK_INTERVAL_SECONDS)

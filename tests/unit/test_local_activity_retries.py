"""No retry of the approval's local activities waits inside a workflow task.

A local activity's backoff shorter than its `local_retry_threshold` is slept in the worker while
the workflow task stays open (the SDK's default threshold is a minute), so an OP that is down
held a task open through every backoff of the request and of a token request, and a store that
is down through those of the decision record. Each is started with a threshold below any
backoff: a retry waits on a timer between tasks (tests/e2e/test_worker_errors.py shows it with
the OP down).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from temporal_ciba._approval.calls import LOCAL_RETRY_THRESHOLD, SEND_RETRY
from temporal_ciba._models import PollingPolicy
from tests.support.scripted_op import GRANTED, ScriptedOP, start, worker

STARTED: list[tuple[str, timedelta | None]] = []


class _Outbound(WorkflowOutboundInterceptor):
    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        STARTED.append((input.activity, input.local_retry_threshold))
        return super().start_local_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class RecordLocalActivities(Interceptor):
    """Records the name and `local_retry_threshold` of every local activity a workflow starts."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _Inbound


async def test_every_local_activity_of_an_approval_retries_on_a_timer(env: WorkflowEnvironment) -> None:
    STARTED.clear()
    op = ScriptedOP(env, [GRANTED])
    running, task_queue = worker(env, op, interceptors=[RecordLocalActivities()])
    async with running:
        # The redeem is a local activity where the workflow itself polls (or is pinged).
        handle = await start(env, op, task_queue, polling=PollingPolicy(poll_in="workflow"))
        assert (await handle.result()).approved
    names = {name for name, _ in STARTED}
    assert {"ciba.send_authentication_request", "ciba.redeem", "ciba.record_decision"} <= names, names
    assert all(threshold == LOCAL_RETRY_THRESHOLD for _, threshold in STARTED), STARTED
    # Below the shortest backoff, so none is slept in the task.
    assert SEND_RETRY.initial_interval is not None and LOCAL_RETRY_THRESHOLD < SEND_RETRY.initial_interval

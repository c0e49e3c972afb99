"""The payment agent's worker, dying at one chosen moment: right after it writes a decision record.

    python -m tests.support.dying_worker        (the same CIBA_* settings as payment-worker)

The process exits at once (os._exit: no cleanup, no workflow task completed, as SIGKILL leaves
it) when its `ciba.record_decision` activity has written a record. The record write is a local
activity, so the workflow task that ran it (and the redeem before it) never completes: Temporal
gives that task to the next worker, which decides again. The crash test reaches that window
this way every time; a SIGKILL from outside would race the workflow task's completion."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import temporalio.client
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from temporal_ciba_examples.payment_agent.worker import run_payment_worker

EXIT_STATUS = 86  # what the test expects: the process died here, not anywhere else


class _ExitAfterRecord(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        if activity.info().activity_type == "ciba.record_decision":
            os._exit(EXIT_STATUS)
        return result


class ExitAfterRecord(temporalio.client.Interceptor, Interceptor):
    """Ends the process once a decision record has been written.

    A client interceptor too: a plugin keeps only those of the client's interceptors, and the
    worker takes the worker interceptors among them."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ExitAfterRecord(next)


if __name__ == "__main__":
    asyncio.run(run_payment_worker(interceptors=[ExitAfterRecord()]))

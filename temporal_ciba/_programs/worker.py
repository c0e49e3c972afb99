"""The worker program: the approval workflow and its activities, run through CibaPlugin.

It runs any plugins the caller adds too (the example agent's), with the search attributes
registered first."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any

from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._programs.connect import connect
from temporal_ciba._programs.observability import telemetry_runtime, tracing_interceptors
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba._settings import OPSettings, WorkerSettings

logger = logging.getLogger("temporal_ciba.worker")


async def run_worker(
    op: OPSettings,
    settings: WorkerSettings,
    *,
    plugins: Sequence[SimplePlugin] = (),
    stop: asyncio.Event | None = None,
    **connect_overrides: Any,
) -> None:
    """Connect, register the search attributes, run the worker, then shut down gracefully.

    It runs until `stop` is set, or until SIGINT/SIGTERM when none is given."""
    plugin = CibaPlugin(
        payload_key=settings.payload_key_bytes,
        token_key=settings.token_key_bytes,
        op=op,
        records=settings,
        interceptors=tracing_interceptors(),
        policy_file=settings.policy_file,
    )
    client = await connect(
        settings.payload_key_bytes,
        plugin=plugin,
        runtime=telemetry_runtime(settings.metrics_bind),
        **connect_overrides,
    )
    await ensure_search_attributes(client)
    await plugin.check_op()  # an issuer that is not the OP's stops here, in one line
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        plugins=list(plugins),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=settings.worker_max_cached_workflows,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    async with worker:
        logger.info("worker started on task queue %s (delivery mode %s)", settings.task_queue, op.delivery_mode)
        await stop.wait()
    logger.info("worker stopped")

"""The worker: the approval workflow and its activities (and the example payment agent when
its API is configured), with the search attributes registered first."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from typing import Any

import httpx
from temporalio.worker import Worker

from activities.approval import CibaActivities
from activities.notification import NotificationTokens
from activities.payment import PaymentActivities
from activities.sealing import TokenSealer
from temporal_ciba.config import OPSettings, WorkerSettings
from temporal_ciba.connect import connect
from temporal_ciba.observability import telemetry_runtime, tracing_interceptors
from temporal_ciba.plugin import CibaPlugin
from temporal_ciba.registration import ensure_search_attributes
from workflows.payment_agent import PaymentAgentWorkflow

logger = logging.getLogger("temporal_ciba.worker")


async def run_worker(
    op: OPSettings,
    settings: WorkerSettings,
    *,
    stop: asyncio.Event | None = None,
    **connect_overrides: Any,
) -> None:
    """Connect with a CibaPlugin carrying the activities, register the search attributes, and
    run until `stop` is set (or SIGINT/SIGTERM when none is given), then shut down gracefully."""
    sealer = TokenSealer(settings.token_key_bytes)
    async with AsyncExitStack() as stack:
        ciba = op.ciba_client()
        stack.push_async_callback(ciba.aclose)
        # Ping and push requests carry a notification token naming the workflow (activities.notification).
        issue_token = NotificationTokens(settings.token_key_bytes).issue if op.delivery_mode != "poll" else None
        handlers: list[Any] = list(CibaActivities(ciba, sealer, notification_token=issue_token).all)
        workflows: list[type] = []
        if settings.payment_api_url:
            http = httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0), follow_redirects=False)
            stack.push_async_callback(http.aclose)
            handlers.append(PaymentActivities(http, settings.payment_api_url, sealer).execute_payment)
            workflows.append(PaymentAgentWorkflow)
        plugin = CibaPlugin(
            payload_key=settings.payload_key_bytes,
            activities=handlers,
            workflows=workflows,
            interceptors=tracing_interceptors(),
        )
        client = await connect(
            settings.payload_key_bytes,
            plugin=plugin,
            runtime=telemetry_runtime(settings.metrics_bind),
            **connect_overrides,
        )
        await ensure_search_attributes(client)
        worker = Worker(
            client,
            task_queue=settings.task_queue,
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

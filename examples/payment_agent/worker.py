"""The payment agent's worker: the approval workflow and its activities (CibaPlugin, from the
CIBA_* settings) and the payment agent with its payment activity (PaymentAgentPlugin, paying at
CIBA_PAYMENT_API_URL), on one task queue.

    temporal-ciba-examples payment-worker        (or: python -m temporal_ciba_examples.payment_agent.worker)

Runs until SIGINT or SIGTERM. CIBA_METRICS_BIND serves the SDK's metrics for Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from temporal_ciba import (
    CibaPlugin,
    ConfigError,
    OPSettings,
    WorkerSettings,
    ensure_search_attributes,
    load_settings,
)
from temporal_ciba_examples.payment_agent.plugin import PaymentAgentPlugin, PaymentAgentSettings

logger = logging.getLogger("temporal_ciba_examples.payment_agent")


async def run_payment_worker(stop: asyncio.Event | None = None, **connect_overrides: Any) -> None:
    """Connect, register the search attributes, and run until `stop` is set (or SIGINT/SIGTERM
    when none is given); a missing or malformed setting raises ConfigError naming it."""
    settings = load_settings(WorkerSettings)
    op = load_settings(OPSettings)
    payment = load_settings(PaymentAgentSettings)
    if payment.payment_api_url is None:
        raise ConfigError("CIBA_PAYMENT_API_URL is not set: the payment API the agent pays at")
    config: dict[str, Any] = {"target_host": "localhost:7233", **ClientConfig.load_client_connect_config()}
    config.update(connect_overrides)
    if settings.metrics_bind:
        config["runtime"] = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.metrics_bind))
        )
    client = await Client.connect(**config, plugins=[CibaPlugin.from_env()])
    await ensure_search_attributes(client)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        plugins=[
            PaymentAgentPlugin(
                api_url=payment.payment_api_url,
                token_key=settings.token_key_bytes,
                dpop=op.dpop,
                client_certificate=op.client_certificate(),
            )
        ],
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


if __name__ == "__main__":
    from temporal_ciba_examples.cli import main

    main(["payment-worker"])

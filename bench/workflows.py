"""The workflows the benchmark times, and the worker program that runs them.

An agent that asks for one approval (inline or as a child) and then goes on; the floor, a bare
workflow that waits for a plain signal. Both run in the same worker processes as the approvals
(`python -m bench.workflows`: the approval worker plus these workflows), configured by the
same CIBA_* environment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.plugin import SimplePlugin

with workflow.unsafe.imports_passed_through():
    from temporal_ciba import ApprovalRequest, OutcomeStatus, PollingPolicy

from temporal_ciba import require_approval


class BenchAgentInput(BaseModel):
    tag: str
    inline: bool = False
    # Capacity runs keep thousands pending for minutes: give them time.
    requested_expiry: int | None = None
    polling: PollingPolicy = PollingPolicy()


@workflow.defn
class BenchAgentWorkflow:
    @workflow.run
    async def run(self, input: BenchAgentInput) -> OutcomeStatus:
        request = ApprovalRequest(
            login_hint="alice",
            binding_message=f"Bench {input.tag}",
            requested_expiry=input.requested_expiry,
            polling=input.polling,
        )
        outcome = await require_approval(request, inline=input.inline)
        return outcome.status  # the agent's next line: its workflow task's completion is "resumed"


@workflow.defn
class BareSignalWorkflow:
    def __init__(self) -> None:
        self._released = False

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._released)


class BenchPlugin(SimplePlugin):
    def __init__(self) -> None:
        super().__init__("bench.BenchPlugin", workflows=[BenchAgentWorkflow, BareSignalWorkflow])


async def run_worker() -> None:
    """The approval worker (CibaPlugin from the CIBA_* settings, tuned as WorkerSettings say)
    with the benchmark's workflows, until SIGINT or SIGTERM."""
    import signal

    from temporalio.client import Client
    from temporalio.envconfig import ClientConfig
    from temporalio.worker import Worker

    from temporal_ciba import CibaPlugin, WorkerSettings, ensure_search_attributes, load_settings

    settings = load_settings(WorkerSettings)
    config: dict[str, Any] = {"target_host": "localhost:7233", **ClientConfig.load_client_connect_config()}
    client = await Client.connect(**config, plugins=[CibaPlugin.from_env()])
    await ensure_search_attributes(client)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with Worker(
        client,
        task_queue=settings.task_queue,
        plugins=[BenchPlugin()],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=settings.worker_max_cached_workflows,
    ):
        await stop.wait()


def main() -> None:
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()

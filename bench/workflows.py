"""The workflows the benchmark times, and the worker program that runs them.

An agent that asks for one approval (inline or as a child) and then goes on; the floor, a bare
workflow that waits for a plain signal. Both run in the same worker processes as the approvals
(`python -m bench.workflows`: `temporal-ciba worker` plus these workflows), configured by the
same CIBA_* environment.
"""

from __future__ import annotations

import asyncio

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


def main() -> None:
    from temporal_ciba import OPSettings, WorkerSettings, load_settings
    from temporal_ciba._programs.worker import run_worker

    asyncio.run(run_worker(load_settings(OPSettings), load_settings(WorkerSettings), plugins=[BenchPlugin()]))


if __name__ == "__main__":
    main()

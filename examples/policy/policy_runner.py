"""Run one example workflow under the approval policy, against a running `temporal-ciba-examples demo`:
a worker in this process (CibaPlugin with the policy file, the example's workflow and
activities), the workflow, and its result. Shared by pay_by_policy and service_account.

Configuration as for `temporal-ciba worker` (docs/operations/configuration.md); the policy file is
`--policy` (default: the example's policy.toml). Exit status: 0 when the action ran, 1 when
it did not, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from temporal_ciba import CibaPlugin, ConfigError, OPSettings, WorkerSettings, ensure_search_attributes, load_settings

EXAMPLE_POLICY = Path(__file__).with_name("policy.toml")
DEFAULT_TASK_QUEUE = "temporal-ciba-policy-examples"


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    arguments.add_argument("--policy", type=Path, default=EXAMPLE_POLICY, help="the approval policy (TOML)")
    arguments.add_argument("--workflow-id", help="default: a new one; an existing run is attached to")
    arguments.add_argument("--task-queue", default=DEFAULT_TASK_QUEUE, help="the in-process worker's task queue")
    return arguments


async def run_under_policy(
    options: argparse.Namespace,
    *,
    workflows: Sequence[type],
    activities: Callable[[WorkerSettings], Sequence[Callable[..., Any]]],
    start: Callable[[Client, str], Awaitable[Any]],
) -> Any:
    """Connect with the policy file (a malformed one: ConfigError naming the file and the key),
    run the worker, and return what `start(client, task_queue)` awaits (the workflow's result)."""
    settings = load_settings(WorkerSettings)
    plugin = CibaPlugin(
        payload_key=settings.payload_key_bytes,
        token_key=settings.token_key_bytes,
        op=load_settings(OPSettings),
        policy_file=options.policy,
    )
    config: dict[str, Any] = {"target_host": "localhost:7233", **ClientConfig.load_client_connect_config()}
    try:
        client = await Client.connect(**config, plugins=[plugin])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot connect to Temporal at {config['target_host']}: {first}") from None
    await ensure_search_attributes(client)
    async with Worker(
        client, task_queue=options.task_queue, workflows=list(workflows), activities=activities(settings)
    ):
        return await start(client, options.task_queue)


USE_EXISTING = WorkflowIDConflictPolicy.USE_EXISTING


def main(run: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run, print a configuration error as one line (exit 2), and exit with os._exit after
    flushing (a short-lived Temporal client can crash at interpreter exit, sdk-python issue 300)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = asyncio.run(run())
    except ConfigError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

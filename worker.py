"""This project's worker: its own workflow and activity, and the approval workflow that
CibaPlugin brings. Settings come from the environment (CIBA_*, TEMPORAL_*: docs/operations/configuration.md)."""

import asyncio
import os

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from activities.accounts import reset_account
from temporal_ciba import CibaPlugin, ensure_search_attributes
from workflows.reset_account import ResetAccountWorkflow


async def main() -> None:
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    client = await Client.connect(**config, plugins=[CibaPlugin.from_env()])
    await ensure_search_attributes(client)
    worker = Worker(
        client,
        task_queue=os.environ.get("CIBA_TASK_QUEUE", "ciba-approvals"),
        workflows=[ResetAccountWorkflow],
        activities=[reset_account],
    )
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())

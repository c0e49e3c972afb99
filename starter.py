"""Start this project's workflow and print its result: reset an account once its holder approves.

    python starter.py ACCOUNT_ID APPROVER [WORKFLOW_ID]

Settings as for worker.py: TEMPORAL_* (or a temporal.toml profile), CIBA_PAYLOAD_KEY and
CIBA_TASK_QUEUE. The client's plugin only encrypts; the worker asks for the approval.
"""

import asyncio
import base64
import os
import sys

from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from temporal_ciba import CibaPlugin
from workflows.reset_account import ResetAccountRequest, ResetAccountWorkflow


async def main(account_id: str, approver: str, workflow_id: str) -> None:
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    key = base64.b64decode(os.environ["CIBA_PAYLOAD_KEY"])
    client = await Client.connect(**config, plugins=[CibaPlugin(payload_key=key)])
    handle = await client.start_workflow(
        ResetAccountWorkflow.run,
        ResetAccountRequest(account_id=account_id, approver=approver),
        id=workflow_id,
        task_queue=os.environ.get("CIBA_TASK_QUEUE", "ciba-approvals"),
    )
    print(await handle.result())


if __name__ == "__main__":
    account_id, approver = sys.argv[1], sys.argv[2]
    asyncio.run(main(account_id, approver, sys.argv[3] if len(sys.argv) > 3 else f"reset-{account_id}"))
    # A short-lived Temporal client can crash at interpreter exit (sdk-python issue 300): leave
    # without the interpreter's teardown.
    sys.stdout.flush()
    os._exit(0)

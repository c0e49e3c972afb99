"""Running the `temporal-ciba` command line as a user does, against the e2e tests' servers."""

from __future__ import annotations

import asyncio
import base64
import os

from tests.support.op import TestOP
from tests.support.stack import PAYLOAD_KEY, cli_command
from tests.support.temporal import DevServer, wait_for


def cli_env(server: DevServer, task_queue: str, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIBA_", "TEMPORAL_"))}
    return {
        **env,
        "TEMPORAL_ADDRESS": server.address,
        "CIBA_PAYLOAD_KEY": PAYLOAD_KEY,
        "CIBA_TASK_QUEUE": task_queue,
        "CIBA_LOG_LEVEL": "WARNING",
        **extra,
    }


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *cli_command(*args), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def decide_when_asked(op: TestOP, binding_message: str, approve: bool) -> str:
    def find() -> str | None:
        return next((r["auth_req_id"] for r in op.requests("pending") if r["binding_message"] == binding_message), None)

    auth_req_id = await wait_for(find, what="the request to reach the OP")
    (op.approve if approve else op.deny)(auth_req_id)
    return auth_req_id


OTHER_KEY = base64.b64encode(os.urandom(32)).decode()


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]

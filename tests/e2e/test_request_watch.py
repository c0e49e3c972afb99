"""`request --wait` does not wait silently.

It says once when no worker polls its task queue (and goes on when one comes), and stops with one
line when the worker cannot run the approval."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import pytest
from temporalio.client import Client

from temporal_ciba._programs.worker import run_worker
from temporal_ciba._settings import WorkerSettings
from tests.support.cli import OTHER_KEY, cli_env, decide_when_asked, one_line, run_cli
from tests.support.op import TestOP
from tests.support.stack import PAYLOAD_KEY, TOKEN_KEY, agent_settings, cli_command
from tests.support.temporal import DevServer

NO_WORKER = "no worker polls task queue"

# Runs the command after it with SIGINT at its default, as a terminal's foreground job has it: a
# test run started in the background by a shell without job control ignores SIGINT, and every
# process it starts would inherit that (Python then installs no KeyboardInterrupt handler).
AS_IN_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]


async def test_no_worker_is_named_once_and_a_late_worker_is_waited_for(temporal_server: DevServer, op: TestOP) -> None:
    task_queue = f"typo-{uuid.uuid4().hex[:8]}"
    message = f"Restart the cluster {uuid.uuid4().hex[:6]}"
    process = await asyncio.create_subprocess_exec(
        *cli_command("request", "--login-hint", "alice", "--binding-message", message, "--wait"),
        env=cli_env(temporal_server, task_queue),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None and process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        assert line.startswith(f"temporal-ciba request: {NO_WORKER} '{task_queue}'"), line
        assert f"CIBA_TASK_QUEUE={task_queue}" in line and line.rstrip().endswith("still waiting")

        # The worker comes later, on that queue: the command goes on to the outcome.
        settings = WorkerSettings(task_queue=task_queue, payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)  # type: ignore[arg-type]
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(agent_settings(op), settings, stop=stop, target_host=temporal_server.address)
        )
        try:
            await decide_when_asked(op, message, approve=True)
            stdout, rest = await asyncio.wait_for(process.communicate(), 60)
        finally:
            stop.set()
            await worker
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, rest.decode()
    assert "approved by alice" in stdout.decode()
    assert NO_WORKER not in rest.decode()  # said once


async def test_a_worker_that_cannot_decrypt_is_named(
    temporal_server: DevServer, worker: WorkerSettings, temporal_client: Client
) -> None:
    # The command's payload key is not the worker's: the workflow task fails on every attempt.
    env = cli_env(temporal_server, worker.task_queue, CIBA_PAYLOAD_KEY=OTHER_KEY)
    code, stdout, stderr = await run_cli(env, "request", "--login-hint", "bob", "--binding-message", "Drop", "--wait")
    workflow_id = stdout.strip()
    assert code == 2 and workflow_id.startswith("ciba-approval-"), stderr
    line = one_line(stderr)
    assert line.startswith(f"temporal-ciba request: the worker cannot run {workflow_id}: its workflow task fails (")
    assert "payload" in line and "CIBA_PAYLOAD_KEY" in line
    await temporal_client.get_workflow_handle(workflow_id).terminate("test done")


async def test_ctrl_c_says_the_approval_goes_on_and_how_to_cancel_it(temporal_server: DevServer) -> None:
    """An interrupted wait is not an approval (exit 1); the line it prints names the command that cancels it."""
    task_queue = f"nobody-{uuid.uuid4().hex[:8]}"
    # faulthandler: a command that Ctrl-C did not end prints every thread's stack on SIGABRT.
    env = cli_env(temporal_server, task_queue, PYTHONFAULTHANDLER="1")
    process = await asyncio.create_subprocess_exec(
        *AS_IN_A_TERMINAL,
        *cli_command("request", "--login-hint", "alice", "--binding-message", "Close the account", "--wait"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None and process.stdout is not None
    try:
        workflow_id = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        # The no-worker notice comes from inside the wait: Ctrl-C now interrupts the wait itself.
        assert NO_WORKER in (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        process.send_signal(signal.SIGINT)
        try:
            _, rest = await asyncio.wait_for(process.communicate(), 60)
        except TimeoutError:
            process.send_signal(signal.SIGABRT)
            stacks = await asyncio.wait_for(process.stderr.read(), 30)
            pytest.fail(f"Ctrl-C did not end `request --wait` within 60 s; its stacks:\n{stacks.decode()}")
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 1
    line = one_line(rest.decode())
    assert line.startswith(f"temporal-ciba request: interrupted: approval {workflow_id} goes on"), line
    command = line.rsplit("`", 2)[-2]
    assert command == f"temporal-ciba cancel {workflow_id}"
    code, _, stderr = await run_cli(env, *command.split()[1:])
    assert code == 0, stderr

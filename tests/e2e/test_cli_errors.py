"""Mistakes a user makes with the CLI.

Each ends in one line on stderr naming the problem and what to do, exit 2 (or 1 for an approval that
already ended), never a traceback."""

from __future__ import annotations

import json
import uuid

from temporal_ciba._settings import WorkerSettings
from tests.support.cli import OTHER_KEY, cli_env, one_line, run_cli
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for


async def test_unknown_namespace(temporal_server: DevServer) -> None:
    env = cli_env(temporal_server, "unused", TEMPORAL_NAMESPACE="nope")
    for args in (["list"], ["request", "--login-hint", "alice", "--binding-message", "x"]):
        code, stdout, stderr = await run_cli(env, *args)
        assert code == 2 and stdout == "", stderr
        line = one_line(stderr)
        assert "nope" in line and "TEMPORAL_NAMESPACE" in line


async def test_list_status_typo(temporal_server: DevServer) -> None:
    code, stdout, stderr = await run_cli(cli_env(temporal_server, "unused"), "list", "--status", "aproved")
    assert code == 2 and stdout == ""
    assert "invalid choice: 'aproved'" in stderr and "Traceback" not in stderr


async def test_workflow_id_in_use_other_key_and_cancel_of_ended(
    temporal_server: DevServer, worker: WorkerSettings, op: TestOP
) -> None:
    env = cli_env(temporal_server, worker.task_queue)
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    request = ["request", "--login-hint", "bob", "--binding-message", "Rotate keys", "--workflow-id", workflow_id]
    code, _, stderr = await run_cli(env, *request)
    assert code == 0, stderr

    code, stdout, stderr = await run_cli(env, *request)
    assert code == 2 and stdout == ""
    line = one_line(stderr)
    assert f"workflow {workflow_id} is already running" in line and "--workflow-id" in line

    code, _, stderr = await run_cli(env, "cancel", workflow_id)
    assert code == 0, stderr

    async def cancelled() -> bool:
        status_code, out, _ = await run_cli(env, "status", workflow_id)
        return status_code == 1 and json.loads(out)["status"] == "cancelled"

    await wait_for(cancelled, what="the approval to end cancelled", timeout=60)

    code, stdout, stderr = await run_cli(env, "cancel", workflow_id)
    assert code == 1 and stdout == ""
    assert one_line(stderr) == f"temporal-ciba cancel: {workflow_id} already ended (cancelled): nothing to cancel"

    code, stdout, stderr = await run_cli({**env, "CIBA_PAYLOAD_KEY": OTHER_KEY}, "status", workflow_id)
    assert code == 2 and stdout == ""
    assert "CIBA_PAYLOAD_KEY" in one_line(stderr)


async def test_status_of_a_workflow_whose_task_fails(temporal_server: DevServer, worker: WorkerSettings) -> None:
    # Started with another payload key than the worker's: its workflow task fails on every attempt.
    env = cli_env(temporal_server, worker.task_queue, CIBA_PAYLOAD_KEY=OTHER_KEY)
    code, stdout, stderr = await run_cli(env, "request", "--login-hint", "bob", "--binding-message", "Drop table")
    assert code == 0, stderr
    workflow_id = stdout.strip()

    async def refused() -> str | None:
        status_code, _, err = await run_cli(env, "status", workflow_id)
        return err if status_code == 2 else None

    stderr = await wait_for(refused, what="`status` to see the failing workflow task", timeout=60)
    line = one_line(stderr)
    # At once, with the worker's own reason from the history: not after a query's timeout.
    assert workflow_id in line and "its workflow task fails (" in line and "payload encrypted with key" in line


async def test_a_misspelled_setting_is_named_with_the_closest_known_name(temporal_server: DevServer) -> None:
    """`CIBA_TASKQUEUE` is ignored (the request goes to the default queue), but the user is told, once.

    The codec server's own settings, which this command does not load, are not reported."""
    env = cli_env(temporal_server, "unused", CIBA_TASKQUEUE="mine", CIBA_CODEC_PORT="8081")
    del env["CIBA_TASK_QUEUE"]
    code, _, stderr = await run_cli(env, "list")
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "CIBA_TASKQUEUE" in line]
    assert warnings == ["CIBA_TASKQUEUE is not a setting and is ignored: did you mean CIBA_TASK_QUEUE?"], stderr
    assert "CIBA_CODEC_PORT" not in stderr and "Traceback" not in stderr

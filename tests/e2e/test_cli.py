"""The `temporal-ciba` command line, run as a user runs it, against the real servers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from temporal_ciba._settings import WorkerSettings
from tests.support.cli import cli_env, decide_when_asked, run_cli
from tests.support.op import TestOP
from tests.support.temporal import DevServer, wait_for


@pytest.mark.parametrize("approve,exit_status", [(True, 0), (False, 1)], ids=["approved", "denied"])
async def test_request_wait_json(
    temporal_server: DevServer, worker: WorkerSettings, op: TestOP, approve: bool, exit_status: int
) -> None:
    message = f"Deploy release {uuid.uuid4().hex[:6]} to production"
    details = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "1.00"}}]
    command = run_cli(
        cli_env(temporal_server, worker.task_queue),
        "request",
        "--login-hint",
        "alice",
        "--binding-message",
        message,
        "--scope",
        "openid payments",
        "--authorization-details",
        json.dumps(details),
        "--requested-expiry",
        "60",
        "--wait",
        "--json",
    )
    running = asyncio.create_task(command)
    auth_req_id = await decide_when_asked(op, message, approve)
    code, stdout, stderr = await running
    assert code == exit_status, stderr
    outcome = json.loads(stdout)  # exactly one JSON object on stdout
    assert outcome["status"] == ("approved" if approve else "denied")
    assert outcome["auth_req_id"] == auth_req_id
    assert outcome["workflow_id"] == stderr.strip().splitlines()[0]
    assert "sealed_access_token" not in outcome
    if approve:
        assert outcome["sub"] == "alice" and outcome["authorization_details"] == details
    else:
        assert outcome["error"] == "access_denied"
        assert outcome["reason"] == "alice denied the request on their device"

    env = cli_env(temporal_server, worker.task_queue)
    code, stdout, _ = await run_cli(env, "status", outcome["workflow_id"])
    assert code == exit_status and json.loads(stdout)["status"] == outcome["status"]


async def test_status_list_and_cancel(temporal_server: DevServer, worker: WorkerSettings, op: TestOP) -> None:
    env = cli_env(temporal_server, worker.task_queue)
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    code, stdout, _ = await run_cli(
        env, "request", "--login-hint", "bob", "--binding-message", "Delete tenant 42", "--workflow-id", workflow_id
    )
    assert code == 0 and stdout.strip() == workflow_id

    async def pending() -> dict[str, object] | None:
        status_code, out, _ = await run_cli(env, "status", workflow_id)
        state = json.loads(out) if status_code == 0 else {}
        return state if state.get("status") == "pending" else None

    state = await wait_for(pending, what="the approval to be pending", timeout=60)
    assert state["login_hint"] == "bob" and state["binding_message"] == "Delete tenant 42"

    async def listed() -> bool:
        _, out, _ = await run_cli(env, "list", "--status", "pending")
        return any(line.split("\t")[:3] == [workflow_id, "pending", state["auth_req_id"]] for line in out.splitlines())

    await wait_for(listed, what="`list --status pending` to show the approval", timeout=60)
    code, stdout, _ = await run_cli(env, "cancel", workflow_id)
    assert code == 0

    async def cancelled() -> bool:
        status_code, out, _ = await run_cli(env, "status", workflow_id)
        return status_code == 1 and json.loads(out)["status"] == "cancelled"

    await wait_for(cancelled, what="the approval to end cancelled", timeout=60)


@pytest.mark.parametrize(
    "args,env_change,message",
    [
        (["request", "--login-hint", "alice", "--binding-message", "x", "--scope", "payments"], {}, "openid"),
        (
            ["request", "--login-hint", "alice", "--binding-message", "x", "--authorization-details", "{"],
            {},
            "--authorization-details",
        ),
        (
            ["request", "--login-hint", "alice", "--binding-message", "x"],
            {"CIBA_PAYLOAD_KEY": "c2hvcnQ="},
            "CIBA_PAYLOAD_KEY: must decode to 32 bytes",
        ),
        (
            ["worker"],
            {"CIBA_ISSUER": "http://op.example.test", "CIBA_CLIENT_ID": "x", "CIBA_CLIENT_SECRET": "s"},
            "CIBA_ISSUER",
        ),
        (["status"], {}, "usage"),
    ],
    ids=["scope_without_openid", "details_not_json", "short_payload_key", "http_issuer", "missing_argument"],
)
async def test_usage_and_configuration_errors_exit_2(
    temporal_server: DevServer, args: list[str], env_change: dict[str, str], message: str
) -> None:
    code, stdout, stderr = await run_cli({**cli_env(temporal_server, "unused"), **env_change}, *args)
    assert code == 2 and stdout == ""
    assert message in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    # One line naming the problem; argparse adds its usage line before its own.
    assert len(lines) == (2 if message == "usage" else 1), stderr

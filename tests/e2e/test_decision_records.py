"""Decision records end to end, on SQLite and on PostgreSQL.

Real approvals against the test OP leave one record each in the decision log; `temporal-ciba
audit export` writes them with their ID tokens, proofs and a signed checkpoint, and `temporal-ciba
audit verify` accepts them against the OP's published keys, the log's key and a checkpoint kept
earlier, and refuses forged outcomes, a forged ID token and a deleted record, one line each."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from temporal_ciba._settings import WorkerSettings
from temporal_ciba_examples.payment_agent.models import action_digest
from tests.support.flows import INVOICE, approval_handle, pending_auth_req_id, start_agent
from tests.support.op import TestOP
from tests.support.stack import (
    AGENT_CLIENT,
    PAYLOAD_KEY,
    SECRET,
    TOKEN_KEY,
    agent_settings,
    clean_env,
    cli_command,
    running_worker,
)
from tests.support.temporal import DevServer, free_port, wait_for
from tests.support.worker_process import WorkerProcess

MFA = "urn:example:acr:mfa"


@pytest.fixture(params=["sqlite", "postgres"])
async def recording_worker(
    request: pytest.FixtureRequest, temporal_server: DevServer, op: TestOP, payment_api: str
) -> AsyncIterator[tuple[WorkerSettings, dict[str, str]]]:
    """A worker whose records go to SQLite or to a fresh PostgreSQL database, and the
    environment `temporal-ciba audit export` needs to read them."""
    dsn = request.getfixturevalue("postgres").new_database() if request.param == "postgres" else None
    async with running_worker(temporal_server, agent_settings(op), payment_api, record_dsn=dsn) as settings:
        store = {"CIBA_RECORD_DSN": dsn} if dsn else {"CIBA_RECORD_DB": str(settings.record_db)}
        yield settings, clean_env(CIBA_TOKEN_KEY=TOKEN_KEY, **store)


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *cli_command(*args), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def jwks_uri(op: TestOP) -> str:
    import httpx

    return str(httpx.get(op.issuer + "/.well-known/openid-configuration", timeout=10).json()["jwks_uri"])


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


async def test_records_export_and_verify(
    temporal_client: Client,
    recording_worker: tuple[WorkerSettings, dict[str, str]],
    op: TestOP,
    tmp_path: Path,
) -> None:
    worker, env = recording_worker
    approved = await start_agent(temporal_client, worker, acr_values=MFA, expected_subject="alice")
    op.approve(await pending_auth_req_id(approval_handle(temporal_client, approved)))
    outcome = (await approved.result()).outcome
    denied = await start_agent(temporal_client, worker)
    op.deny(await pending_auth_req_id(approval_handle(temporal_client, denied)))
    assert outcome.approved and (await denied.result()).outcome.status == "denied"

    # The auditor keeps a checkpoint of the log as it is now, and the log's public key.
    code, log_key, stderr = await cli(env, "audit", "log-key")
    assert code == 0 and len(log_key.strip()) == 44, stderr
    log_key = log_key.strip()
    kept = tmp_path / "checkpoint.json"
    await cli(env, "audit", "export", "--output", str(tmp_path / "first.jsonl"))  # signs a checkpoint of the two
    code, _, stderr = await cli(env, "audit", "checkpoint", "--log-key", log_key, "--output", str(kept))
    assert code == 0 and json.loads(kept.read_text())["size"] == 2, stderr

    later = await start_agent(temporal_client, worker)
    op.deny(await pending_auth_req_id(approval_handle(temporal_client, later)))
    assert (await later.result()).outcome.status == "denied"

    export = tmp_path / "export.jsonl"
    code, _, stderr = await cli(env, "audit", "export", "--since-checkpoint", str(kept), "--output", str(export))
    assert code == 0, stderr
    assert export.stat().st_mode & 0o777 == 0o600  # it names people: owner-only
    header, *records = [json.loads(line) for line in export.read_text().splitlines()]
    assert header["checkpoint"]["size"] == 3 and header["consistency"]["old_size"] == 2 and header["complete"]
    assert [record["status"] for record in records] == ["approved", "denied", "denied"]
    assert [record["log"]["seq"] for record in records] == [0, 1, 2]
    record = records[0]
    # Who, what, when, where, and the evidence: the ID token the OP issued for this request.
    assert (record["sub"], record["acr"], record["login_hint"]) == ("alice", MFA, "alice")
    assert record["action_digest"] == action_digest(INVOICE) == outcome.action_digest
    assert record["authorization_details"][0]["creditorName"] == INVOICE.creditor_name
    assert record["workflow_id"] == approval_handle(temporal_client, approved).id
    assert record["auth_req_id"] == outcome.auth_req_id and record["auth_time"] == outcome.auth_time
    assert record["id_token"] == op.issued()[outcome.auth_req_id]["id_token"]
    assert records[1]["id_token"] is None and records[1]["error"] == "access_denied"

    # The filters.
    code, stdout, _ = await cli(env, "audit", "export", "--status", "denied")
    assert code == 0 and [json.loads(line).get("workflow_id") for line in stdout.splitlines()[1:]] == [
        records[1]["workflow_id"],
        records[2]["workflow_id"],
    ]
    code, stdout, _ = await cli(env, "audit", "export", "--sub", "alice", "--action-type", "payment_initiation")
    assert code == 0 and [json.loads(line)["status"] for line in stdout.splitlines()[1:]] == ["approved"]
    code, stdout, _ = await cli(
        env, "audit", "export", "--since", record["decided_at"], "--until", records[1]["decided_at"]
    )
    assert code == 0 and [json.loads(line)["status"] for line in stdout.splitlines()[1:]] == ["approved"]

    # Verified offline against the OP's keys (from its jwks_uri, or by discovery) and the log's key,
    # and against the checkpoint kept before the last decision.
    verify_env = clean_env()  # no CIBA_* at all: the auditor holds no key of the operator's
    verify = ("audit", "verify", str(export), "--log-key", log_key)
    code, stdout, stderr = await cli(verify_env, *verify, "--jwks", jwks_uri(op), "--since-checkpoint", str(kept))
    assert (code, stdout) == (0, ""), stderr
    assert "approved, signed by the OP (an ID token verified against its keys): 1" in stderr
    assert "other outcomes (only the log attests them): denied 2" in stderr
    code, stdout, stderr = await cli(verify_env, *verify)
    assert (code, stdout) == (0, ""), stderr

    # Each edit of an outcome, and the evidence forged, fails with one line naming the record.
    header_line = export.read_text().splitlines()[0]
    approval, denial = records[0], records[1]
    claims = unb64(approval["id_token"].split(".")[1])
    copied = ("sub", "auth_time", "requested_at", "decided_at", "auth_req_id", "id_token", "acr", "amr")
    edits = {
        "denial approved by a policy": [
            approval,
            {**denial, "status": "approved", "error": None, "policy": {"rule": "r", "reason": "r", "approval": "none"}},
            records[2],
        ],
        "denial approved with the approval's evidence": [
            approval,
            {**denial, "status": "approved", "error": None, **{name: approval[name] for name in copied}},
            records[2],
        ],
        "approval turned into a denial": [
            {**approval, "status": "denied", "id_token": None, "sub": None, "error": "access_denied"},
            *records[1:],
        ],
        "an ID token re-signed": [
            {**approval, "id_token": ".".join([approval["id_token"].split(".")[0], b64({**claims, "sub": "x"}), "AA"])},
            *records[1:],
        ],
    }
    for name, edited in edits.items():
        tampered = tmp_path / "tampered.jsonl"
        tampered.write_text("".join(line + "\n" for line in [header_line, *map(json.dumps, edited)]))
        code, stdout, stderr = await cli(verify_env, "audit", "verify", str(tampered), "--log-key", log_key)
        (changed,) = [after for before, after in zip(records, edited, strict=True) if before != after]
        assert code == 1 and len(stdout.splitlines()) == 1, (name, stdout, stderr)
        assert f"record {changed['record_id']} (sequence {changed['log']['seq']})" in stdout, (name, stdout)
    deleted = tmp_path / "deleted.jsonl"
    deleted.write_text("".join(line + "\n" for line in [header_line, json.dumps(approval), json.dumps(records[2])]))
    code, stdout, _ = await cli(verify_env, "audit", "verify", str(deleted), "--log-key", log_key)
    assert (code, stdout) == (1, "sequence 1: missing from the export (deleted?)\n")


async def test_a_record_store_that_cannot_be_reached_never_shows_its_password(
    temporal_client: Client, temporal_server: DevServer, op: TestOP, payment_api: str, tmp_path: Path
) -> None:
    """A worker process whose CIBA_RECORD_DSN names a server nobody listens on, with a password.

    The decision's write fails and is retried; neither the worker's log (every retry), nor the
    activity's failure Temporal keeps, nor the workflows' histories hold the password."""
    password = "Hunter2Secret-4c1e"
    dsn = f"postgresql://auditor:{password}@127.0.0.1:{free_port()}/records"
    task_queue = f"records-down-{tmp_path.name}"
    process = WorkerProcess(
        clean_env(
            TEMPORAL_ADDRESS=temporal_server.address,
            CIBA_ISSUER=op.issuer,
            CIBA_CLIENT_ID=AGENT_CLIENT,
            CIBA_CLIENT_SECRET=SECRET,
            CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
            CIBA_TOKEN_KEY=TOKEN_KEY,
            CIBA_TASK_QUEUE=task_queue,
            CIBA_PAYMENT_API_URL=payment_api,
            CIBA_RECORD_DSN=dsn,
            CIBA_LOG_LEVEL="DEBUG",
        ),
        tmp_path / "worker.log",
    )
    process.start()
    settings = WorkerSettings(task_queue=task_queue, payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)  # type: ignore[arg-type]
    agent = await start_agent(temporal_client, settings)
    approval = approval_handle(temporal_client, agent)
    try:
        op.deny(await pending_auth_req_id(approval))

        log = tmp_path / "worker.log"

        def retried() -> bool:
            # A local activity: its attempts are retried in the worker, each failure logged.
            failures = [line for line in log.read_text().splitlines() if line.startswith("temporal_ciba.records.")]
            return len(failures) >= 3

        await wait_for(retried, what="the decision record's write to fail three times", timeout=60)
        histories = [(await handle.fetch_history()).to_json() for handle in (agent, approval)]
        description = str((await approval.describe()).raw_description)
        text = log.read_text()
        failures = [line for line in text.splitlines() if line.startswith("temporal_ciba.records.")]
        assert all(
            line.endswith("(CIBA_RECORD_DSN) failed while creating its table: OperationalError: Connection refused")
            for line in failures
        )
        for shown in (text, description, *histories):
            assert password not in shown and dsn not in shown
    finally:
        for handle in (agent, approval):
            await handle.terminate()
        process.stop()

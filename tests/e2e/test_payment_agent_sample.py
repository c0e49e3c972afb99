"""The payment agent sample run as its README says: its own worker and its starter.

The worker (`temporal-ciba-examples payment-worker`) and the starter run against the real
Temporal dev server, the test OP and the payment API; the approver approves or denies, and the
starter says what came of it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.op import TestOP
from tests.support.stack import (
    AGENT_CLIENT,
    PAYLOAD_KEY,
    SECRET,
    TOKEN_KEY,
    clean_env,
    examples_command,
    payments,
)
from tests.support.temporal import DevServer, wait_for


@pytest.fixture(scope="module")
def sample_env(temporal_server: DevServer, op: TestOP, payment_api: str) -> dict[str, str]:
    """What `source .demo/worker.env && export CIBA_TASK_QUEUE=...` gives, pointed at the tests' servers."""
    return clean_env(
        TEMPORAL_ADDRESS=temporal_server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_DELIVERY_MODE="poll",
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=f"payment-sample-{uuid.uuid4().hex[:8]}",
        CIBA_PAYMENT_API_URL=payment_api,
    )


@pytest.fixture(scope="module")
def payment_worker(sample_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("payment-sample") / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            examples_command("payment-worker"), env=sample_env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
async def test_the_sample_worker_and_starter_pay_only_what_was_approved(
    sample_env: dict[str, str], payment_worker: Path, op: TestOP, payment_api: str, approve: bool
) -> None:
    creditor = f"Sample {uuid.uuid4().hex[:8]}"
    reference = f"INV-{uuid.uuid4().hex[:6].upper()}"
    starter = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "temporal_ciba_examples.payment_agent.starter", "--approver", "alice"),
        *("--creditor-name", creditor, "--reference", reference),
        env=sample_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    finished = asyncio.create_task(starter.communicate())
    try:

        def pending() -> str | None:
            if finished.done():
                out, err = finished.result()
                raise AssertionError(f"the starter ended before the approval was asked:\n{(out + err).decode()}")
            return next(
                (r["auth_req_id"] for r in op.requests("pending") if creditor in (r["binding_message"] or "")),
                None,
            )

        auth_req_id = await wait_for(pending, timeout=60, what="the sample's approval request to reach the OP")
        (op.approve if approve else op.deny)(auth_req_id)
        stdout, stderr = await asyncio.wait_for(asyncio.shield(finished), timeout=60)
    except BaseException:
        print(f"--- the payment worker ({payment_worker}) ---\n{payment_worker.read_text(errors='replace')[-5000:]}")
        raise
    finally:
        if starter.returncode is None and not finished.done():
            starter.kill()
            await finished
    workflow_id = stderr.decode().strip().splitlines()[0]
    assert workflow_id == f"payment-{reference.lower()}"
    recorded = payments(payment_api, workflow_id)
    if approve:
        assert starter.returncode == 0, stderr.decode()
        assert stdout.decode().startswith("approved by alice; payment "), stdout.decode()
        assert [p["payment_id"] for p in recorded] == [stdout.decode().split()[-1]]
    else:
        assert starter.returncode == 1, stderr.decode()
        assert stdout.decode().startswith("denied: "), stdout.decode()
        assert recorded == []

"""What the Temporal UI's workflow list shows for an approval.

A static summary (the binding message and the approver) and static details, set at start and
readable with no worker running, for `require_approval` and for the CLI's `request`; hostile text
cannot break out of its code span."""

from __future__ import annotations

import base64
import json
import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._workflow import require_approval
from temporal_ciba.crypto._codec import ENCODING, AesGcmCodec
from tests.support.cli import cli_env, run_cli
from tests.support.stack import PAYLOAD_KEY
from tests.support.temporal import DevServer, wait_for

HOSTILE = "Pay `x` **now** [click](https://evil.example) <img src=x>"
DIGEST = "ab" * 32


@workflow.defn(sandboxed=False)
class AgentAskingElsewhere:
    """Asks for approval on a task queue no worker polls: the child is started, never run."""

    @workflow.run
    async def run(self, task_queue: str) -> str:
        request = ApprovalRequest(
            login_hint="alice",
            binding_message=HOSTILE,
            summary=["Pay EUR 120.00 to ACME GmbH"],
            action_digest=DIGEST,
        )
        return (await require_approval(request, task_queue=task_queue, inline=False)).status


async def metadata(client: Client, workflow_id: str) -> tuple[str, str, list[bytes]]:
    """The static summary and details as the UI gets them.

    describe(), decoded as the codec server decodes (no workflow context: the SDK encodes a child's
    metadata in its parent's context, so the ciphertext names the parent), and the raw payloads'
    encodings."""
    description = await client.get_workflow_handle(workflow_id).describe()
    user_metadata = description.raw_description.execution_config.user_metadata
    raw = [user_metadata.summary, user_metadata.details]
    decoded = await AesGcmCodec(base64.b64decode(PAYLOAD_KEY), require_encryption=False).decode(raw)
    summary, details = DataConverter.default.payload_converter.from_payloads(decoded)
    return summary, details, [payload.metadata["encoding"] for payload in raw]


def assert_safe(summary: str) -> None:
    # One line, and the hostile text stays inside one code span (its backticks are replaced).
    assert "\n" not in summary
    assert summary.count("`") == 4, summary


async def test_require_approval_sets_the_childs_static_summary(temporal_client: Client) -> None:
    parent_queue, nobody = f"agent-{uuid.uuid4().hex[:8]}", f"nobody-{uuid.uuid4().hex[:8]}"
    parent_id = f"agent-{uuid.uuid4().hex[:8]}"
    child_id = f"{parent_id}.approval-{DIGEST[:16]}"
    async with Worker(temporal_client, task_queue=parent_queue, workflows=[AgentAskingElsewhere]):
        parent = await temporal_client.start_workflow(
            AgentAskingElsewhere.run, nobody, id=parent_id, task_queue=parent_queue
        )

        async def child_started() -> bool:
            history = await parent.fetch_history()
            return any(event.HasField("child_workflow_execution_started_event_attributes") for event in history.events)

        await wait_for(child_started, what="the approval child to start")
    # No worker runs now, for either queue: what the UI shows comes from the start alone.
    summary, details, encodings = await metadata(temporal_client, child_id)
    assert summary == "CIBA approval: `Pay 'x' **now** [click](https://evil.example) <img src=x>` for `alice`"
    assert_safe(summary)
    assert "**CIBA approval** asked of `alice`" in details and "- `Pay EUR 120.00 to ACME GmbH`" in details
    assert f"action digest `{DIGEST[:16]}…`" in details
    # Encrypted in history like every payload: the UI shows it through the codec server.
    assert encodings == [ENCODING, ENCODING]
    await parent.terminate("test done")


async def test_cli_request_sets_static_summary_and_details(temporal_server: DevServer, temporal_client: Client) -> None:
    details = [{"type": "payment_initiation", "creditorName": "ACME `GmbH`\n# heading", "amount": "1.00"}]
    code, stdout, stderr = await run_cli(
        cli_env(temporal_server, f"nobody-{uuid.uuid4().hex[:8]}"),
        "request",
        "--login-hint",
        "bob",
        "--binding-message",
        HOSTILE,
        "--scope",
        "openid payments",
        "--authorization-details",
        json.dumps(details),
        "--requested-expiry",
        "120",
    )
    assert code == 0, stderr
    workflow_id = stdout.strip()
    summary, static_details, encodings = await metadata(temporal_client, workflow_id)
    assert summary == "CIBA approval: `Pay 'x' **now** [click](https://evil.example) <img src=x>` for `bob`"
    assert_safe(summary)
    # A workflow the client started reads back through describe() itself, too.
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert (await description.static_summary(), await description.static_details()) == (summary, static_details)
    assert "- `payment_initiation`" in static_details
    assert "  - `creditorName`: `ACME 'GmbH' # heading`" in static_details
    assert "- scope `openid payments`" in static_details and "- requested expiry 120 s" in static_details
    assert not any(line.startswith("#") for line in static_details.splitlines())
    assert encodings == [ENCODING, ENCODING]
    await temporal_client.get_workflow_handle(workflow_id).terminate("test done")

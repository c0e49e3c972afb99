"""Observability of a real worker process.

JSON logs with one line per state change and no secret, SDK metrics for Prometheus, and
OpenTelemetry traces exported over OTLP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client

from temporal_ciba._models import ApprovalRequest
from tests.support.flows import pending_auth_req_id, start_approval
from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, clean_env, cli_command
from tests.support.temporal import DevServer, free_port, wait_for


class Collector:
    """A minimal OTLP/HTTP trace receiver: keeps the names of the spans it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.span_names: list[str] = []

    async def traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest.FromString(await request.body())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.span_names += [span.name for span in scope_spans.spans]
        return Response(status_code=200, media_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    receiver = Collector()
    app = Starlette(routes=[Route("/v1/traces", receiver.traces, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=receiver.port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, what="the OTLP collector")
    yield receiver
    server.should_exit = True
    await task


async def test_logs_metrics_and_traces(
    temporal_server: DevServer, temporal_client: Client, op: TestOP, collector: Collector, tmp_path: Path
) -> None:
    task_queue, metrics_port = f"obs-{uuid.uuid4().hex[:8]}", free_port()
    log_path = tmp_path / "worker.log"
    env = clean_env(
        TEMPORAL_ADDRESS=temporal_server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=task_queue,
        CIBA_LOG_FORMAT="json",
        CIBA_METRICS_BIND=f"127.0.0.1:{metrics_port}",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    worker = subprocess.Popen(cli_command("worker"), env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    try:
        handle = await start_approval(
            temporal_client, task_queue, ApprovalRequest(login_hint="alice", binding_message="Observe me")
        )
        auth_req_id = await pending_auth_req_id(handle)
        op.approve(auth_req_id)
        assert (await handle.result()).status == "approved"

        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        # The request is a local activity (docs/guides/asking-for-an-approval.md).
        assert "temporal_workflow_completed" in metrics and "temporal_local_activity_execution_latency" in metrics

        # Poll mode's token requests are one regular activity (ciba.poll), traced as such.
        await wait_for(
            lambda: "RunActivity:ciba.poll" in collector.span_names,
            timeout=30,
            what="the poll activity's span",
        )
        assert "RunWorkflow:CibaApprovalWorkflow" in collector.span_names
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("workflow", {}).get("workflow_id") == handle.id]
    statuses = [line["ciba_status"] for line in mine if "ciba_status" in line]
    assert statuses == ["requesting", "pending", "approved"]  # one line per state change
    assert all(line["auth_req_id"] == auth_req_id for line in mine if line.get("ciba_status") != "requesting")
    issued = op.issued()[auth_req_id]
    text = log_path.read_text()
    for secret in (SECRET, PAYLOAD_KEY, issued["access_token"], issued["id_token"], issued.get("refresh_token")):
        assert not secret or secret not in text

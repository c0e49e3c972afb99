"""The benchmark: decision-to-resume latency, throughput, pending capacity and history cost,
each beside a bare Temporal signal workflow, in one run on this machine.

    bash scripts/bench.sh [--approvals 80] [--ping-capacity 10000] [--poll-capacity 1000]

It starts its own Temporal dev server, the oidc-provider OP, the callback service (HTTPS) and
three workers (`python -m bench.workflows`: the approval worker plus the benchmark's agent and
bare workflows; ping, poll at 1 s, poll at 5 s), prints a table with the issue-15 targets,
writes every figure and the commit measured to JSON, and plots the latency distributions.

Latency is wall clock on one machine: from the OP recording the decision (or the bare signal
being sent) to the server recording the completion of the workflow task in which the agent
ran its next line of code; every path is timed in the same batches, decisions interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.workflows import BareSignalWorkflow, BenchAgentInput, BenchAgentWorkflow
from temporal_ciba import (
    ApprovalRequest,
    ApprovalWorkflowInput,
    CibaActivities,
    CibaApprovalWorkflow,
    CibaPlugin,
    OPSettings,
    PollingPolicy,
    ensure_search_attributes,
    with_encryption,
)
from temporal_ciba.crypto import TokenSealer
from temporal_ciba.records import DecisionRecorder, EvidenceKeys, LogSigner, SqliteStore
from temporal_ciba_examples.demo.servers import DemoOP, DevServer, free_port, installed_tool, run_demo_op

PHASES = ("latency", "throughput", "history", "capacity")
# The results.json sections each phase writes (a phase run alone replaces only its own).
SECTIONS = {
    "latency": ("latency", "latency_samples"),
    "throughput": ("throughput",),
    "history": ("history",),
    "capacity": ("capacity",),
}
T = TypeVar("T")
R = TypeVar("R")
SECRET = secrets.token_urlsafe(24)
KEY = os.urandom(32)
TOKEN_KEY = os.urandom(32)


@dataclass(frozen=True)
class Mode:
    name: str
    client_id: str
    delivery: str
    interval: int
    task_queue: str


MODES = [
    Mode("ping", "bench-ping", "ping", 5, "ciba-ping"),
    Mode("poll 1 s", "bench-poll1", "poll", 1, "ciba-poll1"),
    Mode("poll 5 s", "bench-poll5", "poll", 5, "ciba-poll5"),
]
PING, POLL1, POLL5 = MODES


@dataclass(frozen=True)
class Route:
    """One way an agent waits: a delivery mode, and inline or in a child workflow."""

    name: str
    mode: Mode
    inline: bool


ROUTES = [
    Route("ping, inline", PING, True),
    Route("ping, child", PING, False),
    Route("poll 1 s, inline", POLL1, True),
    Route("poll 1 s, child", POLL1, False),
    Route("poll 5 s, inline", POLL5, True),
    Route("poll 5 s, child", POLL5, False),
]
PING_INLINE, PING_CHILD, POLL5_CHILD = ROUTES[0], ROUTES[1], ROUTES[5]
BARE = "bare signal"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "temporal_ciba", *args]


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def dev_certificates(directory: Path) -> Certificates:
    """A local CA and a certificate for 127.0.0.1 and localhost, by `temporal-ciba dev-certs`."""
    subprocess.run([*cli("dev-certs", str(directory), "127.0.0.1", "localhost")], capture_output=True, check=True)
    return Certificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")


def ciba_client(client_id: str, *, mode: str, **metadata: Any) -> dict[str, Any]:
    """The OP's registration of one benchmark client."""
    return {
        "client_id": client_id,
        "grant_types": ["urn:openid:params:grant-type:ciba"],
        "response_types": [],
        "redirect_uris": [],
        "backchannel_token_delivery_mode": mode,
        "require_auth_time": True,
        **metadata,
    }


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


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


async def gather_limited(limit: int, function: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
    """function(item) for every item, at most `limit` at a time."""
    semaphore = asyncio.Semaphore(limit)

    async def run(item: T) -> R:
        async with semaphore:
            return await function(item)

    return await asyncio.gather(*(run(item) for item in items))


class System:
    """Every server of the benchmark, as real processes."""

    def __init__(self, directory: Path, worker_env: dict[str, str]) -> None:
        self.directory = directory
        self.worker_env = worker_env
        self.stack = ExitStack()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.server = DevServer(directory)
        self.op: DemoOP

    def start_process(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.server.start()
        tls = dev_certificates(self.directory / "tls")
        callback_port = free_port()
        clients = [
            ciba_client(
                mode.client_id,
                mode=mode.delivery,
                client_secret=SECRET,
                **(
                    {"backchannel_client_notification_endpoint": f"https://127.0.0.1:{callback_port}/ciba/notify"}
                    if mode.delivery == "ping"
                    else {}
                ),
            )
            for mode in MODES
        ]
        config = {
            "clients": clients,
            "accounts": {"alice": {"email": "alice@example.com"}},
            "ackInterval": {mode.client_id: mode.interval for mode in MODES},
        }
        self.op = self.stack.enter_context(run_demo_op(config, env={"NODE_EXTRA_CA_CERTS": str(tls.ca)}))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "TEMPORAL_"))}
        common = {
            **base,
            "TEMPORAL_ADDRESS": self.server.address,
            "CIBA_PAYLOAD_KEY": base64.b64encode(KEY).decode(),
            "CIBA_TOKEN_KEY": base64.b64encode(TOKEN_KEY).decode(),
            "CIBA_RECORD_DB": str(self.directory / "records.sqlite3"),
            "CIBA_LOG_LEVEL": "WARNING",
        }
        self.start_process(
            "callback",
            cli("callback"),
            {
                **common,
                "CIBA_CALLBACK_PORT": str(callback_port),
                "CIBA_CALLBACK_TLS_CERT": str(tls.cert),
                "CIBA_CALLBACK_TLS_KEY": str(tls.key),
            },
        )
        for mode in MODES:
            self.start_process(
                mode.task_queue,
                [sys.executable, "-m", "bench.workflows"],
                {
                    **common,
                    **self.worker_env,
                    "CIBA_ISSUER": self.op.issuer,
                    "CIBA_CLIENT_ID": mode.client_id,
                    "CIBA_CLIENT_SECRET": SECRET,
                    "CIBA_DELIVERY_MODE": mode.delivery,
                    "CIBA_TASK_QUEUE": mode.task_queue,
                },
            )

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.stack.close()
        self.server.stop()

    def process(self, name: str) -> psutil.Process:
        if name == "temporal":
            assert self.server.process is not None
            return psutil.Process(self.server.process.pid)
        if name == "op":
            return psutil.Process(self.op.process.pid)
        return psutil.Process(self.processes[name].pid)


class Approver:
    """Plays the users' phones over the OP's admin API."""

    def __init__(self, op: DemoOP) -> None:
        self.op = op
        self.http = httpx.AsyncClient(base_url=op.issuer, timeout=60)

    async def pending(self, prefix: str) -> dict[str, str]:
        listing = (await self.http.get("/admin/requests", params={"status": "pending"})).json()
        return {r["binding_message"]: r["auth_req_id"] for r in listing if str(r["binding_message"]).startswith(prefix)}

    async def wait_pending(self, prefix: str, count: int, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            pending = await self.pending(prefix)
            if len(pending) >= count:
                return pending
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {count} requests pending after {timeout:.0f} s")
            await asyncio.sleep(0.2 if count < 100 else 2.0)

    async def approve(self, auth_req_id: str) -> float:
        response = await self.http.post(f"/admin/requests/{auth_req_id}/approve", json={})
        response.raise_for_status()
        return float(response.json()["decided_at"])

    async def token_requests_since(self, since: float) -> int:
        return int((await self.http.get("/admin/token-requests", params={"since": since, "count": 1})).json()["count"])


# 1. Decision-to-resume latency and history cost ----------------------------------------------


async def resumed(client: Client, handle: WorkflowHandle[Any, Any]) -> tuple[float, int]:
    """When the server recorded the completion of the workflow task in which the agent went on
    (its last), and the events of every workflow it touched (itself and its approval child)."""
    events = [event async for event in handle.fetch_history_events()]
    completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    count = len(events)
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            child = event.child_workflow_execution_started_event_attributes.workflow_execution
            count += len(
                (await client.get_workflow_handle(child.workflow_id, run_id=child.run_id).fetch_history()).events
            )
    return completed[-1].event_time.ToDatetime(datetime.UTC).timestamp(), count


async def first_task_done(handle: WorkflowHandle[Any, Any]) -> None:
    while not any(
        [e async for e in handle.fetch_history_events() if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    ):
        await asyncio.sleep(0.1)


async def latencies(
    client: Client, approver: Approver, routes: list[Route], count: int, batch: int = 10
) -> dict[str, list[tuple[float, int]]]:
    """Every route and the bare signal in the same batches; each decision at a random moment
    (uniform over two poll intervals of its route), all routes' decisions interleaved.
    Returns, per route, (seconds from decision to resume, events) samples."""
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in [*(route.name for route in routes), BARE]}
    rng = random.Random(count)
    for first in range(0, count, batch):
        run = uuid.uuid4().hex[:6]
        size = min(batch, count - first)
        agents = {
            (route.name, i): await client.start_workflow(
                BenchAgentWorkflow.run,
                BenchAgentInput(tag=f"{run}-{index}-{i}", inline=route.inline),
                id=f"bench-agent-{run}-{index}-{i}",
                task_queue=route.mode.task_queue,
            )
            for index, route in enumerate(routes)
            for i in range(size)
        }
        bares = [
            await client.start_workflow(BareSignalWorkflow.run, id=f"bench-bare-{run}-{i}", task_queue=PING.task_queue)
            for i in range(size)
        ]
        pending = await approver.wait_pending(f"Bench {run}-", len(agents), timeout=300)
        await asyncio.gather(*(first_task_done(handle) for handle in bares))
        plan = [
            (rng.uniform(0, 2 * route.mode.interval), route.name, index, i)
            for index, route in enumerate(routes)
            for i in range(size)
        ]
        plan += [(rng.uniform(0, 2 * PING.interval), BARE, -1, i) for i in range(size)]
        origin = time.monotonic()
        decided: dict[tuple[str, int], float] = {}
        for offset, name, index, i in sorted(plan):
            await asyncio.sleep(max(0.0, origin + offset - time.monotonic()))
            if name == BARE:
                decided[(name, i)] = time.time()
                await bares[i].signal(BareSignalWorkflow.release)
            else:
                decided[(name, i)] = await approver.approve(pending[f"Bench {run}-{index}-{i}"])
        waiting: list[tuple[tuple[str, int], WorkflowHandle[Any, Any]]] = [
            *agents.items(),
            *(((BARE, i), handle) for i, handle in enumerate(bares)),
        ]
        for key, handle in waiting:
            result = await handle.result()
            if key[0] != BARE and result != "approved":
                raise RuntimeError(f"{key[0]}: approval ended {result}")
            at, events = await resumed(client, handle)
            samples[key[0]].append((at - decided[key], events))
    return samples


# 2. Throughput -------------------------------------------------------------------------------


async def throughput(client: Client, approver: Approver, route: Route | None, count: int) -> dict[str, float]:
    """`count` workflows in flight at once; each approval decided as soon as it is pending, each
    bare workflow signalled as soon as it started (route None)."""
    run = uuid.uuid4().hex[:6]
    done = asyncio.Event()
    approved: set[str] = set()

    async def decide() -> None:
        while not done.is_set():
            fresh = [a for a in (await approver.pending(f"Bench {run}-")).values() if a not in approved]
            approved.update(fresh)
            await gather_limited(20, approver.approve, fresh)
            await asyncio.sleep(0.05)

    async def one(i: int) -> str | None:
        if route is None:
            handle = await client.start_workflow(
                BareSignalWorkflow.run, id=f"bench-bare-tput-{run}-{i}", task_queue=PING.task_queue
            )
            await handle.signal(BareSignalWorkflow.release)
            await handle.result()
            return None
        agent = await client.start_workflow(
            BenchAgentWorkflow.run,
            BenchAgentInput(tag=f"{run}-{i}", inline=route.inline),
            id=f"bench-tput-{run}-{i}",
            task_queue=route.mode.task_queue,
        )
        return await agent.result()

    deciding = asyncio.create_task(decide()) if route is not None else None
    started = time.monotonic()
    results = await gather_limited(count, one, range(count))
    elapsed = time.monotonic() - started
    done.set()
    if deciding is not None:
        await deciding
    return {
        "count": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "approved": sum(r == "approved" for r in results) if route is not None else count,
    }


# 3. Pending capacity -------------------------------------------------------------------------


async def pending_capacity(
    client: Client, approver: Approver, system: System, route: Route, count: int, window: float
) -> dict[str, Any]:
    """`count` agents waiting at once on one worker; resources and OP load while they wait, and
    whether every one resumes approved once decided."""
    run = uuid.uuid4().hex[:6]
    started = time.monotonic()

    async def start(i: int) -> WorkflowHandle[Any, Any]:
        return await client.start_workflow(
            BenchAgentWorkflow.run,
            BenchAgentInput(tag=f"{run}-{i}", inline=route.inline, requested_expiry=7200, polling=PollingPolicy()),
            id=f"bench-cap-{run}-{i}",
            task_queue=route.mode.task_queue,
        )

    handles = await gather_limited(50, start, range(count))
    pending = await approver.wait_pending(f"Bench {run}-", count, timeout=3600)
    all_pending = time.monotonic() - started

    worker, server = system.process(route.mode.task_queue), system.process("temporal")
    worker.cpu_percent(), server.cpu_percent()
    since, rss = time.time(), []
    for _ in range(int(window)):
        await asyncio.sleep(1.0)
        rss.append(worker.memory_info().rss)
    worker_cpu, server_cpu = worker.cpu_percent(), server.cpu_percent()
    polls_per_second = await approver.token_requests_since(since) / window

    decided = time.monotonic()
    await gather_limited(20, approver.approve, pending.values())
    # Results are long polls: thousands at once exceed the server's concurrent poller limit.
    outcomes = await gather_limited(100, lambda handle: handle.result(), handles)
    return {
        "route": route.name,
        "pending": count,
        "seconds_until_all_pending": all_pending,
        "worker_rss_mib": max(rss) / 2**20,
        "worker_cpu_percent": worker_cpu,
        "temporal_server_cpu_percent": server_cpu,
        "token_requests_per_second": polls_per_second,
        "seconds_to_complete_after_decisions": time.monotonic() - decided,
        "approved": sum(outcome == "approved" for outcome in outcomes),
    }


async def long_wait_history(op: DemoOP, hours: float = 24.0) -> dict[str, Any]:
    """A poll-mode approval pending `hours` at interval 5 s, on the time-skipping test server."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_tool("temporal-test-server"), data_converter=with_encryption(None, KEY)
    ) as env:
        await ensure_search_attributes(env.client)
        settings = OPSettings(issuer=op.issuer, client_id="bench-poll5", client_secret=SECRET)  # type: ignore[arg-type]
        ciba = settings.ciba_client()
        # The poll activity waits in the test server's time (skipped), reading its clock.
        now = (await env.get_current_time()).timestamp()

        async def sleep(seconds: float) -> None:
            nonlocal now
            await env.sleep(seconds)
            now = (await env.get_current_time()).timestamp()

        activities = CibaActivities(ciba, TokenSealer(TOKEN_KEY), clock=lambda: now, sleep=sleep)
        records = SqliteStore(Path(tempfile.mkdtemp()) / "records.sqlite3")
        recorder = DecisionRecorder(records, EvidenceKeys([TOKEN_KEY]), TokenSealer(TOKEN_KEY), LogSigner(TOKEN_KEY))
        plugin = CibaPlugin(payload_key=KEY, activities=[*activities.all, recorder.record_decision])
        # Each heartbeat reaches the server at once: the poll loop moves its clock in 5 s steps.
        async with Worker(
            env.client, task_queue="long", plugins=[plugin], max_heartbeat_throttle_interval=datetime.timedelta(0)
        ):
            message = f"Long wait {uuid.uuid4().hex[:6]}"
            started = await env.get_current_time()
            handle = await env.client.start_workflow(
                CibaApprovalWorkflow.run,
                ApprovalWorkflowInput(
                    request=ApprovalRequest(
                        login_hint="alice", binding_message=message, requested_expiry=int(hours * 3600) + 3600
                    )
                ),
                id=f"long-{uuid.uuid4().hex[:8]}",
                task_queue="long",
            )
            # Waiting on the result lets the server skip time; no queries meanwhile (each needs the busy worker).
            result = asyncio.ensure_future(handle.result())
            while (await env.get_current_time() - started).total_seconds() < hours * 3600:
                await asyncio.sleep(0.2)
            [auth_req_id] = [r["auth_req_id"] for r in op.requests("pending") if r["binding_message"] == message]
            await asyncio.to_thread(op.approve, auth_req_id)
            outcome = await result
        await ciba.aclose()
        sizes = await history_runs(env.client, handle.id, handle.first_execution_run_id or "")
    return {
        "hours": hours,
        "status": outcome.status,
        "runs": len(sizes),
        "max_events_per_run": max(sizes),
        "total_events": sum(sizes),
        "token_requests": len(op.token_requests(auth_req_id)),
    }


# Report --------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607


def machine() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        # What was measured: the docs' figures are regenerated from the commit that prints them.
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def measured_on(results: dict[str, Any], phase: str) -> dict[str, Any]:
    """The run a phase's figures come from: its commit, date and whether the tree was clean."""
    run: dict[str, Any] = results.get("measured", {}).get(phase, results["machine"])
    return run


def provenance(results: dict[str, Any], phase: str) -> str:
    """A section's note when its figures come from another run than the table's header."""
    run, header = measured_on(results, phase), results["machine"]
    if run["commit"] == header["commit"] and run["date"] == header["date"]:
        return ""
    return f" (measured {run['date']}, commit {run['commit'][:12]})"


def keep_other_phases(results: dict[str, Any], earlier: dict[str, Any], phases: set[str]) -> None:
    """A run of some phases only: the others keep their figures from `earlier`, and the run
    each was measured on."""
    for phase in set(PHASES) - phases:
        if any(earlier.get(section) for section in SECTIONS[phase]):
            results["measured"][phase] = measured_on(earlier, phase)
            for section in SECTIONS[phase]:
                results[section] = earlier[section]


def _met(rule: Callable[[], bool], *figures: object) -> bool | None:
    """The rule's verdict, or None when a figure it needs was not measured in this run."""
    return rule() if all(figure is not None for figure in figures) else None


def targets(results: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """Issue 15's targets: each met (True), missed (False), or not measured in this run (None)."""
    latency, tput = results["latency"], results["throughput"]
    ping: Any = latency.get("ping, inline")
    bare: Any = latency.get(BARE)
    ping_tput: Any = tput.get("ping, inline")
    bare_tput: Any = tput.get(BARE)
    held: Any = next((stats for stats in results["capacity"] if stats["route"] == "ping, inline"), None)
    checks = [
        ("ping median <= 2.0x bare signal", _met(lambda: ping["median"] <= 2.0 * bare["median"], ping, bare)),
        ("ping p95 <= 3x bare signal p95", _met(lambda: ping["p95"] <= 3.0 * bare["p95"], ping, bare)),
        ("events per ping approval, every workflow counted, <= 16", _met(lambda: ping["events"] <= 16, ping)),
        (
            "throughput, 200 in flight, >= 0.5x bare",
            _met(lambda: ping_tput["per_second"] >= 0.5 * bare_tput["per_second"], ping_tput, bare_tput),
        ),
        (
            "10,000 pending in ping mode on one worker: RSS < 1.5 GiB, server CPU < 50 %, all approved",
            _met(
                lambda: (
                    held["pending"] >= 10_000
                    and held["worker_rss_mib"] < 1536
                    and held["temporal_server_cpu_percent"] < 50
                    and held["approved"] == held["pending"]
                ),
                held,
            ),
        ),
    ]
    for route in ROUTES:
        stats = latency.get(route.name)
        if route.mode.delivery == "poll" and stats is not None:
            limit = route.mode.interval / 2 + 0.1
            checks.append((f"{route.name}: median <= {limit:.1f} s", stats["median"] <= limit))
    return checks


def table(results: dict[str, Any]) -> str:
    """The figures as text, one section per phase that ran, then the targets."""
    rule = "-" * 100
    m = results["machine"]
    commit = m["commit"][:12] + (" with uncommitted changes" if m["uncommitted_changes"] else "")
    lines = [
        f"temporal-ciba benchmark, {m['date']}, commit {commit}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        "Temporal dev server (SQLite)"
    ]
    if results["latency"]:
        base = results["latency"][BARE]
        lines += [
            "",
            "Decision-to-resume, wall clock (s)   median      p95     n   median / bare   events (every workflow)"
            + provenance(results, "latency"),
            rule,
        ]
        for name, stats in results["latency"].items():
            lines.append(
                f"{name:32} {stats['median']:8.3f} {stats['p95']:8.3f} {stats['n']:5d}"
                f"   {stats['median'] / base['median']:10.1f}x   {stats['events']:8.0f}"
            )
    if results["throughput"]:
        lines += ["", "Throughput, 200 in flight" + provenance(results, "throughput"), rule]
        base = results["throughput"].get(BARE)
        for name, stats in results["throughput"].items():
            ratio = f"   {stats['per_second'] / base['per_second']:.2f}x bare" if base else ""
            rate = f"{stats['per_second']:8.1f} completed/s  ({stats['count']} in {stats['seconds']:.1f} s)"
            lines.append(f"{name:32} {rate}{ratio}")
    if results["capacity"]:
        lines += [
            "",
            "Pending on one worker: all pending after | worker RSS | worker CPU | server CPU | token req/s | approved"
            + provenance(results, "capacity"),
            rule,
        ]
        for stats in results["capacity"]:
            lines.append(
                f"{stats['route']:16} {stats['pending']:6d} {stats['seconds_until_all_pending']:12.0f} s "
                f"{stats['worker_rss_mib']:9.0f} MiB {stats['worker_cpu_percent']:9.0f} % "
                f"{stats['temporal_server_cpu_percent']:10.0f} % {stats['token_requests_per_second']:12.1f} "
                f"      {stats['approved']}/{stats['pending']} in {stats['seconds_to_complete_after_decisions']:.0f} s"
            )
    long = results["history"].get("long_wait")
    if long:
        lines += ["", "History of a long wait (time-skipping server)" + provenance(results, "history"), rule]
        lines.append(
            f"poll 5 s, pending {long['hours']:.0f} h        {long['runs']} runs, at most "
            f"{long['max_events_per_run']} events per run, {long['token_requests']} token requests"
        )
    lines += ["", "Targets", rule]
    for name, met in targets(results):
        lines.append(f"{'met' if met else 'MISSED' if met is False else 'not measured':14} {name}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["latency_samples"])
    run = measured_on(results, "latency")
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.boxplot([results["latency_samples"][name] for name in names], orientation="horizontal", showfliers=True)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xscale("log")
    axis.set_xlabel("decision to resume, wall clock (s, log scale)")
    axis.set_title(f"temporal-ciba: decision-to-resume latency ({run['date']}, {run['cpus']} CPUs)")
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="ciba-bench-"))
    worker_env = {f"CIBA_{k.upper()}": str(v) for k, v in (args.worker_setting or [])}
    system = System(directory, worker_env)
    system.start()
    this_run = {**machine(), "worker_settings": worker_env}
    results: dict[str, Any] = {
        "machine": this_run,
        "measured": {},
        "latency": {},
        "latency_samples": {},
        "throughput": {},
        "capacity": [],
        "history": {},
    }
    if args.phases != set(PHASES) and args.out.exists():
        keep_other_phases(results, json.loads(args.out.read_text()), args.phases)
    for phase in args.phases:
        results["measured"][phase] = this_run

    def save() -> None:  # after every phase: a failure late in a long run keeps what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    try:
        client = await Client.connect(system.server.address, plugins=[CibaPlugin(payload_key=KEY)])
        await ensure_search_attributes(client)
        approver = Approver(system.op)
        if "latency" in args.phases:
            print("latency (warm-up) ...", file=sys.stderr, flush=True)
            await latencies(client, approver, ROUTES, 2, batch=2)
            print("latency ...", file=sys.stderr, flush=True)
            for name, pairs in (await latencies(client, approver, ROUTES, args.approvals)).items():
                seconds = [latency for latency, _ in pairs]
                results["latency"][name] = {**summary(seconds), "events": statistics.median(e for _, e in pairs)}
                results["latency_samples"][name] = seconds
            save()

        if "throughput" in args.phases:
            for route in (PING_INLINE, PING_CHILD, None):
                name = route.name if route else BARE
                print(f"throughput: {name} ...", file=sys.stderr, flush=True)
                results["throughput"][name] = await throughput(client, approver, route, args.throughput)
                save()

        if "history" in args.phases:
            print("history of a 24 h wait (time-skipping server) ...", file=sys.stderr, flush=True)
            results["history"]["long_wait"] = await long_wait_history(system.op)
            save()

        if "capacity" in args.phases:
            for route, count in ((PING_INLINE, args.ping_capacity), (POLL5_CHILD, args.poll_capacity)):
                if count:
                    print(f"capacity: {count} pending, {route.name} ...", file=sys.stderr, flush=True)
                    results["capacity"].append(
                        await pending_capacity(client, approver, system, route, count, args.window)
                    )
                    save()
    finally:
        system.stop()
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--approvals", type=int, default=80, help="samples per route (default 80)")
    parser.add_argument("--throughput", type=int, default=200, help="workflows in flight for throughput")
    parser.add_argument("--ping-capacity", type=int, default=10000, help="agents pending in ping mode (0: skip)")
    parser.add_argument("--poll-capacity", type=int, default=1000, help="agents pending in poll mode (0: skip)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds to watch the pending approvals")
    parser.add_argument(
        "--phases",
        type=lambda s: set(s.split(",")),
        default=set(PHASES),
        help=f"which phases to run, comma-separated (default: {','.join(PHASES)})",
    )
    parser.add_argument(
        "--worker-setting",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="a worker setting, e.g. worker_max_cached_workflows 5000 (CIBA_ prefix added)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench/latency.png"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    # A run stopped from outside (timeout, kill) still stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    arguments = parse(sys.argv[1:])
    figures = asyncio.run(main(arguments))
    print(table(figures))
    plotted = "latency" in arguments.phases
    if plotted:
        plot(figures, arguments.plot)
    print(f"\nwrote {arguments.out}" + (f" and {arguments.plot}" if plotted else ""))

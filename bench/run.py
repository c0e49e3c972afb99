"""The benchmark: decision-to-resume latency, throughput, pending capacity and history cost,
each beside the bare Temporal baseline, in one run on this machine.

    bash scripts/bench.sh [--approvals 100] [--capacity 1000,5000] [--out bench/results.json]

It starts its own Temporal dev server, the oidc-provider OP, the callback service (HTTPS) and
three workers (`temporal-ciba worker` processes: ping, poll at 1 s, poll at 5 s), prints a
table, writes the figures as JSON and plots the latency distributions.
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
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.workflows import BareSignalWorkflow, BenchAgentInput, BenchAgentWorkflow
from temporal_ciba.activities import CibaActivities
from temporal_ciba.crypto.sealing import TokenSealer
from temporal_ciba.models import ApprovalRequest, ApprovalWorkflowInput
from temporal_ciba.plugin import CibaPlugin, with_encryption
from temporal_ciba.programs.connect import connect
from temporal_ciba.programs.dev_tls import make_dev_certificates
from temporal_ciba.search_attributes import ensure_search_attributes
from temporal_ciba.settings import OPSettings
from temporal_ciba.workflow import CibaApprovalWorkflow
from tests.support.op import TestOP, ciba_client, run_test_op
from tests.support.temporal import DevServer, free_port, history_runs, venv_tool

AGENT_QUEUE = "bench-agents"
PHASES = ("latency", "throughput", "history", "capacity")
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


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "temporal_ciba.cli", *args]


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
        self.op: TestOP

    def start_process(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.server.start()
        tls = make_dev_certificates(self.directory / "tls", ["127.0.0.1", "localhost"])
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
        self.op = self.stack.enter_context(run_test_op(config, env={"NODE_EXTRA_CA_CERTS": str(tls.ca)}))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "TEMPORAL_"))}
        common = {
            **base,
            "TEMPORAL_ADDRESS": self.server.address,
            "CIBA_PAYLOAD_KEY": base64.b64encode(KEY).decode(),
            "CIBA_TOKEN_KEY": base64.b64encode(TOKEN_KEY).decode(),
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
                cli("worker"),
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

    def __init__(self, op: TestOP) -> None:
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


# 1. Decision-to-resume latency ---------------------------------------------------------------


async def approval_latencies(
    client: Client, approver: Approver, mode: Mode, count: int, batch: int = 25
) -> list[float]:
    """Agents wait; each person decides at a random moment (uniform over two poll intervals,
    so decisions fall anywhere in the poll cycle); latency = agent resumed - OP recorded it."""
    run = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    rng = random.Random(count)
    for first in range(0, count, batch):
        tags = [f"{run}-{i}" for i in range(first, min(count, first + batch))]
        handles = await asyncio.gather(
            *(
                client.start_workflow(
                    BenchAgentWorkflow.run,
                    BenchAgentInput(tag=tag, approval_task_queue=mode.task_queue),
                    id=f"bench-agent-{tag}",
                    task_queue=AGENT_QUEUE,
                )
                for tag in tags
            )
        )
        pending = await approver.wait_pending(f"Bench {run}-", len(tags), timeout=120)
        origin = time.monotonic()
        decided = {}
        for offset, tag in sorted((rng.uniform(0, 2 * mode.interval), tag) for tag in tags):
            await asyncio.sleep(max(0.0, origin + offset - time.monotonic()))
            decided[tag] = await approver.approve(pending[f"Bench {tag}"])
        for tag, result in zip(tags, await asyncio.gather(*(handle.result() for handle in handles)), strict=True):
            if result.status != "approved":
                raise RuntimeError(f"{mode.name}: approval ended {result.status}")
            latencies.append(result.resumed_at - decided[tag])
    return latencies


async def signal_latencies(client: Client, count: int, batch: int = 25, spacing: float = 0.1) -> list[float]:
    """The floor: bare workflows resumed by a plain signal; latency = resumed - signal sent."""
    latencies: list[float] = []
    for first in range(0, count, batch):
        handles = await asyncio.gather(
            *(
                client.start_workflow(
                    BareSignalWorkflow.run, id=f"bench-bare-{uuid.uuid4().hex[:10]}", task_queue=AGENT_QUEUE
                )
                for _ in range(first, min(count, first + batch))
            )
        )
        await asyncio.sleep(1.0)  # every workflow has run its first task and waits
        sent = []
        for handle in handles:
            sent.append(time.time())
            await handle.signal(BareSignalWorkflow.release)
            await asyncio.sleep(spacing)
        resumed = await asyncio.gather(*(handle.result() for handle in handles))
        latencies += [r - s for r, s in zip(resumed, sent, strict=True)]
    return latencies


# 2. Throughput -------------------------------------------------------------------------------


async def approval_throughput(client: Client, approver: Approver, mode: Mode, count: int) -> dict[str, float]:
    """`count` approvals started at once; the approver decides each as soon as it is pending."""
    run = uuid.uuid4().hex[:6]
    done = asyncio.Event()
    approved: set[str] = set()

    async def decide() -> None:
        while not done.is_set():
            fresh = [a for a in (await approver.pending(f"Bench {run}-")).values() if a not in approved]
            approved.update(fresh)
            await gather_limited(20, approver.approve, fresh)
            await asyncio.sleep(0.05)

    deciding = asyncio.create_task(decide())
    started = time.monotonic()

    async def start(i: int) -> WorkflowHandle[Any, Any]:
        return await client.start_workflow(
            BenchAgentWorkflow.run,
            BenchAgentInput(tag=f"{run}-{i}", approval_task_queue=mode.task_queue),
            id=f"bench-tput-{run}-{i}",
            task_queue=AGENT_QUEUE,
        )

    handles = await gather_limited(50, start, range(count))
    results = await asyncio.gather(*(handle.result() for handle in handles))
    elapsed = time.monotonic() - started
    done.set()
    await deciding
    return {
        "count": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "approved": sum(r.status == "approved" for r in results),
    }


async def signal_throughput(client: Client, count: int) -> dict[str, float]:
    async def one(i: int) -> float:
        handle = await client.start_workflow(
            BareSignalWorkflow.run, id=f"bench-bare-tput-{uuid.uuid4().hex[:10]}", task_queue=AGENT_QUEUE
        )
        await handle.signal(BareSignalWorkflow.release)
        return await handle.result()

    started = time.monotonic()
    await gather_limited(50, one, range(count))
    elapsed = time.monotonic() - started
    return {"count": count, "seconds": elapsed, "per_second": count / elapsed}


# 3. Pending capacity -------------------------------------------------------------------------


async def pending_capacity(
    client: Client, approver: Approver, system: System, mode: Mode, count: int, window: float
) -> dict[str, Any]:
    """`count` approvals pending at once on one worker; resources and OP load while they wait."""
    run = uuid.uuid4().hex[:6]
    started = time.monotonic()

    async def start(i: int) -> WorkflowHandle[Any, Any]:
        request = ApprovalRequest(login_hint="alice", binding_message=f"Cap {run}-{i}", requested_expiry=7200)
        return await client.start_workflow(
            CibaApprovalWorkflow.run,
            ApprovalWorkflowInput(request=request),
            id=f"bench-cap-{run}-{i}",
            task_queue=mode.task_queue,
        )

    handles = await gather_limited(50, start, range(count))
    pending = await approver.wait_pending(f"Cap {run}-", count, timeout=3600)
    all_pending = time.monotonic() - started

    worker, server = system.process(mode.task_queue), system.process("temporal")
    worker.cpu_percent(), server.cpu_percent()
    since, rss = time.time(), []
    for _ in range(int(window)):
        await asyncio.sleep(1.0)
        rss.append(worker.memory_info().rss)
    worker_cpu, server_cpu = worker.cpu_percent(), server.cpu_percent()
    polls = await approver.token_requests_since(since)
    polls_per_second = polls / window

    decided = time.monotonic()
    await gather_limited(20, approver.approve, pending.values())
    # Results are long polls: thousands at once exceed the server's concurrent poller limit.
    outcomes = await gather_limited(100, lambda handle: handle.result(), handles)
    return {
        "pending": count,
        "seconds_until_all_pending": all_pending,
        "worker_rss_mib": max(rss) / 2**20,
        "worker_cpu_percent": worker_cpu,
        "temporal_server_cpu_percent": server_cpu,
        "token_requests_per_second": polls_per_second,
        "token_requests_limit_per_second": count / mode.interval,
        "within_limit": polls_per_second <= count / mode.interval,
        "seconds_to_complete_after_decisions": time.monotonic() - decided,
        "approved": sum(outcome.status == "approved" for outcome in outcomes),
    }


# 4. History cost -----------------------------------------------------------------------------


async def events_per_approval(client: Client, mode: Mode, sample: int = 20) -> float:
    query = (
        f"WorkflowType = 'CibaApprovalWorkflow' AND TaskQueue = '{mode.task_queue}' AND ExecutionStatus = 'Completed'"
    )
    sizes = []
    async for execution in client.list_workflows(query, limit=sample):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        sizes.append(len(history.events))
    return statistics.median(sizes)


async def long_wait_history(op: TestOP, hours: float = 24.0) -> dict[str, Any]:
    """A poll-mode approval pending `hours` at interval 5 s, on the time-skipping test server."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_tool("temporal-test-server"), data_converter=with_encryption(None, KEY)
    ) as env:
        await ensure_search_attributes(env.client)
        settings = OPSettings(issuer=op.issuer, client_id="bench-poll5", client_secret=SECRET)  # type: ignore[arg-type]
        ciba = settings.ciba_client()
        activities = CibaActivities(ciba, TokenSealer(TOKEN_KEY))
        async with Worker(
            env.client, task_queue="long", plugins=[CibaPlugin(payload_key=KEY, activities=activities.all)]
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


def machine() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def table(results: dict[str, Any]) -> str:
    """The figures as text, one section per phase that ran."""
    rule = "-" * 100
    machine_line = results["machine"]
    lines = [
        f"temporal-ciba benchmark, {machine_line['date']}, {machine_line['cpus']} CPUs, "
        f"{machine_line['memory_gib']} GiB, Temporal dev server (SQLite), worker settings "
        f"{results['worker_settings'] or 'default'}"
    ]
    if results["latency"]:
        base = results["latency"]["baseline (plain signal)"]["median"]
        lines += ["", "Decision-to-resume latency (s)      median      p95     n   median / baseline", rule]
        for name, stats in results["latency"].items():
            lines.append(
                f"{name:32} {stats['median']:8.3f} {stats['p95']:8.3f} {stats['n']:5d}   {stats['median'] / base:8.1f}x"
            )
    if results["throughput"]:
        lines += ["", "Throughput, many in flight", rule]
        for name, stats in results["throughput"].items():
            lines.append(
                f"{name:32} {stats['per_second']:8.1f} completed/s  ({stats['count']} in {stats['seconds']:.1f} s)"
            )
    if results["capacity"]:
        lines += [
            "",
            "Pending capacity, poll 5 s, one worker:  all pending after | worker RSS | worker CPU | "
            "server CPU | polls/s (limit) | approved after decisions",
            rule,
        ]
        for stats in results["capacity"]:
            lines.append(
                f"{stats['pending']:6d} pending {stats['seconds_until_all_pending']:29.0f} s "
                f"{stats['worker_rss_mib']:9.0f} MiB {stats['worker_cpu_percent']:9.0f} % "
                f"{stats['temporal_server_cpu_percent']:10.0f} % {stats['token_requests_per_second']:9.1f} "
                f"({stats['token_requests_limit_per_second']:.0f})   {stats['approved']}/{stats['pending']} in "
                f"{stats['seconds_to_complete_after_decisions']:.0f} s"
            )
    if results["history"]:
        lines += ["", "History cost", rule]
        for name, events in results["history"].get("events_per_approval", {}).items():
            lines.append(f"{name:32} {events:8.0f} events per approval")
        long = results["history"].get("long_wait")
        if long:
            lines.append(
                f"pending {long['hours']:.0f} h at interval 5 s        {long['runs']} runs, at most "
                f"{long['max_events_per_run']} events per run, {long['token_requests']} token requests"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["latency_samples"])
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.boxplot([results["latency_samples"][name] for name in names], orientation="horizontal", showfliers=True)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xscale("log")
    axis.set_xlabel("decision to resume (s, log scale)")
    axis.set_title(
        f"temporal-ciba: decision-to-resume latency ({results['machine']['date']}, {results['machine']['cpus']} CPUs)"
    )
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="ciba-bench-"))
    worker_env = {f"CIBA_{k.upper()}": str(v) for k, v in (args.worker_setting or [])}
    system = System(directory, worker_env)
    system.start()
    results: dict[str, Any] = {
        "machine": machine(),
        "worker_settings": worker_env,
        "latency": {},
        "latency_samples": {},
        "throughput": {},
        "capacity": [],
        "history": {},
    }

    def save() -> None:  # after every phase: a failure late in a long run keeps what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    try:
        client = await connect(KEY, target_host=system.server.address)
        await ensure_search_attributes(client)
        approver = Approver(system.op)
        async with Worker(
            client,
            task_queue=AGENT_QUEUE,
            workflows=[BenchAgentWorkflow, BareSignalWorkflow],
            max_concurrent_workflow_tasks=200,
        ):
            if "latency" in args.phases:
                for mode in MODES:  # warm up every worker before timing
                    await approval_latencies(client, approver, mode, 3, batch=3)
                await signal_latencies(client, 3, batch=3)
                for mode in MODES:
                    print(f"latency: {mode.name} ...", file=sys.stderr, flush=True)
                    samples = await approval_latencies(client, approver, mode, args.approvals)
                    results["latency"][mode.name] = summary(samples)
                    results["latency_samples"][mode.name] = samples
                samples = await signal_latencies(client, args.approvals)
                results["latency"]["baseline (plain signal)"] = summary(samples)
                results["latency_samples"]["baseline (plain signal)"] = samples
                save()

            if "throughput" in args.phases:
                print("throughput ...", file=sys.stderr, flush=True)
                results["throughput"]["approvals, ping"] = await approval_throughput(
                    client, approver, MODES[0], args.throughput
                )
                results["throughput"]["baseline (plain signal)"] = await signal_throughput(client, args.throughput)
                save()

            if "history" in args.phases:
                for mode in MODES:
                    results["history"].setdefault("events_per_approval", {})[mode.name] = await events_per_approval(
                        client, mode
                    )
                print("history of a 24 h wait (time-skipping server) ...", file=sys.stderr, flush=True)
                results["history"]["long_wait"] = await long_wait_history(system.op)
                save()

            if "capacity" in args.phases:
                for count in args.capacity:
                    print(f"capacity: {count} pending ...", file=sys.stderr, flush=True)
                    results["capacity"].append(
                        await pending_capacity(client, approver, system, MODES[2], count, args.window)
                    )
                    save()
    finally:
        system.stop()
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--approvals", type=int, default=100, help="approvals timed per mode (default 100)")
    parser.add_argument("--throughput", type=int, default=200, help="approvals in flight for throughput")
    parser.add_argument(
        "--capacity",
        type=lambda s: [int(n) for n in s.split(",") if n],
        default=[1000, 5000],
        help="pending counts for the capacity test, comma-separated ('' to skip)",
    )
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
    arguments = parse(sys.argv[1:])
    figures = asyncio.run(main(arguments))
    print(table(figures))
    if figures["latency_samples"]:
        plot(figures, arguments.plot)
    print(f"\nwrote {arguments.out}" + (f" and {arguments.plot}" if figures["latency_samples"] else ""))

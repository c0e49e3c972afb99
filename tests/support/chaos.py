"""The chaos run: the whole system on this machine, N approvals through a schedule of faults,
then the invariants checked and printed as a table with a JSON copy.

    bash scripts/chaos.sh [--approvals 1000] [--faults 50] [--duration 600] [--seed S]

It starts, as separate processes, the Temporal dev server (its state in a database file), four
payment-agent workers (two in poll mode, two in ping mode, each pair on its own task queue, with
a quorum policy file), two workers of the agent frameworks (tests.support.chaos_agents, poll
mode) and two more of that program in push mode, two callback replicas, the oidc-provider OP
(with a third account, carol), the example payment API and a PostgreSQL server holding the
decision records. In this process run the push OP (tests.support.push_op; oidc-provider has no
push mode) and four small TCP proxies: one in front of each OP (every client reaches the OPs
through them, so they can be made unreachable), one spreading the OPs' pings and pushes over
the two callback replicas, and one between the callbacks and Temporal, which delays and drops
their connections.

The approvals are mixed over the kinds (KINDS): the payment agent in poll mode (the approval in
a child workflow), ping mode (child) and ping mode inline (the approval awaited in the agent
itself); the payment agent asking a two-of-three quorum (alice, bob, carol; a denial ends it)
in poll and in ping mode; the OpenAI Agents SDK maintenance bot and the PydanticAI payment
agent, each with one gated tool and its offline scripted model; and in push mode a bare
approval and the maintenance bot. A simulated approver answers each at random after up to
three seconds: approve, deny, approve as another person (the agent expects "alice"; "bob"
answers), or not at all until the request expires; in a quorum each approver decides on their
own. Beside them the faults run at random times (more than one may be under way at once):
SIGKILL of a worker, of a callback replica, of the dev server (restarted on the same database
file), of PostgreSQL (restarted on its data); the OPs unreachable for a while; the OP answering
its token endpoint with 503 and Retry-After for a while; delays and dropped connections between
the callbacks and Temporal.

At the end it checks (tests.support.chaos_check) and exits 1 if any invariant broke: every approved
payment made exactly once per the payment API's ledger and no other made; every approved tool
call run exactly once per the tool ledger and no other run; every approval ended, as decided;
every quorum ended as its approvers' decisions and its rule say; one decision record per
outcome (per approver's approval in a quorum), and `temporal-ciba audit verify` passes on
`audit export`; the OP never answered slow_down nor saw a token request sooner than the
interval (or Retry-After) for its auth_req_id; the push OP's token endpoint never called; no
secret in any log or raw history; and how long after the last fault everything had settled.
The run's directory (logs, export, results.json) is kept and named at the end.

It lives beside the test suite's launchers, which it reuses: run it from the repository's root
with the test extras installed, as scripts/chaos.sh does (`python -m tests.support.chaos`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trustme
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, ApprovalWorkflowInput
from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._programs.connect import connect
from temporal_ciba._search_attributes import ensure_search_attributes
from temporal_ciba._workflow import CibaApprovalWorkflow
from temporal_ciba_examples.openai_agents.maintenance import TOOL, MaintenanceBotWorkflow, MaintenanceInput
from temporal_ciba_examples.payment_agent.models import PaymentAction, PaymentAgentInput
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from temporal_ciba_examples.pydantic_ai_payment.run import approval_id
from temporal_ciba_examples.pydantic_ai_payment.workflows import (
    PayerDeps,
    PydanticAIPaymentAgentWorkflow,
    PydanticAIPaymentInput,
)
from temporal_ciba_examples.shared.scripted_model import ScriptedCall
from temporal_ciba_examples.shared.tool_agent import ToolAgentResult
from temporal_ciba_examples.shared.tool_ledger import ToolLedger
from tests.support.chaos_agents import agent_plugins
from tests.support.chaos_check import (
    QUORUM_APPROVERS,
    QUORUM_NEEDED,
    Agent,
    as_json,
    check_ended,
    check_ledger,
    check_outcomes,
    check_push_never_polled,
    check_quorums,
    check_records,
    check_secrets,
    check_settled,
    check_token_requests,
    check_tool_ledger,
    table,
)
from tests.support.op import TestOP, run_test_op
from tests.support.postgres import PostgresServer
from tests.support.push_op import PushOP
from tests.support.stack import (
    ACCOUNTS,
    AGENT_CLIENT,
    OPERATOR_TOKEN,
    PAYLOAD_KEY,
    PING_CLIENT,
    SECRET,
    TOKEN_KEY,
    TlsFiles,
    clean_env,
    cli_command,
    op_config,
    run_payment_api,
    wait_until_serving,
)
from tests.support.temporal import DevServer, free_port
from tests.support.worker_process import WorkerProcess

KINDS = (
    "poll-child",
    "ping-child",
    "ping-inline",
    "poll-quorum",
    "ping-quorum",
    "openai-tool",
    "pydantic-tool",
    "push-child",
    "push-tool",
)
DECISIONS = {"approve": 0.5, "deny": 0.2, "wrong_person": 0.15, "no_answer": 0.15}
# The maintenance bot's tool approval names no expected subject: whoever answers approves, so
# its approver never plays the wrong person.
TOOL_DECISIONS = {"approve": 0.55, "deny": 0.25, "no_answer": 0.2}
# The quorum of the quorum kinds: alice (the agent's owner, whom it pins), bob and carol; two
# distinct people, a denial ends it. Only the quorum kinds ask the policy (use_policy).
POLICY = f"""
[roles]
treasury = "bob"
audit = "carol"

[[rules]]
name = "chaos-quorum"
action = "payment_initiation"
approval = "quorum"
approvers = ["owner", "treasury", "audit"]
quorum = {QUORUM_NEEDED}
on_denial = "end"
reason = "every payment of the chaos run's quorum kinds needs two of owner, treasury and audit"
"""
ACCOUNTS_WITH_CAROL = {**ACCOUNTS, "carol": {"email": "carol@example.com"}}
# Which task queue runs a kind (the workers' CIBA_TASK_QUEUE).
QUEUES = {
    "poll": "chaos-poll",
    "ping": "chaos-ping",
    "openai": "chaos-agents",
    "pydantic": "chaos-agents",
    "push": "chaos-push",
}
PUSH_CLIENT = "push-client"
FAULTS = ("worker_kill", "callback_kill", "server_kill", "postgres_kill", "op_down", "op_503", "callback_link")
ACK_INTERVAL = 1  # seconds: the OP's acknowledgement interval (tests.support.stack.op_config)


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Proxies ---------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on a loopback port: to its upstreams in turn (the next one when one refuses),
    with faults: down (connections refused, open ones cut), a delay on every chunk, and a chance
    of cutting a connection at each chunk."""

    def __init__(self, name: str, upstreams: list[int]) -> None:
        self.name = name
        self.port = free_port()
        self.upstreams = upstreams
        self.delay = 0.0
        self.drop = 0.0
        self.turn = 0
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.WriteTransport] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.cut()

    def cut(self) -> None:
        for transport in list(self.open):
            transport.abort()
        self.open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for attempt in range(len(self.upstreams)):
            port = self.upstreams[(self.turn + attempt) % len(self.upstreams)]
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                break
            except (OSError, TimeoutError):
                continue
        self.turn += 1
        if upstream is None:
            writer.transport.abort()
            return
        up_reader, up_writer = upstream
        pair = [writer.transport, up_writer.transport]
        self.open.update(pair)
        with contextlib.suppress(asyncio.CancelledError):  # the run ending with connections open
            await asyncio.gather(self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: list[Any]) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(random.uniform(0, self.delay))
                if self.drop and random.random() < self.drop:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            for transport in pair:
                transport.abort()
                self.open.discard(transport)


# Processes -------------------------------------------------------------------------------------


@dataclass
class Service:
    """A process started again, on the same port and arguments, after it is killed."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health: str | None = None
    verify: Any = True
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it serves; again, as a supervisor would, when it exits first
        (the callback exits when it cannot reach Temporal as it starts, as through a cut link)."""
        deadline = time.monotonic() + 60
        while True:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT
            )
            if not self.health:
                return
            try:
                wait_until_serving(self.health, self.process, self.log_path, verify=self.verify)
                return
            except RuntimeError:
                self.kill()
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Postgres(PostgresServer):
    """The decision-record store's server, which a fault kills (SIGKILL) and starts again on its data."""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def restart(self) -> None:
        log_file = (self.root / "postgres.log").open("ab")
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1"]
        argv += ["-k", str(self.data), "-c", "fsync=off"]
        deadline = time.monotonic() + 60
        while True:
            # The killed server's backends leave when they notice it gone; until then a new one refuses to start.
            self.process = subprocess.Popen(self._as_server_user(argv), stdout=log_file, stderr=subprocess.STDOUT)
            ready_by = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < ready_by:
                ready = subprocess.run(
                    [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
                )
                if ready.returncode == 0:
                    return
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not restart; see {self.root / 'postgres.log'}")
            if self.process.poll() is None:
                self.process.kill()
            time.sleep(0.5)


def make_tls(directory: Path) -> TlsFiles:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    issued.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return files


# The run ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    target: str
    started: float
    ended: float | None = None
    error: str | None = None


@dataclass
class Run:
    args: argparse.Namespace
    directory: Path
    server: DevServer
    op: TestOP
    op_proxy: Proxy
    push_op: PushOP
    push_proxy: Proxy
    ping_proxy: Proxy
    temporal_proxy: Proxy
    postgres: Postgres
    dsn: str
    workers: list[WorkerProcess]
    callbacks: list[Service]
    payment_api: str
    client: Client
    agents_client: Client
    tool_ledger: ToolLedger
    agents: dict[str, Agent] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    decided: dict[str, str] = field(default_factory=dict)  # auth_req_id -> decision made
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())


async def retrying(what: Callable[[], Awaitable[Any]], *, until: float) -> Any:
    """`what()`, again after a transient failure (the server down, a connection cut) until `until`."""
    while True:
        try:
            return await what()
        except (RPCError, httpx.HTTPError, OSError):
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.5)


def payment_action(index: int) -> PaymentAction:
    return PaymentAction(
        amount=f"{10 + index % 90}.{index % 100:02d}",
        currency="EUR",
        creditor_name=f"Chaos {index:05d}",
        creditor_iban="DE02 1001 0010 9307 1186 03",
        reference=f"CHAOS-{index:05d}",
    )


async def run_agent(run: Run, index: int, start_at: float, until: float) -> None:
    agent = list(run.agents.values())[index]
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    task_queue = QUEUES[agent.kind.split("-")[0]]
    client = run.agents_client if agent.ledger == "tools" or agent.kind == "pydantic-tool" else run.client
    workflow: Any
    if agent.kind == "push-child":  # the approval alone, as a workflow of its own
        workflow = CibaApprovalWorkflow.run
        request = ApprovalRequest(
            login_hint="alice",
            binding_message=f"Approve chaos-{index:05d} by push",
            expected_subject="alice",
            requested_expiry=run.args.expiry,
        )
        agent_input: Any = ApprovalWorkflowInput(request=request)
    elif agent.kind in ("openai-tool", "push-tool"):
        change = {
            "system": f"chaos-{index:05d}",
            "environment": "production",
            "change": f"raise max_connections to {100 + index}",
            "window_start": "2026-11-29T02:00:00Z",
            "window_end": "2026-11-29T03:00:00Z",
        }
        workflow = MaintenanceBotWorkflow.run
        agent_input = MaintenanceInput(
            request="apply the change",
            tool_calls=[ScriptedCall(name=TOOL, arguments=change)],
            approver="alice",
            requested_expiry=run.args.expiry,
        )
    elif agent.kind == "pydantic-tool":
        workflow = PydanticAIPaymentAgentWorkflow.run
        agent_input = PydanticAIPaymentInput(
            action=payment_action(index),
            deps=PayerDeps(approver="alice", expected_subject="alice", requested_expiry=run.args.expiry),
        )
    else:
        workflow = PaymentAgentWorkflow.run
        agent_input = PaymentAgentInput(
            action=payment_action(index),
            approver="alice",
            expected_subject="alice",
            requested_expiry=run.args.expiry,
            inline=agent.kind == "ping-inline",
            use_policy=bool(agent.votes),
        )

    async def start() -> WorkflowHandle:
        try:
            return await client.start_workflow(workflow, agent_input, id=agent.workflow_id, task_queue=task_queue)
        except WorkflowAlreadyStartedError:  # started, and the answer lost to a fault
            return client.get_workflow_handle_for(workflow, agent.workflow_id)

    handle = await retrying(start, until=until)

    async def result() -> Any:
        return await handle.result()

    try:
        outcome = await retrying(result, until=until)
        if agent.kind == "pydantic-tool":  # the agent answers in words; its approval holds the outcome
            approval = client.get_workflow_handle(
                approval_id(agent.workflow_id, payment_action(index)), result_type=ApprovalOutcome
            )
            approved = await retrying(lambda: approval.result(), until=until)
            paid = re.search(r"payment id (\S+)", outcome.answer)
            agent.status, agent.error = approved.status, approved.error
            agent.payment_id = paid.group(1) if paid and approved.status == "approved" else None
        elif agent.kind == "push-child":
            agent.status, agent.error = outcome.status, outcome.error
        elif agent.kind in ("openai-tool", "push-tool"):
            tool_result: ToolAgentResult = outcome
            [(_, approved)] = tool_result.outcomes.items()
            agent.status, agent.error = approved.status, approved.error
        else:
            agent.status, agent.error = outcome.outcome.status, outcome.outcome.error
            agent.payment_id = outcome.receipt.payment_id if outcome.receipt else None
            agent.claims = [claim.model_dump(mode="json") for claim in outcome.outcome.approvers or []]
    except WorkflowFailureError as error:
        agent.status, agent.closed = f"workflow failed: {error.cause}", True
        return
    except (RPCError, httpx.HTTPError, OSError) as error:
        log(f"{agent.workflow_id}: no result: {error}")
        return
    except ValueError as error:  # not one outcome: the tool agent made other calls than scripted
        agent.status, agent.closed = f"unexpected result: {error}", True
        return
    agent.closed = True


async def approver(run: Run, stop: asyncio.Event) -> None:
    """The people at their phones: each pending request answered as its agent's decision says
    (a quorum's: as that approver's own decision says), after up to three seconds; every request
    of an agent's approver alike (a retried backchannel request shows on the phone twice)."""
    by_index = list(run.agents.values())
    direct = run.op.issuer
    seen: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as http:

        async def decide(auth_req_id: str, decision: str, account: str) -> None:
            await asyncio.sleep(random.uniform(0.1, 3.0))
            # Someone else answers: bob for alice (whom the agents pin), alice for anyone else.
            other = "bob" if account == "alice" else "alice"
            body = {"as_account": other} if decision == "wrong_person" else {}
            verb = "deny" if decision == "deny" else "approve"
            try:
                response = await http.post(f"{direct}/admin/requests/{auth_req_id}/{verb}", json=body)
                run.decided[auth_req_id] = f"{decision}: {response.status_code}"
            except httpx.HTTPError as error:
                run.decided[auth_req_id] = f"{decision}: {error!r}"

        decisions: list[asyncio.Task[None]] = []
        while not stop.is_set():
            try:
                pending = (await http.get(f"{direct}/admin/requests", params={"status": "pending"})).json()
            except httpx.HTTPError:
                pending = []
            for request in pending:
                auth_req_id = request["auth_req_id"]
                match = re.search(r"(?:of Chaos |Change chaos-)(\d+)", request.get("binding_message") or "")
                if auth_req_id in seen or match is None:
                    continue
                seen.add(auth_req_id)
                agent = by_index[int(match.group(1))]
                account = str(request.get("account"))
                decision = agent.votes.get(account, "no_answer") if agent.votes else agent.decision
                if decision != "no_answer":
                    decisions.append(asyncio.create_task(decide(auth_req_id, decision, account)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        await asyncio.gather(*decisions)


async def push_approver(run: Run, stop: asyncio.Event) -> None:
    """The people at their phones for the push OP: each pending request decided as its agent's
    decision says after up to three seconds, and pushed (the OP retrying its push until the
    callback takes it or the request expires)."""
    by_index = list(run.agents.values())
    seen: set[str] = set()

    async def decide(auth_req_id: str, decision: str) -> None:
        await asyncio.sleep(random.uniform(0.1, 3.0))
        sub = "bob" if decision == "wrong_person" else None
        status = await run.push_op.deliver(auth_req_id, deny=decision == "deny", sub=sub)
        run.decided[auth_req_id] = f"{decision}: {status}"

    decisions: list[asyncio.Task[None]] = []
    while not stop.is_set():
        for request in run.push_op.pending():
            auth_req_id = request["auth_req_id"]
            match = re.search(r"chaos-(\d+)", request.get("binding_message") or "")
            if auth_req_id in seen or match is None:
                continue
            seen.add(auth_req_id)
            decision = by_index[int(match.group(1))].decision
            if decision != "no_answer":
                decisions.append(asyncio.create_task(decide(auth_req_id, decision)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    await asyncio.gather(*decisions)


async def in_thread(function: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(function)


async def inject(run: Run, kind: str) -> Fault:
    """One fault: break something, wait a while, mend it."""
    a = run.args
    if kind == "worker_kill":
        index = random.randrange(len(run.workers))
        fault = Fault(kind, f"worker {index}", time.monotonic())
        async with run.lock(f"worker {index}"):
            await in_thread(run.workers[index].kill)
            await asyncio.sleep(random.uniform(0.5, 3))
            await in_thread(run.workers[index].start)
    elif kind == "callback_kill":
        index = random.randrange(len(run.callbacks))
        fault = Fault(kind, f"callback {index}", time.monotonic())
        async with run.lock(f"callback {index}"):
            await in_thread(run.callbacks[index].kill)
            await asyncio.sleep(random.uniform(0.5, 3))
            await in_thread(run.callbacks[index].start)
    elif kind == "server_kill":
        fault = Fault(kind, "temporal dev server", time.monotonic())
        async with run.lock("server"):
            await in_thread(lambda: run.server.stop(kill=True))
            await asyncio.sleep(random.uniform(0.5, 2))
            await in_thread(run.server.start)
    elif kind == "postgres_kill":
        fault = Fault(kind, "postgresql", time.monotonic())
        async with run.lock("postgres"):
            await in_thread(run.postgres.kill)
            await asyncio.sleep(random.uniform(0.5, 3))
            await in_thread(run.postgres.restart)
    elif kind == "op_down":
        fault = Fault(kind, "op and push op (unreachable)", time.monotonic())
        async with run.lock("op proxy"):
            await run.op_proxy.down()
            await run.push_proxy.down()
            await asyncio.sleep(random.uniform(a.window / 2, a.window))
            await run.op_proxy.up()
            await run.push_proxy.up()
    elif kind == "op_503":
        fault = Fault(kind, "op token endpoint (503, Retry-After: 2)", time.monotonic())
        async with run.lock("op faults"):
            faults = [{"type": "unavailable", "remaining": 1_000_000, "retry_after": 2}]
            await in_thread(lambda: run.op.set_faults(*faults))
            await asyncio.sleep(random.uniform(a.window / 2, a.window))
            await in_thread(run.op.set_faults)
    elif kind == "callback_link":
        fault = Fault(kind, "callbacks <-> temporal (delays, drops)", time.monotonic())
        async with run.lock("temporal proxy"):
            run.temporal_proxy.cut()
            run.temporal_proxy.delay, run.temporal_proxy.drop = 0.5, 0.02
            await asyncio.sleep(random.uniform(a.window / 2, a.window))
            run.temporal_proxy.delay, run.temporal_proxy.drop = 0.0, 0.0
    else:
        raise ValueError(kind)
    fault.ended = time.monotonic()
    log(f"fault {kind} on {fault.target}: {fault.ended - fault.started:.1f} s")
    return fault


async def fault_schedule(run: Run, begin: float) -> None:
    a = run.args
    kinds = [FAULTS[i % len(FAULTS)] for i in range(a.faults)]
    random.shuffle(kinds)
    # Over the same span as the approvals' starts, so approvals are in flight at the last fault.
    times = sorted(random.uniform(0.05 * a.duration, 0.7 * a.duration) for _ in kinds)

    async def one(kind: str, at: float) -> None:
        await asyncio.sleep(max(0.0, begin + at - time.monotonic()))
        try:
            run.faults.append(await inject(run, kind))
        except Exception as error:  # a fault that could not be mended is a finding of its own
            run.faults.append(Fault(kind, "?", begin + at, time.monotonic(), repr(error)))
            log(f"fault {kind} failed: {error!r}")

    await asyncio.gather(*(one(kind, at) for kind, at in zip(kinds, times, strict=True)))


# Collecting and checking --------------------------------------------------------------------------


def secrets_to_find(op: TestOP, push_op: PushOP) -> dict[str, str]:
    """Every secret of the run, named: the keys, the client secret, every token either OP issued."""
    found = {"client secret": SECRET, "payload key": PAYLOAD_KEY, "token key": TOKEN_KEY}
    found["operator token"] = OPERATOR_TOKEN
    for auth_req_id, body in {**op.issued(), **push_op.issued}.items():
        for name in ("access_token", "refresh_token", "id_token"):
            if isinstance(body, dict) and isinstance(body.get(name), str):
                found[f"{name} of {auth_req_id[:8]}"] = body[name]
    return found


async def scan_secrets(run: Run) -> tuple[dict[str, list[str]], str]:
    """Where a secret shows: every log of the run's directory, and every workflow's raw history
    (its events as stored: the protobuf bytes, payloads as they are, not decoded)."""
    wanted = {name: value.encode() for name, value in secrets_to_find(run.op, run.push_op).items()}
    found: dict[str, list[str]] = {}
    logs = [path for path in run.directory.rglob("*.log") if path.is_file()]
    logs += [run.op.log_path, run.postgres.root / "postgres.log"]
    for path in logs:
        data = path.read_bytes() if path.exists() else b""
        found[str(path)] = [name for name, value in wanted.items() if value in data]
    raw = await Client.connect(run.server.address)  # no codec: what the server stores
    histories = 0
    async for execution in raw.list_workflows():
        history = await raw.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        data = b"".join(event.SerializeToString() for event in history.events)
        found[f"history {execution.id}"] = [name for name, value in wanted.items() if value in data]
        histories += 1
    return found, f"{len(wanted)} secrets; {len(logs)} logs, {histories} histories"


async def audit(run: Run) -> tuple[list[dict[str, Any]], int, str]:
    """`temporal-ciba audit export` of the record store, and `audit verify` of the export."""
    env = clean_env(CIBA_RECORD_DSN=run.dsn, CIBA_TOKEN_KEY=TOKEN_KEY)
    key = run.directory / "log-key.txt"
    export = run.directory / "records.jsonl"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_command(*args), env=env, capture_output=True, text=True, timeout=300, check=False)

    key.write_text((await in_thread(lambda: cli("audit", "log-key"))).stdout)
    exported = await in_thread(lambda: cli("audit", "export", "--output", str(export)))
    if exported.returncode != 0:
        return [], exported.returncode, "export: " + exported.stderr
    verified = await in_thread(lambda: cli("audit", "verify", str(export), "--log-key", str(key)))
    (run.directory / "verify.txt").write_text(verified.stdout + verified.stderr)
    said = [line for line in (verified.stdout + verified.stderr).splitlines() if " INFO " not in line]
    lines = export.read_text().splitlines()[1:]
    return [json.loads(line) for line in lines if line.strip()], verified.returncode, "\n".join(said)


async def collect(run: Run, last_fault_end: float | None) -> list[Any]:
    checks = []
    ledger = httpx.get(run.payment_api + "/payments", headers={"authorization": f"Bearer {OPERATOR_TOKEN}"}, timeout=30)
    ledger.raise_for_status()
    checks.append(check_ledger(run.agents, ledger.json()))
    entries = [entry.model_dump(mode="json") for entry in run.tool_ledger.entries()]
    checks.append(check_tool_ledger(run.agents, entries))
    checks.append(check_outcomes(run.agents))
    checks.append(check_quorums(run.agents))
    running = [execution.id async for execution in run.client.list_workflows("ExecutionStatus = 'Running'")]
    checks.append(check_ended(run.agents, running))
    records, verify_exit, verify_output = await audit(run)
    checks.append(check_records(run.agents, records, verify_exit, verify_output))
    token_requests = await in_thread(run.op.token_requests)
    checks.append(check_token_requests(token_requests, ACK_INTERVAL))
    checks.append(check_push_never_polled(run.push_op.token_endpoint_calls, len(run.push_op.issued)))
    found, scanned = await scan_secrets(run)
    checks.append(check_secrets(found, scanned))
    closes = [
        execution.close_time.timestamp()
        async for execution in run.client.list_workflows()
        if execution.close_time is not None
    ]
    # Monotonic fault times to wall-clock: the offset now.
    offset = time.time() - time.monotonic()
    settled_at = max(closes) if closes else None
    fault_end_wall = None if last_fault_end is None else last_fault_end + offset
    checks.append(check_settled(fault_end_wall, settled_at, run.args.settle_limit))
    return checks


# Starting everything ---------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    directory = Path(args.directory or tempfile.mkdtemp(prefix="ciba-chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    log(f"run directory {directory}; seed {args.seed}")
    began = time.monotonic()
    with ExitStack() as stack:
        tls = make_tls(directory)
        server = DevServer(directory)
        await in_thread(server.start)
        stack.callback(server.stop)
        postgres = Postgres()
        await in_thread(postgres.start)
        stack.callback(postgres.stop)
        dsn = await in_thread(postgres.new_database)

        temporal_proxy = Proxy("callbacks -> temporal", [server.port])
        await temporal_proxy.up()
        callback_ports = [free_port(), free_port()]
        ping_proxy = Proxy("op -> callbacks", callback_ports)
        await ping_proxy.up()
        op_port = free_port()
        op_proxy = Proxy("clients -> op", [op_port])
        await op_proxy.up()
        issuer = f"http://127.0.0.1:{op_proxy.port}"
        config = op_config(
            {}, ping_endpoint=f"https://127.0.0.1:{ping_proxy.port}/ciba/notify", accounts=ACCOUNTS_WITH_CAROL
        )
        # ID tokens bound to their request (the auth_req_id claim, at_hash): without, one person's
        # two approvals in one second get byte-identical ID tokens, which `audit verify` refuses as
        # two records of one decision (docs/operations/chaos.md; --unbound-id-tokens shows it).
        config["idTokenBindingClaims"] = not args.unbound_id_tokens
        op = stack.enter_context(
            run_test_op({**config, "port": op_port, "issuer": issuer}, env={"NODE_EXTRA_CA_CERTS": str(tls.ca)})
        )
        # The approver and the checks talk to the OP itself; everyone else through the proxy.
        op = TestOP(issuer=f"http://127.0.0.1:{op_port}", process=op.process, log_path=op.log_path)
        # Push mode (CIBA §10.3), which oidc-provider does not implement: the tests' own push OP,
        # in this process, reached through a proxy of its own, pushing to the callbacks' proxy.
        push_port = free_port()
        push_proxy = Proxy("clients -> push op", [push_port])
        await push_proxy.up()
        push_op = PushOP(
            client_id=PUSH_CLIENT,
            client_secret=SECRET,
            notification_endpoint=f"https://127.0.0.1:{ping_proxy.port}/ciba/notify",
            ca_path=str(tls.ca),
            port=push_port,
            issuer=f"http://127.0.0.1:{push_proxy.port}",
        )
        await push_op.start()
        payment_dir = directory / "payment-api"
        payment_dir.mkdir()
        payment_api = stack.enter_context(run_payment_api(TestOP(issuer, op.process, op.log_path), payment_dir))

        callbacks = []
        for index, port in enumerate(callback_ports):
            env = clean_env(
                TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_proxy.port}",
                CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
                CIBA_TOKEN_KEY=TOKEN_KEY,
                CIBA_CALLBACK_PORT=str(port),
                CIBA_CALLBACK_TLS_CERT=str(tls.cert),
                CIBA_CALLBACK_TLS_KEY=str(tls.key),
            )
            verify = __import__("ssl").create_default_context(cafile=str(tls.ca))
            service = Service(
                f"callback {index}",
                cli_command("callback"),
                env,
                directory / f"callback-{index}.log",
                f"https://127.0.0.1:{port}/healthz",
                verify,
            )
            await in_thread(service.start)
            stack.callback(service.stop)
            callbacks.append(service)

        policy = directory / "policy.toml"
        policy.write_text(POLICY)
        tool_ledger = ToolLedger(directory / "tool-ledger.jsonl")
        workers = []
        for index, mode in enumerate(("poll", "poll", "ping", "ping", "agents", "agents", "push", "push")):
            program = None if mode in ("poll", "ping") else [sys.executable, "-m", "tests.support.chaos_agents"]
            client_id = {"ping": PING_CLIENT, "push": PUSH_CLIENT}.get(mode, AGENT_CLIENT)
            env = clean_env(
                TEMPORAL_ADDRESS=server.address,
                CIBA_ISSUER=push_op.issuer if mode == "push" else issuer,
                CIBA_CLIENT_ID=client_id,
                CIBA_CLIENT_SECRET=SECRET,
                CIBA_DELIVERY_MODE=mode if mode in ("ping", "push") else "poll",
                CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
                CIBA_TOKEN_KEY=TOKEN_KEY,
                CIBA_TASK_QUEUE=f"chaos-{mode}",
                CIBA_PAYMENT_API_URL=payment_api,
                CIBA_RECORD_DSN=dsn,
                CIBA_RECORD_DB=str(directory / "unused-records.sqlite3"),
                CIBA_POLICY_FILE=str(policy),
                CHAOS_TOOL_LEDGER=str(tool_ledger.path),
            )
            worker = WorkerProcess(env, directory / f"worker-{index}-{mode}.log", program)
            worker.start()
            stack.callback(worker.stop)
            workers.append(worker)

        client = await connect(base64.b64decode(PAYLOAD_KEY), target_host=server.address)
        await ensure_search_attributes(client)
        ciba_codec = CibaPlugin(payload_key=base64.b64decode(PAYLOAD_KEY))
        agents_client = await Client.connect(server.address, plugins=agent_plugins(ciba_codec))
        run = Run(
            args,
            directory,
            server,
            op,
            op_proxy,
            push_op,
            push_proxy,
            ping_proxy,
            temporal_proxy,
            postgres,
            dsn,
            workers,
            callbacks,
            payment_api,
            client,
            agents_client,
            tool_ledger,
        )
        tag = format(args.seed, "x")

        def draw(decisions: dict[str, float]) -> str:
            return random.choices(list(decisions), weights=list(decisions.values()))[0]

        for index in range(args.approvals):
            workflow_id = f"chaos-{tag}-{index:05d}"
            kind = KINDS[index % len(KINDS)]
            if kind.endswith("-quorum"):
                votes = {approver: draw(DECISIONS) for approver in QUORUM_APPROVERS}
                agent = Agent(workflow_id, kind, "quorum", votes=votes)
            elif kind in ("openai-tool", "push-tool"):
                agent = Agent(workflow_id, kind, draw(TOOL_DECISIONS), ledger="tools")
            elif kind == "push-child":
                agent = Agent(workflow_id, kind, draw(DECISIONS), ledger="none")
            else:
                agent = Agent(workflow_id, kind, draw(DECISIONS))
            run.agents[workflow_id] = agent
        log(f"system up in {time.monotonic() - began:.0f} s; {args.approvals} approvals, {args.faults} faults")

        begin = time.monotonic()
        until = begin + args.duration + args.expiry + args.settle_limit + 60
        starts = sorted(random.uniform(0, 0.7 * args.duration) for _ in range(args.approvals))
        stop_approver = asyncio.Event()
        approving = asyncio.create_task(approver(run, stop_approver))
        pushing = asyncio.create_task(push_approver(run, stop_approver))
        agents = asyncio.gather(*(run_agent(run, i, begin + at, until) for i, at in enumerate(starts)))
        await fault_schedule(run, begin)
        last_fault_end = max((fault.ended or fault.started for fault in run.faults), default=None)
        log("faults over; waiting for the approvals to settle")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agents, max(1.0, until - time.monotonic()))
        stop_approver.set()
        await approving
        await pushing

        checks = await collect(run, last_fault_end)
        # For a post-mortem: what the OP saw and what each agent decided and got.
        seen = {"requests": op.requests(), "token_requests": op.token_requests(), "pings": op.pings()}
        (directory / "op.json").write_text(json.dumps(seen, indent=1))
        (directory / "agents.json").write_text(json.dumps([a.__dict__ for a in run.agents.values()], indent=1))
        (directory / "decided.json").write_text(json.dumps(run.decided, indent=1))
        pushed = {key: {k: v for k, v in r.items() if k != "bearer"} for key, r in push_op.requests.items()}
        (directory / "push-op.json").write_text(json.dumps(pushed, indent=1))
        for proxy in (op_proxy, push_proxy, ping_proxy, temporal_proxy):
            await proxy.down()
        await push_op.stop()
        load = os.getloadavg()
        figures = {
            "approvals": args.approvals,
            "faults": [
                fault.__dict__ | {"started": fault.started - begin, "ended": (fault.ended or 0) - begin}
                for fault in run.faults
            ],
            "seed": args.seed,
            "duration_s": round(time.monotonic() - began, 1),
            "loadavg": load,
            "cpus": os.cpu_count(),
            "kinds": {kind: sum(a.kind == kind for a in run.agents.values()) for kind in KINDS},
            "directory": str(directory),
        }
        print(table(checks))
        fault_counts: dict[str, int] = {}
        for fault in run.faults:
            fault_counts[fault.kind] = fault_counts.get(fault.kind, 0) + 1
        failed_faults = [fault for fault in run.faults if fault.error]
        print(
            f"\n{args.approvals} approvals, {len(run.faults)} faults {fault_counts}"
            f"{f', {len(failed_faults)} not mended' if failed_faults else ''}; "
            f"{figures['duration_s']} s in all; load average {load[0]:.1f} on {os.cpu_count()} cores"
        )
        results = as_json(checks, **figures)
        (directory / "results.json").write_text(results)
        if args.json:
            Path(args.json).write_text(results)
        print(f"run directory (logs, export, results.json): {directory}")
        ok = all(check.ok for check in checks) and not failed_faults
    if ok and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--approvals", type=int, default=1000, help="how many approvals (default 1000)")
    parser.add_argument("--faults", type=int, default=50, help="how many faults (default 50)")
    parser.add_argument(
        "--duration", type=float, default=600, help="seconds over which approvals start and faults happen"
    )
    parser.add_argument("--expiry", type=int, default=60, help="requested_expiry of every approval, seconds")
    parser.add_argument("--window", type=float, default=8, help="longest outage of an OP or link fault, seconds")
    parser.add_argument(
        "--settle-limit", type=float, default=120, help="seconds after the last fault by which all must settle"
    )
    parser.add_argument(
        "--unbound-id-tokens",
        action="store_true",
        help="the OP's ID tokens as oidc-provider issues them, without the auth_req_id claim",
    )
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--directory", help="the run's directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory when every check passes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))

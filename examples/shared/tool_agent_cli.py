"""Run an example tool agent from the command line: a worker in this process (the agent, its
tool, the approvals, the offline model), the agent's workflow, and what came of it.

Configuration as for `temporal-ciba worker` (docs/operations/configuration.md): the CIBA_* settings of
the OP and the keys, and TEMPORAL_ADDRESS. Exit status: 0 when every approval asked for was
granted, 1 otherwise, 2 for a configuration error. Run it again with the same --workflow-id to
resume an agent whose worker died (or to print the result of one that finished).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import set_tracing_disabled
from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from temporal_ciba import ConfigError, OPSettings, TokenKeySettings, load_settings
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.shared.scripted_model import ScriptedModel
from temporal_ciba_examples.shared.tool_agent import ToolAgentInput, ToolAgentResult
from temporal_ciba_examples.shared.tool_agent_worker import connect_agents, tool_agent_worker
from temporal_ciba_examples.shared.tool_ledger import ToolLedger

DEFAULT_TASK_QUEUE = "ciba-tool-agents"


@dataclass(frozen=True)
class ToolAgentProgram:
    name: str
    workflow: type
    run: Callable[..., Any]  # the workflow's run method
    activities: Callable[[TokenSealer, ToolLedger], Sequence[Callable[..., Any]]]


def parser(description: str) -> argparse.ArgumentParser:
    """The options every example tool agent has; each adds its tool's own."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--workflow-id", help="the agent's workflow id (default: a new one)")
    arguments.add_argument("--ledger", type=Path, default=Path("tool-ledger.jsonl"), help="where the tool records")
    arguments.add_argument("--task-queue", default=DEFAULT_TASK_QUEUE)
    return arguments


async def start_or_attach(
    client: Client, program: ToolAgentProgram, agent_input: ToolAgentInput, workflow_id: str, task_queue: str
) -> WorkflowHandle[Any, ToolAgentResult]:
    try:
        return await client.start_workflow(
            program.run,
            agent_input,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,  # running: resume waiting on it
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # finished: never act again
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id, result_type=ToolAgentResult)


def report(result: ToolAgentResult) -> int:
    for call_id, outcome in result.outcomes.items():
        who = f" by {outcome.sub}" if outcome.approved and not outcome.approvers else f": {outcome.reason}"
        print(f"Approval of {call_id}: {outcome.status}{who}")
    print(f"The model said: {result.reply}")
    return 0 if all(outcome.approved for outcome in result.outcomes.values()) else 1


async def run(program: ToolAgentProgram, agent_input: ToolAgentInput, options: argparse.Namespace) -> int:
    keys = load_settings(TokenKeySettings)
    op = load_settings(OPSettings)
    # The model is offline: no trace export to OpenAI, and no warning that there is no API key.
    set_tracing_disabled(True)
    logging.getLogger("openai.agents").setLevel(logging.ERROR)
    try:
        client = await connect_agents(keys, op, ScriptedModel())
    except RuntimeError as exc:
        raise ConfigError(f"cannot connect to Temporal: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    ledger = ToolLedger(options.ledger)
    activities = program.activities(TokenSealer(keys.token_key_bytes), ledger)
    workflow_id = options.workflow_id or f"{program.name}-{uuid.uuid4().hex[:10]}"
    async with tool_agent_worker(client, options.task_queue, [program.workflow], activities):
        handle = await start_or_attach(client, program, agent_input, workflow_id, options.task_queue)
        print(f"Agent workflow id: {handle.id}", flush=True)
        print("Waiting for the approver's decision on their device...", flush=True)
        result = await handle.result()
    return report(result)


def main(program: ToolAgentProgram, build_input: Callable[[argparse.Namespace], ToolAgentInput], options: Any) -> None:
    """Run and exit with os._exit after flushing (a short-lived client can crash at exit)."""
    try:
        agent_input = build_input(options)
        code = asyncio.run(run(program, agent_input, options))
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: {'.'.join(str(part) for part in first['loc'])}: {first['msg']}", file=sys.stderr)
        code = 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

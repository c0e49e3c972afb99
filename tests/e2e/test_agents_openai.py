"""OpenAI Agents SDK tools gated by CIBA, end to end.

The example maintenance bot and support assistant on the real dev server, the real test OP playing
the approver's phone, and the offline scripted model (built on temporalio.openai_agents.testing)
calling the tools. Tool executions are counted in the examples' ledger file, approvals in Temporal's
visibility."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.openai_agents import OpenAIAgentsPlugin
from temporalio.openai_agents.testing import TestModelProvider
from temporalio.worker import Replayer

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._settings import TokenKeySettings
from temporal_ciba.agents import refusal_for_model
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.openai_agents.maintenance import (
    TOOL,
    MaintenanceActivities,
    MaintenanceBotWorkflow,
    MaintenanceInput,
)
from temporal_ciba_examples.openai_agents.support import SupportActivities, SupportAssistantWorkflow, SupportInput
from temporal_ciba_examples.shared.scripted_model import ScriptedCall, ScriptedModel
from temporal_ciba_examples.shared.tool_agent_worker import connect_agents, tool_agent_worker
from temporal_ciba_examples.shared.tool_ledger import ToolLedger
from tests.support.flows import pending_auth_req_id
from tests.support.op import TestOP
from tests.support.openai_agent_flows import Agents, approvals_of, pending, production_change
from tests.support.openai_agents import MixedToolsWorkflow, SelfApprovedWorkflow, TamperingWorkflow, TamperInput
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, agent_settings, clean_env
from tests.support.temporal import DevServer, raw_history_bytes, wait_for

KEYS = TokenKeySettings(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)  # type: ignore[arg-type]


@pytest.fixture
async def agents(temporal_server: DevServer, op: TestOP, tmp_path: Path) -> AsyncIterator[Agents]:
    """A worker in this process with both plugins, both examples and the tampering workflow."""
    model = ScriptedModel()
    client = await connect_agents(KEYS, agent_settings(op), model, target_host=temporal_server.address)
    ledger = ToolLedger(tmp_path / "ledger.jsonl")
    sealer = TokenSealer(base64.b64decode(TOKEN_KEY))
    task_queue = f"agents-{uuid.uuid4().hex[:8]}"
    workflows = [
        MaintenanceBotWorkflow,
        SupportAssistantWorkflow,
        TamperingWorkflow,
        MixedToolsWorkflow,
        SelfApprovedWorkflow,
    ]
    tools = [
        MaintenanceActivities(sealer, ledger).apply_production_change,
        SupportActivities(sealer, ledger).reset_account,
    ]
    async with tool_agent_worker(client, task_queue, workflows, tools):
        yield Agents(client, task_queue, model, ledger)


def tool_outputs(model_input: list[dict[str, Any]]) -> list[str]:
    return [str(item["output"]) for item in model_input if item.get("type") == "function_call_output"]


async def test_approve_runs_the_tool_once_with_the_approved_arguments(agents: Agents, op: TestOP) -> None:
    change = production_change()
    agent = await agents.maintenance(change)
    [request] = await pending(op, f"Change {change['system']} in production, code ")
    [details] = request["authorization_details"]
    assert details["type"] == "production_change" and details["system"] == change["system"]
    assert details["window"] == {"start": change["window_start"], "end": change["window_end"]}
    op.approve(request["auth_req_id"])
    result = await agent.result()

    [(call_id, outcome)] = result.outcomes.items()
    assert outcome.status == "approved" and outcome.sub == "alice" and outcome.auth_req_id == request["auth_req_id"]
    [entry] = agents.ledger.entries()
    assert entry.arguments == change and entry.call_id == call_id and entry.approved_by == "alice"
    assert result.reply == f"Applied to {change['system']} (production): {change['change']}."
    assert len(await approvals_of(agents.client, agent.id)) == 1
    # Both plugins in one worker, and still nothing readable in the raw history.
    raw = await raw_history_bytes(agent)
    assert change["system"].encode() not in raw and b"max_connections" not in raw
    # The recorded history replays deterministically with the current code and both plugins.
    plugins = [
        OpenAIAgentsPlugin(model_provider=TestModelProvider(ScriptedModel())),
        CibaPlugin(payload_key=KEYS.payload_key_bytes),
    ]
    replayer = Replayer(workflows=[MaintenanceBotWorkflow], plugins=plugins)
    await replayer.replay_workflow(await agent.fetch_history())


async def test_the_two_person_rule_runs_the_change_once_two_people_approved(agents: Agents, op: TestOP) -> None:
    """With a second approver the bot's change needs alice and bob (TWO_PERSON_RULE, a quorum)."""
    change = production_change()
    agent = await agents.maintenance(change, second_approver="bob")
    requests = await pending(op, f"Change {change['system']} in production, code ", count=2)
    assert sorted(r["account"] for r in requests) == ["alice", "bob"]
    op.approve(requests[0]["auth_req_id"])

    async def one_completed() -> bool:
        children = [agents.client.get_workflow_handle(i) for i in await approvals_of(agents.client, agent.id)]
        statuses = [(await child.describe()).status for child in children]
        return statuses.count(WorkflowExecutionStatus.COMPLETED) == 1 and len(statuses) == 2

    # One approval, validated and complete, is not enough: the tool has not run.
    await wait_for(one_completed, what="the first approval to complete")
    assert agents.ledger.entries() == []
    op.approve(requests[1]["auth_req_id"])
    result = await agent.result()
    [outcome] = result.outcomes.values()
    assert outcome.status == "approved" and outcome.policy is not None
    assert outcome.policy.rule == "production-two-person" and outcome.policy.approvers == ["alice", "bob"]
    assert sorted((a.sub, a.counted) for a in outcome.approvers or []) == [("alice", True), ("bob", True)]
    [entry] = agents.ledger.entries()
    assert entry.arguments == change
    assert result.reply == f"Applied to {change['system']} (production): {change['change']}."


async def test_deny_never_runs_the_tool_and_the_model_reads_why(agents: Agents, op: TestOP) -> None:
    change = production_change()
    agent = await agents.maintenance(change)
    [request] = await pending(op, f"Change {change['system']} in production")
    op.deny(request["auth_req_id"])
    result = await agent.result()

    [outcome] = result.outcomes.values()
    assert outcome.status == "denied"
    refusal = refusal_for_model(TOOL, outcome)
    assert refusal.startswith(f"The {TOOL} call was not run: ") and "\n" not in refusal
    # The model's next turn (its input after the tool call) carries that line as the tool's output.
    [next_turn] = [turn for turn in agents.model.inputs if tool_outputs(turn)]
    assert tool_outputs(next_turn) == [refusal]
    assert result.reply == refusal
    assert agents.ledger.entries() == []


async def test_expired_approval_never_runs_the_tool(agents: Agents, op: TestOP) -> None:
    change = production_change()
    agent = await agents.maintenance(change, requested_expiry=2)
    await pending(op, f"Change {change['system']} in production")
    result = await agent.result()
    [outcome] = result.outcomes.values()
    assert outcome.status == "expired"
    assert result.reply == refusal_for_model(TOOL, outcome) and "expired" in result.reply
    assert agents.ledger.entries() == []


async def test_other_arguments_than_approved_are_refused(agents: Agents, op: TestOP) -> None:
    approved = production_change()
    executed = {**approved, "change": "drop the payments table"}
    agent_input = MaintenanceInput(request="tamper", approver="alice")
    handle = await agents.client.start_workflow(
        TamperingWorkflow.run,
        TamperInput(agent=agent_input, approved=approved, executed=executed),
        id=f"tamper-{uuid.uuid4().hex[:10]}",
        task_queue=agents.task_queue,
    )
    [request] = await pending(op, f"Change {approved['system']} in production")
    op.approve(request["auth_req_id"])
    result = await handle.result()
    assert result.approval_status == "approved"
    assert result.error_type == "GrantRefused" and result.non_retryable is True
    assert agents.ledger.entries() == []


async def test_two_equal_calls_get_two_approvals(agents: Agents, op: TestOP) -> None:
    change = production_change()
    agent = await agents.maintenance(change, change)
    requests = await pending(op, f"Change {change['system']} in production", count=2)
    for request in requests:
        op.approve(request["auth_req_id"])
    result = await agent.result()

    assert len(result.outcomes) == 2 and all(outcome.approved for outcome in result.outcomes.values())
    assert len({outcome.auth_req_id for outcome in result.outcomes.values()}) == 2
    approvals = await approvals_of(agents.client, agent.id)
    assert len(approvals) == 2 and len(set(approvals)) == 2
    entries = agents.ledger.entries()
    assert sorted(entry.call_id for entry in entries) == sorted(result.outcomes)
    assert len({entry.key for entry in entries}) == 2


async def test_when_false_asks_nobody(agents: Agents, op: TestOP) -> None:
    change = production_change(environment="staging")
    agent = await agents.maintenance(change)
    result = await agent.result()
    assert result.outcomes == {}
    assert await approvals_of(agents.client, agent.id) == []
    assert not [r for r in op.requests() if change["system"] in (r["binding_message"] or "")]
    [entry] = agents.ledger.entries()
    assert entry.arguments == change and entry.approved_by is None


async def test_support_reset_needs_the_holder_themselves(agents: Agents, op: TestOP) -> None:
    account = f"acct-{uuid.uuid4().hex[:6]}"
    agent_input = SupportInput(
        request="reset my account",
        tool_calls=[ScriptedCall(name="reset_account", arguments={"account_id": account, "send_link_by": "sms"})],
        holder="alice",
        holder_subject="alice",
    )
    agent = await agents.start(SupportAssistantWorkflow.run, agent_input, "support")
    [request] = await pending(op, f"Reset your account {account}")
    assert request["account"] == "alice" and request["authorization_details"][0]["type"] == "account_reset"
    op.approve(request["auth_req_id"], as_account="bob")  # someone else's phone answers
    result = await agent.result()
    [outcome] = result.outcomes.values()
    assert outcome.status == "rejected" and outcome.error == "sub_mismatch"
    assert result.reply == refusal_for_model("reset_account", outcome)
    assert "the approval failed validation (sub_mismatch) and was discarded" in result.reply
    assert agents.ledger.entries() == []


async def test_invalid_arguments_ask_nobody_and_the_model_reads_why(agents: Agents, op: TestOP) -> None:
    change = production_change()
    del change["window_end"]
    agent = await agents.maintenance(change)
    result = await agent.result()
    assert result.outcomes == {}
    assert result.reply == f"The {TOOL} call was not run: its arguments are invalid (window_end: Field required)."
    assert await approvals_of(agents.client, agent.id) == []
    assert agents.ledger.entries() == []


async def test_other_tools_interruptions_are_left_to_the_application(agents: Agents, op: TestOP) -> None:
    change = production_change()
    calls = [ScriptedCall(name=TOOL, arguments=change), ScriptedCall(name="note")]
    agent_input = MaintenanceInput(request="change and note", tool_calls=calls, approver="alice")
    agent = await agents.start(MixedToolsWorkflow.run, agent_input, "mixed")
    [request] = await pending(op, f"Change {change['system']} in production")
    op.approve(request["auth_req_id"])
    result = await agent.result()
    assert result.other_interruptions == ["note"] and result.approvals == 1
    assert result.reply == f"Applied to {change['system']} (production): {change['change']}. noted"
    assert len(agents.ledger.entries()) == 1
    assert len(await approvals_of(agents.client, agent.id)) == 1


async def test_a_gated_call_approved_without_ciba_is_refused(agents: Agents, op: TestOP) -> None:
    change = production_change()
    agent_input = MaintenanceInput(
        request="bypass", tool_calls=[ScriptedCall(name=TOOL, arguments=change)], approver="alice"
    )
    agent = await agents.start(SelfApprovedWorkflow.run, agent_input, "bypass")
    result = await agent.result()
    # The integration's AgentsWorkflowError ends the workflow; ours is its cause.
    assert result.error == "AgentsWorkflowError <- ToolCallNotApproved"
    assert await approvals_of(agents.client, agent.id) == []
    assert agents.ledger.entries() == []


# The examples' command lines, as docs/guides/openai-agents.md gives them ------------------------------------------


class Example:
    """`python -m temporal_ciba_examples.openai_agents.<module> ...` against the fixtures' servers."""

    def __init__(self, temporal_server: DevServer, op: TestOP, tmp_path: Path, module: str, *args: str) -> None:
        self.env = clean_env(
            TEMPORAL_ADDRESS=temporal_server.address,
            CIBA_ISSUER=op.issuer,
            CIBA_CLIENT_ID=AGENT_CLIENT,
            CIBA_CLIENT_SECRET=SECRET,
            CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
            CIBA_TOKEN_KEY=TOKEN_KEY,
        )
        self.workflow_id = f"{module}-{uuid.uuid4().hex[:10]}"
        self.ledger = ToolLedger(tmp_path / "ledger.jsonl")
        self.command = [
            sys.executable,
            "-m",
            f"temporal_ciba_examples.openai_agents.{module}",
            *args,
            "--workflow-id",
            self.workflow_id,
            "--ledger",
            str(self.ledger.path),
            "--task-queue",
            f"example-{uuid.uuid4().hex[:8]}",
        ]
        self.log = tmp_path / "example.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )

    async def exit_code(self) -> int:
        process = self.process
        assert process is not None
        await wait_for(lambda: process.poll() is not None, timeout=90, what="the example to finish")
        return process.returncode

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def examples(temporal_server: DevServer, op: TestOP, tmp_path: Path) -> Iterator[Any]:
    started: list[Example] = []

    def example(module: str, *args: str) -> Example:
        started.append(Example(temporal_server, op, tmp_path, module, *args))
        return started[-1]

    yield example
    for running in started:
        running.stop()


def maintenance_command(system: str) -> tuple[str, ...]:
    return (
        "maintenance_bot",
        "--approver",
        "alice",
        "--system",
        system,
        "--change",
        "raise max_connections to 400",
        "--window-start",
        "2026-11-29T02:00:00Z",
        "--window-end",
        "2026-11-29T03:00:00Z",
    )


async def test_maintenance_bot_survives_sigkill_while_waiting(
    examples: Any, op: TestOP, temporal_client: Client
) -> None:
    system = f"db-{uuid.uuid4().hex[:8]}"
    bot = examples(*maintenance_command(system))
    bot.start()
    [request] = await pending(op, f"Change {system} in production")
    # Killed once the approval has recorded its request: the request is a local activity, and a
    # worker killed before its workflow task completes sends it again (docs/security/threat-model.md, "Known limits").
    [approval] = await wait_for(lambda: approvals_of(temporal_client, bot.workflow_id), what="the approval")
    assert await pending_auth_req_id(temporal_client.get_workflow_handle(approval)) == request["auth_req_id"]
    bot.kill()  # the worker dies while the approval waits
    op.approve(request["auth_req_id"])
    bot.start()  # the same command: it resumes the same workflow
    assert await bot.exit_code() == 0, bot.output()

    output = bot.output()
    assert output.count(f"Agent workflow id: {bot.workflow_id}") == 2
    assert "approved by alice" in output
    assert f"The model said: Applied to {system} (production): raise max_connections to 400." in output
    assert len(bot.ledger.entries()) == 1
    assert len(await approvals_of(temporal_client, bot.workflow_id)) == 1
    assert len([r for r in op.requests() if (r["binding_message"] or "").startswith(f"Change {system} ")]) == 1


async def test_support_assistant_command_approved_then_denied(examples: Any, op: TestOP) -> None:
    account = f"acct-{uuid.uuid4().hex[:6]}"
    approved = examples("support_assistant", "--holder", "alice", "--account-id", account)
    approved.start()
    [request] = await pending(op, f"Reset your account {account}")
    op.approve(request["auth_req_id"])
    assert await approved.exit_code() == 0, approved.output()
    assert f"The model said: Account {account} reset; a link was sent by email." in approved.output()
    assert [entry.approved_by for entry in approved.ledger.entries()] == ["alice"]

    other = f"acct-{uuid.uuid4().hex[:6]}"
    denied = examples("support_assistant", "--holder", "alice", "--account-id", other)
    denied.start()
    [request] = await pending(op, f"Reset your account {other}")
    op.deny(request["auth_req_id"])
    assert await denied.exit_code() == 1, denied.output()
    assert "The model said: The reset_account call was not run: " in denied.output()
    assert [entry.arguments["account_id"] for entry in denied.ledger.entries()] == [account]

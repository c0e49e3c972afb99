"""python -m temporal_ciba_examples.openai_agents.maintenance_bot --approver alice --system payments-db ...

The maintenance bot asks for one production change; the approver decides on their device.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.openai_agents.maintenance import (
    TOOL,
    MaintenanceActivities,
    MaintenanceBotWorkflow,
    MaintenanceInput,
)
from temporal_ciba_examples.shared.scripted_model import ScriptedCall
from temporal_ciba_examples.shared.tool_agent_cli import ToolAgentProgram, main, parser
from temporal_ciba_examples.shared.tool_ledger import ToolLedger


def activities(sealer: TokenSealer, ledger: ToolLedger) -> list[Callable[..., Any]]:
    return [MaintenanceActivities(sealer, ledger).apply_production_change]


PROGRAM = ToolAgentProgram("maintenance-bot", MaintenanceBotWorkflow, MaintenanceBotWorkflow.run, activities)


def build_input(options: argparse.Namespace) -> MaintenanceInput:
    arguments = {
        "system": options.system,
        "environment": options.environment,
        "change": options.change,
        "window_start": options.window_start,
        "window_end": options.window_end,
    }
    return MaintenanceInput(
        request=f"{options.change} on {options.system} ({options.environment})",
        tool_calls=[ScriptedCall(name=TOOL, arguments=arguments)],
        approver=options.approver,
        second_approver=options.second_approver,
    )


def arguments() -> argparse.ArgumentParser:
    options = parser("The maintenance bot: a production change, once, after the approver's decision.")
    options.add_argument("--approver", required=True, help="login_hint of the on-call approver")
    options.add_argument("--second-approver", help="the two-person rule: this person must approve too")
    options.add_argument("--system", required=True)
    options.add_argument("--change", required=True)
    options.add_argument("--window-start", required=True, help="ISO 8601, e.g. 2026-11-29T02:00:00Z")
    options.add_argument("--window-end", required=True)
    options.add_argument("--environment", choices=["production", "staging"], default="production")
    return options


if __name__ == "__main__":
    main(PROGRAM, build_input, arguments().parse_args())

"""python -m temporal_ciba_examples.openai_agents.support_assistant --holder alice --account-id acct-1042

The support assistant resets an account once its holder confirmed it on their own device.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.openai_agents.support import TOOL, SupportActivities, SupportAssistantWorkflow, SupportInput
from temporal_ciba_examples.shared.scripted_model import ScriptedCall
from temporal_ciba_examples.shared.tool_agent_cli import ToolAgentProgram, main, parser
from temporal_ciba_examples.shared.tool_ledger import ToolLedger


def activities(sealer: TokenSealer, ledger: ToolLedger) -> list[Callable[..., Any]]:
    return [SupportActivities(sealer, ledger).reset_account]


PROGRAM = ToolAgentProgram("support-assistant", SupportAssistantWorkflow, SupportAssistantWorkflow.run, activities)


def build_input(options: argparse.Namespace) -> SupportInput:
    return SupportInput(
        request=f"Please reset my account {options.account_id}",
        tool_calls=[
            ScriptedCall(name=TOOL, arguments={"account_id": options.account_id, "send_link_by": options.send_link_by})
        ],
        holder=options.holder,
        holder_subject=options.holder_subject or options.holder,
    )


def arguments() -> argparse.ArgumentParser:
    options = parser("The support assistant: an account reset, confirmed by the account holder.")
    options.add_argument("--holder", required=True, help="login_hint of the account holder")
    options.add_argument("--holder-subject", help="the holder's sub at the OP (default: the login hint)")
    options.add_argument("--account-id", required=True)
    options.add_argument("--send-link-by", choices=["email", "sms"], default="email")
    return options


if __name__ == "__main__":
    main(PROGRAM, build_input, arguments().parse_args())

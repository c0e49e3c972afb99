"""The `temporal-ciba` commands are the library's own: its programs, the approval commands and
the audit (docs/operations/cli.md); the samples bring a command of their own."""

from __future__ import annotations

import argparse

from temporal_ciba._cli import COMMANDS, SERVICES, build_parser

LIBRARY_COMMANDS = {
    *("worker", "callback", "codec-server", "dev-certs", "request", "status", "list", "cancel", "audit"),
    "mcp-gateway",
}


def test_the_commands_are_the_librarys() -> None:
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert set(commands.choices) == LIBRARY_COMMANDS
    assert set(COMMANDS) == LIBRARY_COMMANDS
    assert SERVICES == {"worker", "callback", "codec-server", "mcp-gateway"}


def test_help_lists_every_command() -> None:
    text = build_parser().format_help()
    assert all(command in text for command in LIBRARY_COMMANDS)
    assert "demo" not in text and "payment" not in text

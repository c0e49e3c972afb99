"""An upstream MCP server for the gateway's tests: a tool that appends one line to a ledger.

    python -m tests.support.mcp_upstream LEDGER_FILE            (stdio)

`append_line(line)` appends `line` to the ledger file and answers with the line count;
`read_ledger()` (which the tests let through ungated) answers with the file's lines. The ledger
is what the tests read to know whether, how often and with what the upstream tool was called.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def build(ledger: Path) -> MCPServer:
    server = MCPServer("ledger")

    @server.tool()
    def append_line(line: str) -> str:
        """Append one line to the ledger."""
        with ledger.open("a") as file:
            file.write(line + "\n")
        return f"appended; the ledger has {len(ledger_lines(ledger))} lines"

    @server.tool()
    def read_ledger() -> str:
        """The ledger's lines."""
        return "\n".join(ledger_lines(ledger))

    return server


if __name__ == "__main__":
    build(Path(sys.argv[1])).run("stdio")

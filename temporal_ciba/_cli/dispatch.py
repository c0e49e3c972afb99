"""Running a command: logging, the dispatch to the command, and the exit status of each way it ends.

Exit status: 0 approved (or success), 1 any other outcome, 2 usage or configuration error.
A mistake the user can fix is one line, `temporal-ciba COMMAND: ...`, on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from temporal_ciba._cli import approvals, audit, mcp_gateway, services
from temporal_ciba._cli.errors import (
    EXIT_NOT_APPROVED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    WaitInterrupted,
    temporal_problem,
)
from temporal_ciba._cli.parser import build_parser
from temporal_ciba._programs.observability import configure_logging
from temporal_ciba._settings import ConfigError, LoggingSettings, load_settings

COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "worker": services.worker,
    "callback": services.callback,
    "codec-server": services.codec_server,
    "dev-certs": services.dev_certs,
    "request": approvals.request,
    "status": approvals.status,
    "list": approvals.list_approvals,
    "cancel": approvals.cancel,
    "audit": audit.audit,
    "mcp-gateway": mcp_gateway.mcp_gateway,
}

# Commands that run until stopped: Ctrl-C is how they end, not a failure.
SERVICES = frozenset({"worker", "callback", "codec-server", "mcp-gateway"})


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from temporal_ciba._programs.connect import TemporalUnavailable
    from temporal_ciba._programs.progress import WorkflowTaskFailing
    from temporal_ciba._search_attributes import SearchAttributesMissing

    configuration_errors = (
        ConfigError,
        UsageError,
        TemporalUnavailable,
        SearchAttributesMissing,
        WorkflowTaskFailing,
    )
    try:
        logging_settings = load_settings(LoggingSettings)
        configure_logging(logging_settings.log_level, logging_settings.log_format)
        return asyncio.run(COMMANDS[args.command](args))
    except WaitInterrupted as exc:
        print(f"temporal-ciba {args.command}: {exc}", file=sys.stderr)
        return EXIT_NOT_APPROVED
    except configuration_errors as exc:
        print(f"temporal-ciba {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        problem = temporal_problem(exc, args)
        if problem is None:
            raise
        print(f"temporal-ciba {args.command}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (or SIGTERM) is how services stop; for `request --wait` it means no approval was seen.
        print(f"temporal-ciba {args.command}: stopped", file=sys.stderr)
        return EXIT_OK if args.command in SERVICES else EXIT_NOT_APPROVED


def main(argv: Sequence[str] | None = None) -> None:
    """The `temporal-ciba` entry point: run, flush, and exit with os._exit.

    A short-lived Temporal client can crash at interpreter exit (sdk-python issue 300), so the
    process ends without running the interpreter's shutdown."""
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""The `temporal-ciba-examples` command: the samples' programs.

    temporal-ciba-examples demo [--dir DIR] [--port-base N]   the whole system on this machine
    temporal-ciba-examples payment-api                        the example payment API (PAYMENT_API_*)
    temporal-ciba-examples payment-worker                     the payment agent's worker (CIBA_*)
    temporal-ciba-examples mcp-maintenance [--http HOST:PORT]  the maintenance tool over MCP, gated

Exit status: 0 on a clean stop, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporal_ciba import ConfigError, load_settings

EXIT_OK = 0
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or configuration: one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="temporal-ciba-examples", description="The samples of temporal-ciba: the demo and its services."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the whole system locally on embedded defaults")
    demo.add_argument(
        "--dir", type=Path, help="where the demo keeps its state and logs (default: .demo in the current directory)"
    )
    demo.add_argument("--port-base", type=int, help="use six consecutive ports from here instead of the defaults")
    commands.add_parser("payment-api", help="run the example payment API (PAYMENT_API_* settings)")
    commands.add_parser(
        "payment-worker", help="run the payment agent's worker (CIBA_* settings and CIBA_PAYMENT_API_URL)"
    )
    maintenance = commands.add_parser(
        "mcp-maintenance", help="serve the maintenance bot's tool over MCP, gated by CIBA (CIBA_* settings)"
    )
    maintenance.add_argument("--approver", help="who approves (stdio); over HTTP, the caller's own subject")
    maintenance.add_argument("--requested-expiry", type=int, help="seconds the approver has to decide")
    maintenance.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP here instead of stdio")
    maintenance.add_argument("--issuer", help="the OAuth issuer of the HTTP clients' access tokens")
    maintenance.add_argument("--audience", action="append", help="the audience those tokens must carry")
    return parser


async def _mcp_maintenance(args: argparse.Namespace) -> int:
    from temporal_ciba_examples.mcp_gateway.maintenance_gateway import run_maintenance_gateway

    try:
        return await run_maintenance_gateway(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _demo(args: argparse.Namespace) -> int:
    from temporal_ciba_examples.demo.supervisor import Ports, run_demo

    ports = Ports.from_base(args.port_base) if args.port_base is not None else Ports()
    return await run_demo((args.dir or Path(".demo")).resolve(), ports)


async def _payment_worker(args: argparse.Namespace) -> int:
    from temporal_ciba_examples.payment_agent.worker import run_payment_worker

    await run_payment_worker()
    return EXIT_OK


async def _payment_api(args: argparse.Namespace) -> int:
    import uvicorn

    from temporal_ciba_examples.payment_agent.payment_api import (
        ClientCertificateH11Protocol,
        PaymentApiSettings,
        create_app,
    )

    settings = load_settings(PaymentApiSettings)
    tls: dict[str, Any] = {}
    if settings.tls_cert and settings.tls_key:
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    # RFC 8705: ask for a client certificate (optional: bearer and DPoP tokens need none) from the
    # CAs named, and hand it to the app, which matches it against certificate-bound tokens.
    if settings.tls_client_ca is not None:
        tls |= {
            "ssl_ca_certs": str(settings.tls_client_ca),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "http": ClientCertificateH11Protocol,
        }
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning", lifespan="on", **tls
    )
    # Bound here, not by uvicorn, so a port in use is one line (uvicorn logs it and exits 1).
    listening = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((settings.host, settings.port))
    except OSError as exc:
        listening.close()
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}): "
            "stop what uses it or set PAYMENT_API_PORT"
        ) from None
    scheme = "https" if "ssl_certfile" in tls else "http"
    logging.getLogger("temporal_ciba_examples").info("listening on %s://%s:%d", scheme, settings.host, settings.port)
    await uvicorn.Server(config).serve(sockets=[listening])
    return EXIT_OK


COMMANDS = {
    "demo": _demo,
    "payment-api": _payment_api,
    "payment-worker": _payment_worker,
    "mcp-maintenance": _mcp_maintenance,
}


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from temporal_ciba_examples.demo.supervisor import DemoError

    level = os.environ.get("CIBA_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in {"DEBUG", "INFO", "WARNING", "ERROR"} else "INFO",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except (ConfigError, UsageError, DemoError) as exc:
        print(f"temporal-ciba-examples {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        # Client.connect's error when Temporal cannot be reached: one line, not a traceback.
        if "connect" not in str(exc).lower():
            raise
        print(f"temporal-ciba-examples {args.command}: cannot connect to Temporal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (or SIGTERM) is how these services stop.
        print(f"temporal-ciba-examples {args.command}: stopped", file=sys.stderr)
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point. Exits with os._exit after flushing: a short-lived Temporal client can crash
    at interpreter exit (sdk-python issue 300)."""
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

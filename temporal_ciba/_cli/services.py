"""The service commands: `worker`, `callback`, `codec-server`, and `dev-certs` for local HTTPS.

A service runs until Ctrl-C or SIGTERM, which is how it stops (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

from temporal_ciba._cli.errors import EXIT_OK, UsageError
from temporal_ciba._programs.callback_settings import CallbackSettings
from temporal_ciba._programs.codec_server_settings import CodecServerSettings
from temporal_ciba._programs.observability import telemetry_runtime
from temporal_ciba._settings import OPSettings, WorkerSettings, load_settings


async def worker(args: argparse.Namespace) -> int:
    """`temporal-ciba worker`: the approval workflow and its activities, on CIBA_TASK_QUEUE."""
    from temporal_ciba._programs.worker import run_worker

    await run_worker(load_settings(OPSettings), load_settings(WorkerSettings))
    return EXIT_OK


async def serve(
    app: Any,
    *,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    lifespan: str = "off",
    port_setting: str,
    **options: Any,
) -> None:
    """Serve an ASGI app with uvicorn until stopped, over HTTPS when a certificate is given.

    `options` go to uvicorn.Config; a port in use is a UsageError naming `port_setting`."""
    import uvicorn

    tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert and tls_key else {}
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan, **tls, **options)  # type: ignore[arg-type]
    # Bound here, not by uvicorn, so a port in use is one line (uvicorn logs it and exits 1).
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what uses it or set {port_setting}"
        ) from None
    logging.getLogger("temporal_ciba.cli").info("listening on %s://%s:%d", "https" if tls else "http", host, port)
    await uvicorn.Server(config).serve(sockets=[listening])


def guarded(read_timeout: float, max_connections: int) -> dict[str, Any]:
    """uvicorn options that keep slow clients from pinning a service (temporal_ciba._programs.http_guard).

    Read deadlines for the head (here) and the body (BodyDeadline, in the app), a bound on open
    connections (503 beyond it), on a head's size, and on the wait for open requests at shutdown."""
    from temporal_ciba._programs.http_guard import GuardedH11Protocol

    return {
        "http": GuardedH11Protocol.with_read_timeout(read_timeout),
        "limit_concurrency": max_connections,
        "h11_max_incomplete_event_size": 16 * 1024,
        "timeout_graceful_shutdown": 10,
    }


async def callback(args: argparse.Namespace) -> int:
    """`temporal-ciba callback`: the ping/push receiver, which signals the waiting approvals."""
    from temporal_ciba._programs.callback import create_callback_app
    from temporal_ciba._programs.connect import connect
    from temporal_ciba.crypto import NotificationProofs, NotificationTokens, TokenSealer

    settings = load_settings(CallbackSettings)
    client = await connect(settings.payload_key_bytes, runtime=telemetry_runtime(settings.metrics_bind))
    app = create_callback_app(
        client,
        NotificationTokens(settings.token_key_bytes),
        TokenSealer(settings.token_key_bytes),
        proofs=NotificationProofs(settings.token_key_bytes),
        path=settings.callback_path,
        max_body_bytes=settings.callback_max_body_bytes,
        read_timeout=settings.callback_read_timeout,
    )
    await serve(
        app,
        host=settings.callback_host,
        port=settings.callback_port,
        port_setting="CIBA_CALLBACK_PORT",
        tls_cert=settings.callback_tls_cert,
        tls_key=settings.callback_tls_key,
        **guarded(settings.callback_read_timeout, settings.callback_max_connections),
    )
    return EXIT_OK


async def codec_server(args: argparse.Namespace) -> int:
    """`temporal-ciba codec-server`: decrypts history for the Temporal UI and CLI, for authenticated callers."""
    from temporal_ciba._programs.codec_server import codec_app_from_settings

    settings = load_settings(CodecServerSettings)
    await serve(
        codec_app_from_settings(settings),
        host=settings.codec_host,
        port=settings.codec_port,
        port_setting="CIBA_CODEC_PORT",
        tls_cert=settings.codec_tls_cert,
        tls_key=settings.codec_tls_key,
        **guarded(settings.codec_read_timeout, settings.codec_max_connections),
    )
    return EXIT_OK


async def dev_certs(args: argparse.Namespace) -> int:
    """`temporal-ciba dev-certs`: a local CA and a server certificate signed by it, for HTTPS on one machine."""
    from temporal_ciba._programs.dev_tls import make_dev_certificates

    files = make_dev_certificates(args.directory, args.hosts)
    print(f"CA {files.ca}, certificate {files.cert}, key {files.key}")
    return EXIT_OK

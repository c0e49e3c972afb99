"""The `temporal-ciba` command line.

    temporal-ciba worker | callback | codec-server | payment-api | demo
    temporal-ciba request --login-hint H --binding-message M [...] [--wait] [--json]
    temporal-ciba status WORKFLOW_ID | list [--status S] | cancel WORKFLOW_ID
    temporal-ciba audit export [--since T] [--until T] [--sub S] [--action-type T] [--status S]
    temporal-ciba audit verify FILE [--jwks FILE_OR_URL ...]

Exit status: 0 approved (or success), 1 any other outcome, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import ssl
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from temporal_ciba._programs.observability import configure_logging, telemetry_runtime
from temporal_ciba._settings import (
    AuditSettings,
    CallbackSettings,
    CodecServerSettings,
    ConfigError,
    LoggingSettings,
    OPSettings,
    TemporalSettings,
    WorkerSettings,
    load_settings,
)

EXIT_OK = 0
EXIT_NOT_APPROVED = 1
EXIT_USAGE = 2
APPROVAL_WORKFLOW = "CibaApprovalWorkflow"
# The values of the CibaStatus search attribute: the phases of a running approval, then the
# outcome statuses (models.ApprovalPhase; a unit test keeps the two equal).
LIST_STATUSES = (
    *("requesting", "pending", "validating"),
    *("approved", "denied", "expired", "cancelled", "rejected", "error"),
)


class UsageError(Exception):
    """Bad arguments or configuration: one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="temporal-ciba",
        description="Durable human approval for Temporal workflows through OpenID Connect CIBA.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("worker", help="run a worker for the approval workflow")
    commands.add_parser("callback", help="run the ping/push receiver (CIBA_CALLBACK_* settings)")
    commands.add_parser("payment-api", help="run the example payment API (PAYMENT_API_* settings)")
    commands.add_parser("codec-server", help="run the remote codec server for the Temporal UI (CIBA_CODEC_*)")
    certs = commands.add_parser("dev-certs", help="make a local CA and a server certificate (demo, compose)")
    certs.add_argument("directory", type=Path)
    certs.add_argument("hosts", nargs="+", help="DNS names and IP addresses the certificate is for")
    demo = commands.add_parser("demo", help="run the whole system locally on embedded defaults")
    demo.add_argument(
        "--dir", type=Path, help="where the demo keeps its state and logs (default: .demo in the current directory)"
    )
    demo.add_argument("--port-base", type=int, help="use six consecutive ports from here instead of the defaults")

    request = commands.add_parser("request", help="start an approval and print its workflow id")
    approver = request.add_mutually_exclusive_group(required=True)
    approver.add_argument("--login-hint", help="who must approve (CIBA login_hint)")
    approver.add_argument(
        "--login-hint-token", metavar="TOKEN|@FILE", help="who must approve, as a token the OP understands"
    )
    approver.add_argument(
        "--id-token-hint",
        metavar="TOKEN|@FILE",
        help="who must approve, as an ID token this OP issued to this client; only its sub may approve",
    )
    request.add_argument("--binding-message", required=True, help="what the approver sees on the phone")
    request.add_argument("--binding-code", help="the code the approver compares, kept if the message is shortened")
    request.add_argument("--scope", default="openid", help="space-separated scopes (openid is required)")
    request.add_argument("--acr-values", help="requested authentication context classes, space-separated")
    request.add_argument("--authorization-details", help="RFC 9396 authorization_details as a JSON array")
    request.add_argument("--requested-expiry", type=int, help="seconds the approval may take")
    request.add_argument("--audience", help="the API the access token is for (Auth0's audience)")
    request.add_argument(
        "--resource", action="append", help="an RFC 8707 resource indicator (absolute URI); repeat for several"
    )
    request.add_argument("--claims", help="OIDC claims request as a JSON object")
    request.add_argument("--user-code", help="the approver's user code, where the OP uses them")
    request.add_argument("--expected-subject", help="the OP `sub` of the approver; anyone else is rejected")
    request.add_argument("--workflow-id", help="workflow id to use (default: ciba-approval-<uuid>)")
    request.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    request.add_argument("--json", action="store_true", help="print the outcome as one JSON object")

    status = commands.add_parser("status", help="show an approval's state (or its outcome when ended)")
    status.add_argument("workflow_id")
    listing = commands.add_parser("list", help="list approvals, newest first")
    listing.add_argument("--status", choices=LIST_STATUSES, help="only approvals in this status")
    listing.add_argument("--limit", type=int, default=50)
    cancel = commands.add_parser("cancel", help="cancel a pending approval")
    cancel.add_argument("workflow_id")
    _add_audit(commands)
    return parser


def _add_audit(commands: Any) -> None:
    audit = commands.add_parser("audit", help="export and verify decision records (README, Decision records)")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="decision records as JSON Lines, ID tokens in clear (CIBA_RECORD_*)")
    export.add_argument("--since", type=_timestamp, help="decided at or after (ISO 8601; UTC if no offset)")
    export.add_argument("--until", type=_timestamp, help="decided before (ISO 8601; UTC if no offset)")
    export.add_argument("--sub", help="approved by this subject (the OP's sub)")
    export.add_argument("--action-type", help="with an authorization_details entry of this type")
    export.add_argument("--status", choices=LIST_STATUSES[3:], help="only decisions with this outcome")
    export.add_argument("--output", type=Path, help="write here instead of standard output")
    verify = actions.add_parser("verify", help="re-check an export's ID tokens and actions; exit 1 if any fails")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--jwks",
        action="append",
        default=[],
        metavar="FILE_OR_URL",
        help="the OP's keys: a JWKS file or its jwks_uri (repeatable); default: each issuer's, by discovery",
    )


def _timestamp(text: str) -> Any:
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def _json_argument(value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise UsageError(f"{option}: not valid JSON") from None


def _token_argument(value: str | None, option: str) -> SecretStr | None:
    """A token given as is, or as @FILE (a command line is visible to other users of the machine)."""
    if value is None or not value.startswith("@"):
        return None if value is None else SecretStr(value)
    try:
        return SecretStr(Path(value[1:]).read_text().strip())
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None


def approval_request_from_args(args: argparse.Namespace) -> Any:
    from temporal_ciba._models import ApprovalRequest

    details = _json_argument(args.authorization_details, "--authorization-details")
    try:
        return ApprovalRequest(
            login_hint=args.login_hint,
            login_hint_token=_token_argument(args.login_hint_token, "--login-hint-token"),
            id_token_hint=_token_argument(args.id_token_hint, "--id-token-hint"),
            binding_code=args.binding_code,
            audience=args.audience,
            resource=args.resource,
            claims=_json_argument(args.claims, "--claims"),
            binding_message=args.binding_message,
            scope=args.scope,
            acr_values=args.acr_values,
            authorization_details=details,
            requested_expiry=args.requested_expiry,
            user_code=args.user_code,
            expected_subject=args.expected_subject,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise UsageError(f"invalid request: {where + ': ' if where else ''}{error['msg']}") from None


def _outcome_line(outcome: Any) -> str:
    if outcome.approved:
        return f"approved by {outcome.sub} (acr {outcome.acr or '-'}, auth_req_id {outcome.auth_req_id})"
    return f"{outcome.status}{' (' + outcome.error + ')' if outcome.error else ''}: {outcome.reason}"


async def _request(args: argparse.Namespace) -> int:
    from temporal_ciba._approval import static_details, static_summary
    from temporal_ciba._models import ApprovalWorkflowInput
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._workflow import CibaApprovalWorkflow

    approval = approval_request_from_args(args)
    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    workflow_id = args.workflow_id or f"ciba-approval-{uuid.uuid4()}"
    handle = await client.start_workflow(
        CibaApprovalWorkflow.run,
        ApprovalWorkflowInput(request=approval),
        id=workflow_id,
        task_queue=settings.task_queue,
        # What the Temporal UI's list shows, readable with no worker running.
        static_summary=static_summary(approval),
        static_details=static_details(approval),
    )
    print(workflow_id, file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.wait:
        return EXIT_OK
    outcome = await _wait_watching(client, handle, settings.task_queue, args.command)
    if args.json:
        _print_json(outcome.public_json())
    else:
        print(_outcome_line(outcome))
    return EXIT_OK if outcome.approved else EXIT_NOT_APPROVED


async def _wait_watching(client: Any, handle: Any, task_queue: str, command: str) -> Any:
    """The outcome; meanwhile, say once when no worker polls the task queue, and stop
    (WorkflowTaskFailing) when the worker cannot run the approval."""
    from temporal_ciba._programs.progress import watch_progress

    def notice(line: str) -> None:
        print(f"temporal-ciba {command}: {line}", file=sys.stderr, flush=True)

    result = asyncio.ensure_future(handle.result())
    watcher = asyncio.ensure_future(watch_progress(client, handle, task_queue, notice=notice))
    try:
        await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not result.done():
        result.cancel()
        watcher.result()  # raises WorkflowTaskFailing (or whatever stopped the watch)
    return result.result()


async def _status(args: argparse.Namespace) -> int:
    from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
    from temporalio.service import RPCError

    from temporal_ciba._models import ApprovalOutcome
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._workflow import CibaApprovalWorkflow

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    handle = client.get_workflow_handle(args.workflow_id, result_type=ApprovalOutcome)
    try:
        description = await handle.describe()
    except RPCError as exc:
        raise UsageError(f"no approval {args.workflow_id!r}: {exc.message}") from None
    if description.status == WorkflowExecutionStatus.RUNNING:
        try:
            state = await handle.query(CibaApprovalWorkflow.status)
        except (RPCError, WorkflowQueryFailedError) as exc:
            raise UsageError(
                f"{args.workflow_id} is running but cannot answer ({_first_line(str(exc))}): its workflow task is "
                "failing; see the worker's log (a worker with another CIBA_PAYLOAD_KEY, or an outdated worker?)"
            ) from None
        _print_json(state.model_dump(mode="json", exclude={"outcome"}))
        return EXIT_OK
    if description.status == WorkflowExecutionStatus.COMPLETED:
        outcome = await handle.result()
        _print_json(outcome.public_json())
        return EXIT_OK if outcome.approved else EXIT_NOT_APPROVED
    _print_json(
        {"workflow_id": args.workflow_id, "status": description.status.name.lower() if description.status else None}
    )
    return EXIT_NOT_APPROVED


async def _list(args: argparse.Namespace) -> int:
    from temporal_ciba._programs.connect import connect
    from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_DEADLINE, CIBA_STATUS

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    query = f"WorkflowType = '{APPROVAL_WORKFLOW}'"
    if args.status:
        query += f" AND CibaStatus = '{args.status}'"
    count = 0
    async for execution in client.list_workflows(query, limit=args.limit):
        attributes = execution.typed_search_attributes
        deadline = attributes.get(CIBA_DEADLINE)
        print(
            f"{execution.id}\t{attributes.get(CIBA_STATUS) or '-'}\t{attributes.get(CIBA_AUTH_REQ_ID) or '-'}\t"
            f"{deadline.isoformat() if deadline else '-'}"
        )
        count += 1
    print(f"{count} approval(s)", file=sys.stderr)
    return EXIT_OK


async def _cancel(args: argparse.Namespace) -> int:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from temporal_ciba._programs.connect import connect
    from temporal_ciba._search_attributes import CIBA_STATUS

    settings = load_settings(TemporalSettings)
    client = await connect(settings.payload_key_bytes)
    handle = client.get_workflow_handle(args.workflow_id)
    try:
        description = await handle.describe()
        if description.status == WorkflowExecutionStatus.RUNNING:
            await handle.cancel()
    except RPCError as exc:
        raise UsageError(f"cannot cancel {args.workflow_id!r}: {exc.message}") from None
    if description.status != WorkflowExecutionStatus.RUNNING:
        execution = description.status.name.lower() if description.status else "unknown"
        status = description.typed_search_attributes.get(CIBA_STATUS) or execution
        print(f"temporal-ciba cancel: {args.workflow_id} already ended ({status}): nothing to cancel", file=sys.stderr)
        return EXIT_NOT_APPROVED
    print(f"cancellation requested for {args.workflow_id}")
    return EXIT_OK


async def _audit(args: argparse.Namespace) -> int:
    return await (_audit_export(args) if args.audit_command == "export" else _audit_verify(args))


async def _audit_export(args: argparse.Namespace) -> int:
    from temporal_ciba.records import EvidenceKeys, RecordQuery, export, open_store

    settings = load_settings(AuditSettings)
    dsn = settings.record_dsn.get_secret_value() if settings.record_dsn else None
    if dsn is None and not settings.record_db.is_file():
        raise UsageError(f"no decision records at {settings.record_db}: set CIBA_RECORD_DB or CIBA_RECORD_DSN")
    store = open_store(path=settings.record_db, dsn=dsn)
    query = RecordQuery(
        since=args.since, until=args.until, sub=args.sub, status=args.status, action_type=args.action_type
    )
    keys = EvidenceKeys(settings.evidence_key_bytes())
    # Owner-only: the export holds ID tokens, which name people.
    output = (
        os.fdopen(os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8")
        if args.output
        else sys.stdout
    )
    count, unopened = 0, 0
    try:
        for exported in await asyncio.to_thread(lambda: list(export(store, keys, query))):
            output.write(exported.line + "\n")
            count += 1
            if exported.problem is not None:
                unopened += 1
                problem = f"record {exported.record.record_id}: {exported.problem}"
                print(f"temporal-ciba audit export: {problem}", file=sys.stderr)
    finally:
        if args.output:
            output.close()
    print(f"{count} record(s) exported", file=sys.stderr)
    return EXIT_NOT_APPROVED if unopened else EXIT_OK


async def _audit_verify(args: argparse.Namespace) -> int:
    import httpx

    from temporal_ciba.ciba import CibaError
    from temporal_ciba.records import discover_jwks, load_jwks, parse_export, verify

    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    try:
        if args.jwks:
            keys = [key for source in args.jwks for key in load_jwks(source)]
        else:
            issuers = {record.issuer for _, record, _ in parse_export(lines) if record and record.issuer}
            keys = await discover_jwks(issuers)
    except (OSError, ValueError, httpx.HTTPError, CibaError) as exc:
        raise UsageError(f"cannot load the OP's keys: {_first_line(str(exc)) or type(exc).__name__}") from None
    failures = 0
    for failure in verify(lines, keys):
        print(failure)
        failures += 1
    total = sum(1 for line in lines if line.strip())
    print(f"{total} record(s), {failures} do not verify", file=sys.stderr)
    return EXIT_NOT_APPROVED if failures else EXIT_OK


async def _worker(args: argparse.Namespace) -> int:
    from temporal_ciba._programs.worker import run_worker
    from temporal_ciba.example.plugin import PaymentAgentPlugin, PaymentAgentSettings

    op = load_settings(OPSettings)
    settings = load_settings(WorkerSettings)
    example = load_settings(PaymentAgentSettings)
    plugins = []
    if example.payment_api_url:
        plugins.append(
            PaymentAgentPlugin(
                api_url=example.payment_api_url,
                token_key=settings.token_key_bytes,
                dpop=op.dpop,
                client_certificate=op.client_certificate(),
            )
        )
    await run_worker(op, settings, plugins=plugins)
    return EXIT_OK


async def _serve(
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
    """Serve an ASGI app with uvicorn, over HTTPS when a certificate is given; `options` go to uvicorn.Config."""
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


async def _callback(args: argparse.Namespace) -> int:
    from temporal_ciba._programs.callback import GuardedH11Protocol, create_callback_app
    from temporal_ciba._programs.connect import connect
    from temporal_ciba.crypto import NotificationTokens, TokenSealer

    settings = load_settings(CallbackSettings)
    client = await connect(settings.payload_key_bytes, runtime=telemetry_runtime(settings.metrics_bind))
    app = create_callback_app(
        client,
        NotificationTokens(settings.token_key_bytes),
        TokenSealer(settings.token_key_bytes),
        path=settings.callback_path,
        max_body_bytes=settings.callback_max_body_bytes,
        read_timeout=settings.callback_read_timeout,
    )
    await _serve(
        app,
        host=settings.callback_host,
        port=settings.callback_port,
        port_setting="CIBA_CALLBACK_PORT",
        tls_cert=settings.callback_tls_cert,
        tls_key=settings.callback_tls_key,
        # Slow clients cannot pin it: read deadlines for the head (here) and the body (in the app),
        # a bound on open connections, and a bounded wait for open requests on shutdown.
        http=GuardedH11Protocol.with_read_timeout(settings.callback_read_timeout),
        limit_concurrency=settings.callback_max_connections,
        h11_max_incomplete_event_size=16 * 1024,
        timeout_graceful_shutdown=10,
    )
    return EXIT_OK


async def _codec_server(args: argparse.Namespace) -> int:
    from temporal_ciba._programs.codec_server import codec_app_from_settings

    settings = load_settings(CodecServerSettings)
    await _serve(
        codec_app_from_settings(settings),
        host=settings.codec_host,
        port=settings.codec_port,
        port_setting="CIBA_CODEC_PORT",
        tls_cert=settings.codec_tls_cert,
        tls_key=settings.codec_tls_key,
    )
    return EXIT_OK


async def _dev_certs(args: argparse.Namespace) -> int:
    from temporal_ciba._programs.dev_tls import make_dev_certificates

    files = make_dev_certificates(args.directory, args.hosts)
    print(f"CA {files.ca}, certificate {files.cert}, key {files.key}")
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    from temporal_ciba.example.demo import Ports, run_demo

    ports = Ports.from_base(args.port_base) if args.port_base is not None else Ports()
    return await run_demo((args.dir or Path(".demo")).resolve(), ports)


async def _payment_api(args: argparse.Namespace) -> int:
    from temporal_ciba.example.payment_api import ClientCertificateH11Protocol, PaymentApiSettings, create_app

    settings = load_settings(PaymentApiSettings)
    # RFC 8705: ask for a client certificate (optional: bearer and DPoP tokens need none) from the
    # CAs named, and hand it to the app, which matches it against certificate-bound tokens.
    client_certificates: dict[str, Any] = {}
    if settings.tls_client_ca is not None:
        client_certificates = {
            "ssl_ca_certs": str(settings.tls_client_ca),
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "http": ClientCertificateH11Protocol,
        }
    await _serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        port_setting="PAYMENT_API_PORT",
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        lifespan="on",
        **client_certificates,
    )
    return EXIT_OK


COMMANDS = {
    "worker": _worker,
    "callback": _callback,
    "payment-api": _payment_api,
    "codec-server": _codec_server,
    "demo": _demo,
    "dev-certs": _dev_certs,
    "request": _request,
    "status": _status,
    "list": _list,
    "cancel": _cancel,
    "audit": _audit,
}


SERVICES = frozenset({"worker", "callback", "payment-api", "codec-server", "demo"})


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no detail"


def _temporal_problem(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for the Temporal mistakes a user makes (wrong namespace, a workflow id in use,
    another payload key), or None for anything else (a bug: its traceback is shown)."""
    from temporalio.exceptions import WorkflowAlreadyStartedError
    from temporalio.service import RPCError, RPCStatusCode

    from temporal_ciba.crypto import PayloadDecryptionError

    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PayloadDecryptionError):
            return (
                f"cannot decrypt the approval ({_first_line(str(error))}): set CIBA_PAYLOAD_KEY to the payload key "
                "of the worker that ran it"
            )
        if isinstance(error, WorkflowAlreadyStartedError):
            workflow_id = getattr(args, "workflow_id", None) or "this workflow id"
            return (
                f"workflow {workflow_id} is already running: choose another --workflow-id, "
                f"or follow it with `temporal-ciba status {workflow_id}`"
            )
        if isinstance(error, RPCError):
            message = _first_line(error.message)
            if error.status == RPCStatusCode.NOT_FOUND and "namespace" in message.lower():
                return f"{message}: check TEMPORAL_NAMESPACE (or the namespace of your temporal.toml profile)"
            if error.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
                return f"Temporal refused the call ({error.status.name}: {message}): check TEMPORAL_API_KEY and TLS"
            return (
                f"Temporal refused the call ({error.status.name}: {message}): check TEMPORAL_ADDRESS "
                "and TEMPORAL_NAMESPACE"
            )
        error = error.__cause__ or error.__context__
    return None


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from temporal_ciba._programs.connect import TemporalUnavailable
    from temporal_ciba._programs.progress import WorkflowTaskFailing
    from temporal_ciba._search_attributes import SearchAttributesMissing
    from temporal_ciba.example.demo import DemoError

    configuration_errors = (
        ConfigError,
        UsageError,
        TemporalUnavailable,
        DemoError,
        SearchAttributesMissing,
        WorkflowTaskFailing,
    )
    try:
        logging_settings = load_settings(LoggingSettings)
        configure_logging(logging_settings.log_level, logging_settings.log_format)
        return asyncio.run(COMMANDS[args.command](args))
    except configuration_errors as exc:
        print(f"temporal-ciba {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        problem = _temporal_problem(exc, args)
        if problem is None:
            raise
        print(f"temporal-ciba {args.command}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (or SIGTERM) is how services stop; for `request --wait` it means no approval was seen.
        print(f"temporal-ciba {args.command}: stopped", file=sys.stderr)
        return EXIT_OK if args.command in SERVICES else EXIT_NOT_APPROVED


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point. Exits with os._exit after flushing: a short-lived Temporal client can crash
    at interpreter exit (sdk-python issue 300)."""
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

"""The `temporal-ciba` argument parser: the commands, their options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from temporal_ciba._cli import mcp_gateway

# The values of the CibaStatus search attribute: the phases of a running approval, then the
# outcome statuses (models.ApprovalPhase; a unit test keeps the two equal).
LIST_STATUSES = (
    *("requesting", "pending", "validating"),
    *("approved", "denied", "expired", "cancelled", "rejected", "error"),
)


def build_parser() -> argparse.ArgumentParser:
    """Every command of docs/operations/cli.md, with its options and help."""
    parser = argparse.ArgumentParser(
        prog="temporal-ciba",
        description="Durable human approval for Temporal workflows through OpenID Connect CIBA.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("worker", help="run a worker for the approval workflow")
    commands.add_parser("callback", help="run the ping/push receiver (CIBA_CALLBACK_* settings)")
    commands.add_parser("codec-server", help="run the remote codec server for the Temporal UI (CIBA_CODEC_*)")
    mcp_gateway.add_parser(commands)
    certs = commands.add_parser(
        "dev-certs", help="make a local CA and a server certificate for HTTPS on one machine (samples, compose)"
    )
    certs.add_argument("directory", type=Path)
    certs.add_argument("hosts", nargs="+", help="DNS names and IP addresses the certificate is for")

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
    export.add_argument(
        "--since-checkpoint", type=Path, metavar="FILE", help="add a consistency proof from this kept checkpoint"
    )
    verify = actions.add_parser(
        "verify", help="check an export's log, ID tokens and actions against the log's and the OP's keys"
    )
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--log-key", required=True, metavar="KEY_OR_FILE", help="the log's public key, as `audit log-key` prints it"
    )
    verify.add_argument(
        "--since-checkpoint", type=Path, metavar="FILE", help="a checkpoint kept earlier: the log must extend it"
    )
    verify.add_argument(
        "--allow-filtered", action="store_true", help="verify a filtered export (positions not in it are not checked)"
    )
    verify.add_argument(
        "--jwks",
        action="append",
        default=[],
        metavar="FILE_OR_URL",
        help="the OP's keys: a JWKS file or its jwks_uri (repeatable); default: each issuer's, by discovery",
    )
    actions.add_parser("log-key", help="print the decision log's public key (CIBA_LOG_SIGNING_KEY)")
    checkpoint = actions.add_parser("checkpoint", help="the log's latest signed checkpoint, for an auditor to keep")
    checkpoint.add_argument("--log-key", metavar="KEY_OR_FILE", help="check its signature with this public key")
    checkpoint.add_argument("--output", type=Path, help="write here (owner-only) instead of standard output")


def _timestamp(text: str) -> Any:
    """An ISO 8601 date or time for --since/--until; one without an offset is UTC."""
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""The `temporal-ciba` command line: the library's programs and the approval commands.

    temporal-ciba worker | callback | codec-server | dev-certs DIR HOST...
    temporal-ciba request --login-hint H --binding-message M [...] [--wait] [--json]
    temporal-ciba status WORKFLOW_ID | list [--status S] | cancel WORKFLOW_ID
    temporal-ciba audit export [--since T] [--until T] [--sub S] [--action-type T] [--status S]
    temporal-ciba audit verify FILE [--jwks FILE_OR_URL ...]

Exit status: 0 approved (or success), 1 any other outcome, 2 usage or configuration error.

    parser       the commands, their options and help
    approvals    request (with --wait watching the worker), status, list, cancel
    audit        audit export and verify, and their settings
    services     worker, callback, codec-server, dev-certs, and serving an ASGI app
    errors       exit statuses, UsageError, one line for a Temporal mistake
    dispatch     run (logging, dispatch, exit status) and main
"""

from temporal_ciba._cli.approvals import approval_request_from_args
from temporal_ciba._cli.dispatch import COMMANDS, SERVICES, main, run
from temporal_ciba._cli.errors import EXIT_NOT_APPROVED, EXIT_OK, EXIT_USAGE, UsageError
from temporal_ciba._cli.parser import LIST_STATUSES, build_parser

__all__ = [
    "COMMANDS",
    "EXIT_NOT_APPROVED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LIST_STATUSES",
    "SERVICES",
    "UsageError",
    "approval_request_from_args",
    "build_parser",
    "main",
    "run",
]

"""`temporal-ciba audit`: export decision records, and verify an export.

    temporal-ciba audit export [--since T] [--until T] [--sub S] [--action-type T] [--status S]
    temporal-ciba audit verify FILE [--jwks FILE_OR_URL ...]

Export opens the evidence, so it needs the record key (or the token key it derives from);
verify needs only the export and the OP's public keys, so an auditor can run it elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from pydantic import SecretStr, field_validator

from temporal_ciba._cli.errors import EXIT_NOT_APPROVED, EXIT_OK, UsageError, first_line
from temporal_ciba._settings import RecordSettings, decode_payload_key, load_settings


class AuditSettings(RecordSettings):
    """`temporal-ciba audit export`: the store and the record key (or the token key it derives from)."""

    token_key: SecretStr | None = None

    @field_validator("token_key")
    @classmethod
    def _token_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            decode_payload_key(key.get_secret_value())
        return key

    def evidence_key_bytes(self) -> list[bytes]:
        """The keys that open the evidence: CIBA_RECORD_KEY, or the one derived from CIBA_TOKEN_KEY."""
        token_key = decode_payload_key(self.token_key.get_secret_value()) if self.token_key else None
        return self.record_key_bytes(token_key)


async def audit(args: argparse.Namespace) -> int:
    """`temporal-ciba audit export|verify`."""
    return await (_export(args) if args.audit_command == "export" else _verify(args))


async def _export(args: argparse.Namespace) -> int:
    """Write the selected decision records as JSON Lines with their evidence opened; exit 1 if any did not open."""
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


async def _verify(args: argparse.Namespace) -> int:
    """Re-check an export's ID tokens against the OP's keys and its actions; print each failure, exit 1 if any."""
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
        raise UsageError(f"cannot load the OP's keys: {first_line(str(exc)) or type(exc).__name__}") from None
    failures = 0
    for failure in verify(lines, keys):
        print(failure)
        failures += 1
    total = sum(1 for line in lines if line.strip())
    print(f"{total} record(s), {failures} do not verify", file=sys.stderr)
    return EXIT_NOT_APPROVED if failures else EXIT_OK

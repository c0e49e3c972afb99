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
import tempfile
from pathlib import Path

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
    from temporal_ciba.records import EvidenceKeys, RecordQuery, RecordStoreError, export, open_store

    settings = load_settings(AuditSettings)
    dsn = settings.record_dsn.get_secret_value() if settings.record_dsn else None
    if dsn is None and not settings.record_db.is_file():
        raise UsageError(f"no decision records at {settings.record_db}: set CIBA_RECORD_DB or CIBA_RECORD_DSN")
    store = open_store(path=settings.record_db, dsn=dsn)
    query = RecordQuery(
        since=args.since, until=args.until, sub=args.sub, status=args.status, action_type=args.action_type
    )
    keys = EvidenceKeys(settings.evidence_key_bytes())
    try:
        exported = await asyncio.to_thread(lambda: list(export(store, keys, query)))
    except RecordStoreError as exc:  # it names the setting, never the DSN
        raise UsageError(str(exc)) from None
    lines = [item.line + "\n" for item in exported]
    if args.output:
        write_owner_only(args.output, "".join(lines))
    else:
        sys.stdout.writelines(lines)
    unopened = 0
    for item in exported:
        if item.problem is not None:
            unopened += 1
            print(f"temporal-ciba audit export: record {item.record.record_id}: {item.problem}", file=sys.stderr)
    print(f"{len(exported)} record(s) exported", file=sys.stderr)
    return EXIT_NOT_APPROVED if unopened else EXIT_OK


def write_owner_only(path: Path, text: str) -> None:
    """Write `text` to `path` as a new file only its owner can read (0600).

    An export holds ID tokens, which name people. It is written to a temporary file created
    beside `path` (O_CREAT|O_EXCL, mode 0600), then renamed over `path`: a file already there is
    replaced, not rewritten, so its mode and its other hard links keep nothing of the export. A
    symbolic link at `path` is refused (UsageError): the export never lands where a link points."""
    if path.is_symlink():
        raise UsageError(f"--output {path} is a symbolic link: give the path of the file itself")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as output:
            os.fchmod(output.fileno(), 0o600)
            output.write(text)
            output.flush()
            os.fsync(output.fileno())
        # rename(2) replaces whatever is at `path`, a link included, without following it.
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


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

"""`temporal-ciba audit`: export decision records, verify an export, and the log's key and checkpoints.

    temporal-ciba audit export [--since T] [--until T] [--sub S] [--action-type T] [--status S]
                               [--since-checkpoint FILE] [--output FILE]
    temporal-ciba audit verify FILE --log-key KEY [--jwks FILE_OR_URL ...] [--since-checkpoint FILE]
    temporal-ciba audit log-key
    temporal-ciba audit checkpoint [--log-key KEY] [--output FILE]

Export opens the evidence, so it needs the record key (or the token key it derives from), and
signs a checkpoint of the log as it is when it holds the log key; verify needs only the export,
the OP's public keys and the log's public key (`log-key`), so an auditor can run it elsewhere.
`checkpoint` fetches the latest signed checkpoint for an auditor to keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, field_validator

from temporal_ciba._cli.errors import EXIT_NOT_APPROVED, EXIT_OK, UsageError, first_line
from temporal_ciba._settings import RecordSettings, decode_payload_key, load_settings


class AuditSettings(RecordSettings):
    """`temporal-ciba audit export`: the store and the record key (or the token key it derives from)."""

    token_key: SecretStr | None = None

    def log_signer(self) -> Any:
        """The log signer from CIBA_LOG_SIGNING_KEY (or CIBA_TOKEN_KEY), or None when neither is set."""
        from temporal_ciba.records import LogSigner

        token_key = decode_payload_key(self.token_key.get_secret_value()) if self.token_key else None
        if self.log_signing_key is None and token_key is None:
            return None
        return LogSigner(self.log_key_bytes(token_key))

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
    """`temporal-ciba audit export|verify|log-key|checkpoint`."""
    command = {"export": _export, "verify": _verify, "log-key": _log_key, "checkpoint": _checkpoint}
    return await command[args.audit_command](args)


def _store(settings: AuditSettings) -> Any:
    from temporal_ciba.records import open_store

    dsn = settings.record_dsn.get_secret_value() if settings.record_dsn else None
    if dsn is None and not settings.record_db.is_file():
        raise UsageError(f"no decision records at {settings.record_db}: set CIBA_RECORD_DB or CIBA_RECORD_DSN")
    return open_store(path=settings.record_db, dsn=dsn)


def read_checkpoint(path: Path) -> Any:
    """A checkpoint kept in a file (`audit checkpoint --output`); UsageError naming the file otherwise."""
    from temporal_ciba.records import Checkpoint

    try:
        return Checkpoint.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise UsageError(f"{path} is not a checkpoint: {exc.errors()[0]['msg']}") from None


def _public_log_key(source: str) -> Any:
    from temporal_ciba.records import load_log_key

    try:
        return load_log_key(source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _log_key(args: argparse.Namespace) -> int:
    """Print the log's public key (base64), what an auditor passes to `verify --log-key`."""
    signer = load_settings(AuditSettings).log_signer()
    if signer is None:
        raise UsageError("no log signing key: set CIBA_LOG_SIGNING_KEY (or CIBA_TOKEN_KEY, its default)")
    print(signer.public_key_text)
    return EXIT_OK


async def _checkpoint(args: argparse.Namespace) -> int:
    """Print (or write) the log's latest signed checkpoint, for an auditor to keep; checked with --log-key."""
    from temporal_ciba.records import RecordStoreError

    store = _store(load_settings(AuditSettings))
    try:
        checkpoint = await asyncio.to_thread(store.latest_checkpoint)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from None
    if checkpoint is None:
        raise UsageError("the decision log has no signed checkpoint yet")
    if args.log_key and not checkpoint.verifies(_public_log_key(args.log_key)):
        print(f"checkpoint {checkpoint.size}: not signed by the log key given", file=sys.stderr)
        return EXIT_NOT_APPROVED
    text = checkpoint.model_dump_json() + "\n"
    if args.output:
        write_owner_only(args.output, text)
    else:
        sys.stdout.write(text)
    print(f"checkpoint of {checkpoint.size} record(s), signed {checkpoint.timestamp.isoformat()}", file=sys.stderr)
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    """Write the selected decision records as JSON Lines with their evidence opened; exit 1 if any did not open."""
    from temporal_ciba.records import EvidenceKeys, RecordQuery, RecordStoreError, export

    settings = load_settings(AuditSettings)
    store = _store(settings)
    query = RecordQuery(
        since=args.since, until=args.until, sub=args.sub, status=args.status, action_type=args.action_type
    )
    keys = EvidenceKeys(settings.evidence_key_bytes())
    since = read_checkpoint(args.since_checkpoint) if args.since_checkpoint else None
    signer = settings.log_signer()
    try:
        exported = await asyncio.to_thread(lambda: export(store, keys, query, signer=signer, since=since))
    except RecordStoreError as exc:  # it names the setting, never the DSN
        raise UsageError(str(exc)) from None
    lines = [line + "\n" for line in exported.lines]
    if args.output:
        write_owner_only(args.output, "".join(lines))
    else:
        sys.stdout.writelines(lines)
    problems = list(exported.log_problems)
    for problem in problems:
        print(f"temporal-ciba audit export: {problem}", file=sys.stderr)
    for item in exported.records:
        if item.problem is not None:
            problems.append(item.problem)
            print(f"temporal-ciba audit export: record {item.record.record_id}: {item.problem}", file=sys.stderr)
    print(f"{len(exported.records)} record(s) exported", file=sys.stderr)
    return EXIT_NOT_APPROVED if problems else EXIT_OK


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
    """Check an export's checkpoint, each record's place, evidence and action; print each failure, exit 1 if any."""
    import httpx

    from temporal_ciba.ciba import CibaError
    from temporal_ciba.records import discover_jwks, load_jwks, parse_export, verify_export

    log_key = _public_log_key(args.log_key)
    since = read_checkpoint(args.since_checkpoint) if args.since_checkpoint else None
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
    report = verify_export(lines, keys, log_key, since=since, allow_filtered=args.allow_filtered)
    for failure in report.failures:
        print(failure)
    for line in report.summary():
        print(line, file=sys.stderr)
    return EXIT_NOT_APPROVED if report.failures else EXIT_OK

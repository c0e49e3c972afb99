"""The record store's DSN never shows, and `audit export --output` writes an owner-only file.

The DSN's password is searched for everywhere a user or operator sees: a setting libpq cannot
parse is one line naming CIBA_RECORD_DSN (exit 2 for `audit export`, the worker does not start);
a store that cannot be reached, or a real PostgreSQL server that refuses, raises RecordStoreError
naming the setting, with no driver error chained to it, from the store and from the recording
activity. The export file is a new 0600 file whatever was at its path; a symbolic link there is
refused and its target left alone."""

from __future__ import annotations

import os
import subprocess
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from temporalio.testing import ActivityEnvironment

from temporal_ciba._cli.audit import AuditSettings
from temporal_ciba._models import ApprovalOutcome, ApprovalRequest
from temporal_ciba._settings import ConfigError, WorkerSettings, load_settings
from temporal_ciba.crypto._sealing import TokenSealer
from temporal_ciba.records import (
    DecisionRecord,
    DecisionRecorder,
    EvidenceKeys,
    LogSigner,
    PostgresStore,
    RecordDecisionInput,
    RecordStoreError,
    SqliteStore,
)
from tests.support.postgres import PostgresServer
from tests.support.stack import PAYLOAD_KEY, TOKEN_KEY, clean_env, cli_command
from tests.support.temporal import free_port

PASSWORD = "Hunter2%zzSecret"  # "%zz" is no percent-encoding: libpq cannot parse the URL
BROKEN_DSN = f"postgresql://auditor:{PASSWORD}@db.internal:5432/records"
VALID_PASSWORD = "Hunter2Secret-9f3a"


def unreachable_dsn() -> str:
    """A DSN libpq parses, naming a loopback port nothing listens on."""
    return f"postgresql://auditor:{VALID_PASSWORD}@127.0.0.1:{free_port()}/records"


def assert_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text, text
        assert secret.lower() not in text.lower(), text


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), env=clean_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception shows: its text, repr, traceback, and whatever it chains."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert exc.__cause__ is None and exc.__context__ is None  # nothing of the driver's rides along
    return texts


# A DSN libpq cannot parse ------------------------------------------------------------------------


def test_a_dsn_libpq_cannot_parse_is_refused_at_start_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIBA_RECORD_DSN", BROKEN_DSN)
    with pytest.raises(ConfigError) as raised:
        load_settings(AuditSettings)
    message = str(raised.value)
    assert message.startswith("configuration error: CIBA_RECORD_DSN: libpq cannot parse")
    assert_nowhere(PASSWORD, message, repr(raised.value))
    assert_nowhere("Hunter2", message)


def test_settings_built_in_code_do_not_quote_the_dsn_either() -> None:
    """RecordSettings(...) outside load_settings: pydantic's own error text shows no input."""
    short = f"postgresql://a:{PASSWORD}@h/d"  # pydantic would shorten a long input, hiding it by chance
    with pytest.raises(ValueError, match="libpq cannot parse") as raised:
        WorkerSettings(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY, record_dsn=short)  # type: ignore[arg-type]
    assert_nowhere(PASSWORD, str(raised.value), repr(raised.value))


def test_audit_export_with_an_unparseable_dsn_is_one_line_exit_2() -> None:
    result = run_cli("audit", "export", CIBA_RECORD_DSN=BROKEN_DSN, CIBA_TOKEN_KEY=TOKEN_KEY)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("temporal-ciba audit: configuration error: CIBA_RECORD_DSN:")
    assert_nowhere(PASSWORD, result.stdout, result.stderr)


def test_the_worker_does_not_start_with_an_unparseable_dsn() -> None:
    result = run_cli(
        "worker",
        CIBA_RECORD_DSN=BROKEN_DSN,
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_ISSUER="http://127.0.0.1:1",
        CIBA_CLIENT_ID="agent",
        CIBA_CLIENT_SECRET="secret-" * 6,
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "CIBA_RECORD_DSN" in line and "libpq cannot parse" in line
    assert_nowhere(PASSWORD, result.stdout, result.stderr)


# A valid DSN whose server is unreachable, or refuses ------------------------------------------


def test_audit_export_with_an_unreachable_store_is_one_line_exit_2() -> None:
    result = run_cli("audit", "export", CIBA_RECORD_DSN=unreachable_dsn(), CIBA_TOKEN_KEY=TOKEN_KEY)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "temporal-ciba audit: the decision-record store (CIBA_RECORD_DSN) failed while signing a checkpoint: "
        "OperationalError: Connection refused"
    )
    assert_nowhere(VALID_PASSWORD, result.stdout, result.stderr)


@pytest.mark.parametrize("operation", ["create", "insert", "select"])
def test_an_unreachable_store_names_the_setting_not_the_dsn(operation: str) -> None:
    store = PostgresStore(unreachable_dsn(), connect_timeout=5)
    with pytest.raises(RecordStoreError) as raised:
        if operation == "create":
            store.create()
        elif operation == "insert":
            store.insert(a_record(), EvidenceKeys([os.urandom(32)]))
        else:
            list(store.select())
    texts = exception_texts(raised.value)
    assert "CIBA_RECORD_DSN" in texts[0] and "Connection refused" in texts[0]
    assert_nowhere(VALID_PASSWORD, *texts)
    assert_nowhere("127.0.0.1", texts[0])  # the host and port are part of the DSN too


def test_a_real_server_refusing_the_connection_is_named_without_the_dsn(postgres: PostgresServer) -> None:
    dsn = f"postgresql://postgres:{VALID_PASSWORD}@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(RecordStoreError) as raised:
        PostgresStore(dsn).create()
    texts = exception_texts(raised.value)
    assert 'database "no_such_database" does not exist' in texts[0] and "CIBA_RECORD_DSN" in texts[0]
    assert_nowhere(VALID_PASSWORD, *texts)


def test_a_real_server_refusing_a_statement_is_named_without_the_dsn(postgres: PostgresServer) -> None:
    database = postgres.new_database().rpartition("/")[2]
    dsn = f"postgresql://postgres:{VALID_PASSWORD}@127.0.0.1:{postgres.port}/{database}"
    with pytest.raises(RecordStoreError) as raised:
        list(PostgresStore(dsn).select())  # no table yet
    texts = exception_texts(raised.value)
    assert "SQLSTATE 42P01" in texts[0] and "reading records" in texts[0]
    assert_nowhere(VALID_PASSWORD, *texts)


async def test_the_recording_activity_fails_without_the_dsn() -> None:
    """What the activity raises is what Temporal records as its failure and the worker logs."""
    recorder = DecisionRecorder(
        PostgresStore(unreachable_dsn(), connect_timeout=5),
        EvidenceKeys([os.urandom(32)]),
        TokenSealer(os.urandom(32)),
        LogSigner(os.urandom(32)),
    )
    with pytest.raises(RecordStoreError) as raised:
        await ActivityEnvironment().run(recorder.record_decision, a_decision())
    assert "CIBA_RECORD_DSN" in str(raised.value)
    assert_nowhere(VALID_PASSWORD, *exception_texts(raised.value))


def a_decision() -> RecordDecisionInput:
    outcome = ApprovalOutcome(
        status="denied",
        workflow_id="agent-1.approval",
        auth_req_id="req-1",
        reason="denied",
        decided_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )
    request = ApprovalRequest(login_hint="alice", binding_message="Pay EUR 1.00")
    return RecordDecisionInput(outcome=outcome, request=request, first_run_id="run-1", run_id="run-1")


def a_record() -> DecisionRecord:
    return a_decision().record(None)


# audit export --output: a new owner-only file ---------------------------------------------------


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A SQLite store holding one record, its evidence under the key TOKEN_KEY derives."""
    path = tmp_path / "records.sqlite3"
    settings = AuditSettings(record_db=path, token_key=TOKEN_KEY)  # type: ignore[arg-type]
    store = SqliteStore(path)
    store.create()
    store.insert(a_decision().record(None), EvidenceKeys(settings.evidence_key_bytes()))
    return path


def export_to(records: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", "export", "--output", str(output), CIBA_RECORD_DB=str(records), CIBA_TOKEN_KEY=TOKEN_KEY)


def test_an_existing_world_readable_file_becomes_owner_only(records: Path, tmp_path: Path) -> None:
    output = tmp_path / "export.jsonl"
    output.write_text("an earlier export, world-readable\n" * 100)
    output.chmod(0o644)
    result = export_to(records, output)
    assert result.returncode == 0, result.stderr
    assert output.stat().st_mode & 0o777 == 0o600
    assert output.read_text().count("\n") == 2 and "agent-1.approval" in output.read_text()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".export")] == []


def test_a_new_file_is_owner_only(records: Path, tmp_path: Path) -> None:
    output = tmp_path / "new.jsonl"
    assert export_to(records, output).returncode == 0
    assert output.stat().st_mode & 0o777 == 0o600


def test_a_symbolic_link_at_the_path_is_refused_and_its_target_untouched(records: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("not an export")
    target.chmod(0o644)
    link = tmp_path / "export.jsonl"
    link.symlink_to(target)
    result = export_to(records, link)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"temporal-ciba audit: --output {link} is a symbolic link: give the path of the file itself"
    assert target.read_text() == "not an export" and target.stat().st_mode & 0o777 == 0o644
    assert link.is_symlink()


def test_a_dangling_symbolic_link_creates_nothing_where_it_points(records: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-through-the-link.jsonl"
    link = tmp_path / "export.jsonl"
    link.symlink_to(target)
    assert export_to(records, link).returncode == 2
    assert not target.exists()


# What a PostgreSQL error says, exactly ----------------------------------------------------------


class UndefinedTable(Exception):
    """A statement's error as psycopg raises it: a SQLSTATE and the server's primary message."""

    sqlstate = "42P01"

    def __init__(self, said: str) -> None:
        super().__init__(said)
        self.diag = SimpleNamespace(message_primary=said)


class OperationalError(Exception):
    """A connection's error as libpq words it: the host and port, then why after "failed:"."""


def server_said(error: BaseException, said: str) -> BaseException:
    error.diag = SimpleNamespace(message_primary=said)  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (
            UndefinedTable('relation "decision_records" does not exist'),
            'UndefinedTable (SQLSTATE 42P01): relation "decision_records" does not exist',
        ),
        (
            OperationalError(
                'connection to server at "db.internal" (10.0.0.7), port 5432 failed:  FATAL:  '
                'password authentication failed for user "auditor"\n second line'
            ),
            'OperationalError: FATAL: password authentication failed for user "auditor"',
        ),
        (OperationalError(""), "OperationalError"),
        # A connection's error the server itself explained: its words, not libpq's line.
        (
            server_said(OperationalError("x failed: libpq's words"), "the server's words"),
            "OperationalError: the server's words",
        ),
        (ValueError(f"no {VALID_PASSWORD} here"), "ValueError"),  # neither: the class alone
    ],
)
def test_a_postgres_error_is_its_class_sqlstate_and_reason_only(error: BaseException, described: str) -> None:
    assert PostgresStore(unreachable_dsn())._describe(error) == described


def test_the_password_and_the_dsn_are_scrubbed_from_what_the_server_says() -> None:
    """The password as libpq reads it, percent-decoded too, and the DSN whole."""
    dsn = "postgresql://auditor:pa%40ss-9f3a@db.internal:5432/records"
    keywords = "host=db.internal password=pa%40ss-9f3a dbname=records"  # no decoding in this form
    for store_dsn, said, scrubbed in (
        (dsn, "rejected pa@ss-9f3a", "rejected ***"),
        (dsn, f"cannot use {dsn}", "cannot use ***"),
        (dsn, "nothing secret", "nothing secret"),
        (keywords, "rejected pa%40ss-9f3a or pa@ss-9f3a", "rejected *** or ***"),
        ("host=db.internal dbname=records", "XXXX is no secret", "XXXX is no secret"),  # no password: nothing
    ):
        described = PostgresStore(store_dsn)._describe(UndefinedTable(said))
        assert described == f"UndefinedTable (SQLSTATE 42P01): {scrubbed}"


def test_what_the_server_says_is_withheld_when_the_dsn_cannot_be_read() -> None:
    """The secrets cannot be told apart from the rest: none of it is shown."""
    assert PostgresStore("host='unterminated")._scrub("rejected password hunter2") == "(withheld)"

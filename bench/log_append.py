"""The decision log's cost: what appending a record adds to its write, and PostgreSQL's appends a second.

    .venv/bin/python -m bench.log_append [--records 400] [--writers 4] [--dsn postgresql://...]

1. The append's cost: the median time of `DecisionStore.insert` (the record written and appended
   to the log in one transaction: the head row locked, the leaf hash and MAC stored, the head
   moved on) beside the same row written by a bare INSERT into a table without the log, on
   SQLite and on PostgreSQL, one writer. The difference is what the log adds to the record
   write, which the approval runs before it returns its outcome: the decision-to-resume path.
2. PostgreSQL appends a second from `--writers` processes appending at once (each its own
   connection per record, as a worker does), and the log then checked for gaps.

Without --dsn it runs its own PostgreSQL (Debian's `postgresql` package, as the tests do), with
fsync on. Prints the figures; nothing is asserted (docs/contributing/benchmarks.md).
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporal_ciba import ApprovalOutcome, ApprovalRequest
from temporal_ciba.records import (
    DecisionRecord,
    DecisionStore,
    EvidenceKeys,
    LogSigner,
    PostgresStore,
    RecordDecisionInput,
    RecordQuery,
    SqliteStore,
    export,
)

KEYS = EvidenceKeys([b"\x01" * 32])
TABLE = "ciba_decision_records"  # the store's table, copied without the log for the bare insert
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "x" * 600 + ".signature"  # an ID token's size, encrypted as evidence


def a_record(tag: str, n: int) -> DecisionRecord:
    outcome = ApprovalOutcome(
        status="approved",
        workflow_id=f"bench-{tag}-{n}.approval",
        auth_req_id=f"req-{tag}-{n}",
        reason="approved by alice",
        sub="alice",
        acr="mfa",
        decided_at=T0 + timedelta(seconds=n),
        requested_at=T0,
    )
    details = [{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": f"{n}.00"}}]
    request = ApprovalRequest(login_hint="alice", binding_message=f"Pay EUR {n}.00", authorization_details=details)
    made = RecordDecisionInput(outcome=outcome, request=request, first_run_id=f"r-{n}", run_id=f"r-{n}")
    return made.record(TOKEN)


def milliseconds(operation: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def append_cost(store: DecisionStore, name: str, count: int) -> None:
    """The median insert with the log, beside a bare INSERT of the same row into a table without it."""
    store.create()
    p = store.placeholder
    with store._connect() as connection:
        connection.execute(f"CREATE TABLE bare AS SELECT * FROM {TABLE} WHERE 1 = 0")  # noqa: S608
    records = iter(a_record(uuid.uuid4().hex[:6], n) for n in range(count * 2))

    def logged() -> None:
        store.insert(next(records), KEYS)

    def bare() -> None:
        record = next(records)
        evidence = KEYS.encrypt(TOKEN, body_digest=record.body_digest())
        with store._connect() as connection:
            connection.execute(
                f"INSERT INTO bare (record_id, decided_at, status, sub, body, evidence, content_digest, "  # noqa: S608
                f"recorded_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (
                    record.record_id,
                    store._decided_at(record.decided_at),
                    record.status,
                    record.sub,
                    record.model_dump_json(exclude={"id_token"}),
                    evidence,
                    record.content_digest(),
                    store._decided_at(datetime.now(UTC)),
                ),
            )

    # Interleaved, so both see the same machine.
    with_log, without = [], []
    for _ in range(count):
        with_log += milliseconds(logged, 1)
        without += milliseconds(bare, 1)
    median, bare_median = statistics.median(with_log), statistics.median(without)
    print(
        f"{name}: record write with the log append {median:.2f} ms median (p90 "
        f"{statistics.quantiles(with_log, n=10)[-1]:.2f}), bare insert {bare_median:.2f} ms: "
        f"the log adds {median - bare_median:.2f} ms ({count} each)"
    )


def _writer(dsn: str, tag: str, count: int, start: Any) -> None:
    store = PostgresStore(dsn)
    start.wait()
    for n in range(count):
        store.insert(a_record(tag, n), KEYS)


def postgres_throughput(dsn: str, writers: int, count: int) -> None:
    store = PostgresStore(dsn)
    store.create()
    start = multiprocessing.Event()
    processes = [
        multiprocessing.Process(target=_writer, args=(dsn, f"w{index}", count, start)) for index in range(writers)
    ]
    for process in processes:
        process.start()
    time.sleep(1.0)  # every process imported and waiting
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    leaves = store.log_leaves()
    total = writers * count
    gapless = [leaf.seq for leaf in leaves[-total:]] == list(range(len(leaves) - total, len(leaves)))
    exported = export(store, KEYS, RecordQuery(), signer=LogSigner(b"\x02" * 32))
    print(
        f"PostgreSQL: {total / elapsed:.0f} appends/s from {writers} concurrent writers "
        f"({total} records in {elapsed:.2f} s); sequence numbers without gap: {gapless}; "
        f"export of the {len(leaves)}-record log with proofs: {len(exported.log_problems)} problem(s)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def own_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server with fsync on (as a production one); its DSN."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]))
    if not found:
        raise SystemExit("PostgreSQL is not installed: pass --dsn, or apt-get install postgresql")
    binaries = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "nobody", "nogroup")
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    subprocess.run(
        [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    server = subprocess.Popen(
        [*as_user, str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
            )
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=400, help="records per measurement (and per writer)")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--dsn", help="a PostgreSQL database to use (it gets the records' tables)")
    args = parser.parse_args()
    print(f"temporal-ciba decision log benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o700)
        append_cost(SqliteStore(Path(directory) / "records.sqlite3"), "SQLite", args.records)
    with own_postgres() if args.dsn is None else _given(args.dsn) as dsn:
        append_cost(PostgresStore(dsn), "PostgreSQL", args.records)
        postgres_throughput(dsn, args.writers, args.records)


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


if __name__ == "__main__":
    main()

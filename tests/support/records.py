"""Decision-record helpers for tests: a recorder on a SQLite file, its records, and a table from before the log."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client, WorkflowExecution

from temporal_ciba._models import OUTCOME_STATUSES
from temporal_ciba._search_attributes import CIBA_AUTH_REQ_ID, CIBA_STATUS
from temporal_ciba.crypto import derive_key
from temporal_ciba.crypto._sealing import TokenSealer
from temporal_ciba.records import DecisionRecord, DecisionRecorder, DecisionStore, EvidenceKeys, LogSigner, SqliteStore
from temporal_ciba.records._log import ExportHeader, record_leaf_hash
from temporal_ciba.records._merkle import Tree
from temporal_ciba.records._store import TABLE
from tests.support.temporal import wait_for


def sqlite_recorder(path: Path, token_key: bytes, record_key: bytes | None = None) -> DecisionRecorder:
    """The recorder a worker builds, on the SQLite file `path` (evidence key: `record_key`, else
    the token key, as the worker's default derives it: only the key differs, not the format); its
    log signed with `log_seed(token_key)`."""
    return DecisionRecorder(
        SqliteStore(path),
        EvidenceKeys([record_key or token_key]),
        TokenSealer(token_key),
        LogSigner(log_seed(token_key)),
    )


def log_seed(token_key: bytes) -> bytes:
    """The log signing key's seed a worker derives from `token_key` when CIBA_LOG_SIGNING_KEY is unset."""
    return derive_key(token_key, "decision log signing key v1")


def stored_records(path: Path) -> list[DecisionRecord]:
    """Every record in the SQLite file (none if it does not exist yet), evidence still encrypted."""
    if not path.exists():
        return []
    return [stored.record for stored in SqliteStore(path).select()]


async def assert_every_outcome_recorded(client: Client, task_queue: str, store: DecisionStore) -> None:
    """Every approval that ended on `task_queue` left exactly one decision record of its outcome,
    and every record in `store` belongs to one of them.

    An approval workflow holds one decision: one record, of the status its CibaStatus shows. A
    workflow with inline approvals may hold several: its latest record's status is its CibaStatus.
    The final CibaStatus is upserted in the workflow task that writes the record, so once
    visibility lists a workflow as ended its record is there; visibility may lag, so wait.
    """
    await asyncio.to_thread(store.create)  # a worker that recorded nothing has no table yet
    statuses = "', '".join(OUTCOME_STATUSES)
    query = f"TaskQueue = '{task_queue}' AND CibaStatus IN ('{statuses}')"

    async def snapshot() -> tuple[dict[str, WorkflowExecution], dict[str, list[DecisionRecord]]]:
        ended = {execution.id: execution async for execution in client.list_workflows(query)}
        by_workflow: dict[str, list[DecisionRecord]] = defaultdict(list)
        for stored in await asyncio.to_thread(lambda: list(store.select())):
            if stored.record.policy is not None and stored.record.policy.approval == "none":
                continue  # a decision not to ask: its workflow has no approval status (tested apart)
            by_workflow[stored.record.workflow_id].append(stored.record)
        return ended, by_workflow

    async def settled() -> tuple[dict[str, WorkflowExecution], dict[str, list[DecisionRecord]]] | None:
        ended, by_workflow = await snapshot()
        return (ended, by_workflow) if set(ended) == set(by_workflow) else None

    try:
        ended, by_workflow = await wait_for(settled, timeout=20, what="the ended approvals and the records to agree")
    except TimeoutError:
        ended, by_workflow = await snapshot()
        raise AssertionError(
            f"on {task_queue}, ended without a record: {sorted(set(ended) - set(by_workflow))}; "
            f"recorded but not ended: {sorted(set(by_workflow) - set(ended))}"
        ) from None
    for workflow_id, execution in ended.items():
        records = sorted(by_workflow[workflow_id], key=lambda record: record.decided_at)
        status = execution.typed_search_attributes.get(CIBA_STATUS)
        if execution.workflow_type == "CibaApprovalWorkflow":
            assert len(records) == 1, f"{workflow_id}: {len(records)} records for one decision"
            assert records[0].auth_req_id == execution.typed_search_attributes.get(CIBA_AUTH_REQ_ID)
        assert records[-1].status == status, f"{workflow_id}: recorded {records[-1].status}, ended {status}"


def logged_export(records: Sequence[DecisionRecord], signer: LogSigner, *, complete: bool = True) -> list[str]:
    """The lines of an export of a log that holds `records` in this order, as `audit export` writes it.

    The header carries a checkpoint of all of them signed by `signer`; each record its sequence
    number and inclusion proof."""
    tree = Tree([record_leaf_hash(record) for record in records])
    header = ExportHeader(checkpoint=signer.sign(len(records), tree.root), complete=complete)
    lines = [header.model_dump_json()]
    for seq, record in enumerate(records):
        place = {"seq": seq, "tree_size": tree.size, "inclusion": [node.hex() for node in tree.inclusion_proof(seq)]}
        lines.append(json.dumps({**record.model_dump(mode="json"), "log": place}))
    return lines


def written_before_the_log(store: DecisionStore, records: list[tuple[DecisionRecord, EvidenceKeys]]) -> None:
    """The records (each with the record key of its evidence) in a table created before the log, as
    they were written then, oldest first."""
    p = store.placeholder
    with store._connect() as connection:
        connection.execute(
            f"CREATE TABLE {TABLE} (record_id TEXT PRIMARY KEY, decided_at TEXT NOT NULL, status TEXT NOT NULL, "
            "sub TEXT, body TEXT NOT NULL, evidence TEXT, content_digest TEXT NOT NULL, recorded_at TEXT NOT NULL)"
        )
        for n, (record, keys) in enumerate(records):
            evidence = keys.encrypt(record.id_token, body_digest=record.body_digest()) if record.id_token else None
            connection.execute(
                f"INSERT INTO {TABLE} VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",  # noqa: S608
                (
                    record.record_id,
                    record.decided_at.isoformat(),
                    record.status,
                    record.sub,
                    record.model_dump_json(exclude={"id_token"}),
                    evidence,
                    record.content_digest(),
                    f"2026-03-01T00:00:0{n}+00:00",
                ),
            )

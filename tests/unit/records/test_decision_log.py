"""The decision log, on SQLite and on a real PostgreSQL server: what `audit verify` refuses.

A log like the demo's (an approval signed by the OP, a EUR 990,000 payment denied, an approval a
policy let through, an expired request) is written through the store, exported with its proofs
and a signed checkpoint, and verified. Every edit an operator could make, in the export or in the
store, fails verify with one line naming the record or the sequence number and why; a random
single alteration of a random log always fails, and the untouched log always passes. Appends from
several threads take consecutive numbers, and a writer killed mid-append leaves a log that
verifies, its retried write appending once."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from temporal_ciba._models import ApprovalOutcome, ApprovalRequest, PolicyDecision
from temporal_ciba.ciba import AUTH_REQ_ID_CLAIM
from temporal_ciba.ciba._jwks import parse_jwks
from temporal_ciba.records import (
    Checkpoint,
    DecisionRecord,
    DecisionStore,
    EvidenceKeys,
    LogSigner,
    PostgresStore,
    RecordDecisionInput,
    RecordQuery,
    RecordStoreError,
    SqliteStore,
    export,
    load_log_key,
    verify_export,
)
from temporal_ciba.records._audit import Report
from temporal_ciba.records._log import Consistency, record_leaf_hash
from temporal_ciba.records._merkle import Tree, consistency_proof, verify_consistency
from temporal_ciba.records._store import TABLE
from tests.support.postgres import PostgresServer
from tests.support.records import logged_export, written_before_the_log

ISSUER, CLIENT = "https://op.example", "agent"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OP_KEY = rsa.generate_private_key(65537, 2048)
JWKS = parse_jwks({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OP_KEY.public_key())), "kid": "k1"}]})
RECORD_KEY = EvidenceKeys([b"\x01" * 32])
LOG = LogSigner(b"\x02" * 32)


def id_token(auth_req_id: str, decided_at: datetime, sub: str = "alice") -> str:
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": sub,
        "acr": "mfa",
        "auth_time": int(decided_at.timestamp()) - 20,
        "iat": int(decided_at.timestamp()) - 5,
        "exp": int(decided_at.timestamp()) + 600,
        AUTH_REQ_ID_CLAIM: auth_req_id,
    }
    return jwt.encode(claims, OP_KEY, algorithm="RS256", headers={"kid": "k1"})


def decision(
    n: int, status: str, amount: str = "120.00", *, policy_none: bool = False, tag: str = ""
) -> DecisionRecord:
    """The n-th decision of the log: `status`, for a payment of EUR `amount` (`tag` makes its ids unique)."""
    decided_at = T0 + timedelta(minutes=n)
    auth_req_id = f"{tag}req-{n}"
    approved_by_op = status == "approved" and not policy_none
    outcome = ApprovalOutcome(
        status=status,  # type: ignore[arg-type]
        workflow_id=f"{tag}agent-{n}.approval",
        auth_req_id=None if policy_none else auth_req_id,
        reason=f"{status} (decision {n})",
        error="access_denied" if status == "denied" else None,
        sub="alice" if approved_by_op else None,
        acr="mfa" if approved_by_op else None,
        auth_time=int(decided_at.timestamp()) - 20 if approved_by_op else None,
        requested_at=decided_at - timedelta(seconds=60),
        decided_at=decided_at,
        policy=PolicyDecision(rule="small", reason="under 200", approval="none") if policy_none else None,
    )
    request = ApprovalRequest(
        login_hint="alice",
        binding_message=f"Pay EUR {amount}",
        authorization_details=[
            {"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": amount}}
        ],
    )
    made = RecordDecisionInput(
        outcome=outcome, request=request, first_run_id=f"run-{n}", run_id=f"run-{n}", issuer=ISSUER, client_id=CLIENT
    )
    return made.record(id_token(auth_req_id, decided_at) if approved_by_op else None)


def demo_log() -> list[DecisionRecord]:
    """One approval, the EUR 990,000 payment denied, an approval no one was asked for, one expired."""
    return [
        decision(0, "approved"),
        decision(1, "denied", "990000.00"),
        decision(2, "approved", "50.00", policy_none=True),
        decision(3, "expired"),
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionStore]:
    made: DecisionStore
    if request.param == "sqlite":
        made = SqliteStore(tmp_path / "records.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        made = PostgresStore(server.new_database())
    made.create()
    yield made


def written(store: DecisionStore, records: list[DecisionRecord]) -> list[dict[str, Any]]:
    """Write the records, export them (a checkpoint signed now); the export's lines as objects."""
    for record in records:
        assert store.insert(record, RECORD_KEY) is True
    exported = export(store, RECORD_KEY, RecordQuery(), signer=LOG)
    assert exported.log_problems == [] and [item.problem for item in exported.records] == [None] * len(records)
    return [json.loads(line) for line in exported.lines]


def report(lines: list[dict[str, Any]] | list[str], **options: Any) -> Report:
    texts = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return verify_export(texts, JWKS, LOG.public_key, **options)


def one_failure(lines: list[dict[str, Any]], **options: Any) -> str:
    """The one line verify prints for `lines`."""
    failures = [str(failure) for failure in report(lines, **options).failures]
    assert len(failures) == 1, failures
    return failures[0]


def test_an_untouched_log_verifies_and_says_whose_evidence_each_record_rests_on(store: DecisionStore) -> None:
    lines = written(store, demo_log())
    found = report(lines)
    assert found.failures == []
    approval, denial, by_policy, expired = (line["record_id"] for line in lines[1:])
    assert found.signed_by_op == [approval]  # the only one a person's approval, signed by the OP
    assert found.policy_approved == [by_policy]  # never reported as a human's approval
    assert found.log_only == {"denied": [denial], "expired": [expired]}
    assert [line["log"]["seq"] for line in lines[1:]] == [0, 1, 2, 3]
    assert lines[0]["checkpoint"]["size"] == 4 and lines[0]["complete"] is True


def copied_approval(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The denial, turned into an approval with the genuine approval's who, when and evidence."""
    approval, denial = lines[1], lines[2]
    fields = ("sub", "auth_time", "requested_at", "decided_at", "auth_req_id", "id_token", "acr")
    return {**denial, "status": "approved", "error": None, **{name: approval[name] for name in fields}}


# Edits of an export: forged outcomes, copied evidence, duplicates, deletions and reorderings.
EDITS = {
    "denial approved by a policy": lambda lines: [
        *lines[:2],
        {**lines[2], "status": "approved", "error": None, "policy": {"rule": "r", "reason": "r", "approval": "none"}},
        *lines[3:],
    ],
    "denial approved with the approval's evidence": lambda lines: [*lines[:2], copied_approval(lines), *lines[3:]],
    "approval turned into a denial": lambda lines: [
        lines[0],
        {**lines[1], "status": "denied", "error": "access_denied", "id_token": None, "sub": None},
        *lines[2:],
    ],
    "an action's amount changed": lambda lines: [
        *lines[:2],
        {**lines[2], "binding_message": "Pay EUR 9.00"},
        *lines[3:],
    ],
}


def test_a_field_added_inside_the_policy_s_decision_fails(store: DecisionStore) -> None:
    """A record states nothing its leaf does not cover, inside the policy's decision too."""
    lines = written(store, demo_log())
    edited = [*lines[:3], {**lines[3], "policy": {**lines[3]["policy"], "approvers": ["mallory"]}}, *lines[4:]]
    assert report(edited).failures != []
    added = [*lines[:3], {**lines[3], "policy": {**lines[3]["policy"], "added": "x"}}, *lines[4:]]
    assert any(
        failure.line_number == 4 and "not a decision record" in failure.reason for failure in report(added).failures
    )


@pytest.mark.parametrize("edit", list(EDITS))
def test_each_edit_of_a_record_fails_naming_it(store: DecisionStore, edit: str) -> None:
    lines = written(store, demo_log())
    edited = EDITS[edit](lines)
    (changed,) = [after for before, after in zip(lines, edited, strict=True) if before != after]
    line = one_failure(edited)
    assert f"record {changed['record_id']} (sequence {changed['log']['seq']})" in line
    assert "not in the log as it stands" in line or "record id is not the one" in line


def test_the_approval_duplicated_under_a_new_record_id_fails(store: DecisionStore) -> None:
    lines = written(store, demo_log())
    duplicate = {**lines[1], "record_id": os.urandom(32).hex()}
    line = one_failure([*lines, duplicate])
    assert line.startswith("line 6: record ") and "sequence 0 appears twice" in line
    moved = {**duplicate, "log": {**duplicate["log"], "seq": 4}}
    assert "after the checkpoint" in one_failure([*lines, moved])


@pytest.mark.parametrize(("deleted", "seq"), [(1, 0), (2, 1), (4, 3)], ids=["first", "middle", "last"])
def test_a_deleted_record_fails_naming_its_sequence_number(store: DecisionStore, deleted: int, seq: int) -> None:
    lines = written(store, demo_log())
    assert (
        one_failure([*lines[:deleted], *lines[deleted + 1 :]]) == f"sequence {seq}: missing from the export (deleted?)"
    )


def test_reordered_records_fail(store: DecisionStore) -> None:
    lines = written(store, demo_log())
    line = one_failure([lines[0], lines[1], lines[3], lines[2], lines[4]])
    assert line.startswith(f"line 4: record {lines[2]['record_id']} (sequence 1): out of order: sequence 1 after 2")


def test_an_inserted_record_fails(store: DecisionStore) -> None:
    lines = written(store, demo_log())
    forged = decision(9, "denied").model_dump(mode="json")
    # Slipped in at a place of the log, with that place's proof: its leaf is not there.
    slipped = {**forged, "log": lines[2]["log"]}
    line = one_failure([*lines[:2], slipped, *lines[3:]])
    assert f"record {forged['record_id']} (sequence 1): not in the log as it stands" in line
    # Or appended, outside the signed checkpoint; or with no place at all.
    appended = {**forged, "log": {"seq": 4}}
    assert "sequence 4 is after the checkpoint (size 4)" in one_failure([*lines, appended])
    assert "no place in the log" in one_failure([*lines, forged])


def test_a_filtered_export_says_what_it_leaves_out(store: DecisionStore) -> None:
    written(store, demo_log())
    exported = export(store, RECORD_KEY, RecordQuery(status="denied"), signer=LOG)
    lines = [json.loads(line) for line in exported.lines]
    assert lines[0]["complete"] is False and [line["status"] for line in lines[1:]] == ["denied"]
    assert report(lines, allow_filtered=True).failures == []
    failures = [str(failure) for failure in report(lines).failures]
    assert failures == [
        "sequence 0: not in this filtered export (pass --allow-filtered to verify a selection)",
        "sequences 2-3: not in this filtered export (pass --allow-filtered to verify a selection)",
    ]


def test_a_checkpoint_not_signed_by_the_log_key_fails(store: DecisionStore) -> None:
    lines = written(store, demo_log())
    other = LogSigner(b"\x03" * 32)
    resigned = {
        **lines[0],
        "checkpoint": json.loads(other.sign(4, bytes.fromhex(lines[0]["checkpoint"]["root_hash"])).model_dump_json()),
    }
    assert one_failure([resigned, *lines[1:]]).endswith("checkpoint 4: not signed by the log key given")


def test_a_kept_checkpoint_proves_the_log_only_grew(store: DecisionStore) -> None:
    records = demo_log()
    written(store, records[:2])
    kept = store.latest_checkpoint()
    assert kept is not None and kept.size == 2
    for record in records[2:]:
        store.insert(record, RECORD_KEY)
    exported = export(store, RECORD_KEY, RecordQuery(), signer=LOG, since=kept)
    lines = [json.loads(line) for line in exported.lines]
    assert lines[0]["consistency"]["old_size"] == 2
    assert report(lines, since=kept).failures == []
    # Without the proof the kept checkpoint cannot be checked.
    assert "no consistency proof from the kept checkpoint" in one_failure(
        [{**lines[0], "consistency": None}, *lines[1:]], since=kept
    )


def test_a_forked_log_fails_against_a_kept_checkpoint() -> None:
    """The log key's holder rewrites the denial and signs the rewritten log: a fork of the same size."""
    genuine = demo_log()
    kept_checkpoint = Checkpoint.model_validate(json.loads(logged_export(genuine, LOG)[0])["checkpoint"])
    rewritten = [genuine[0], decision(1, "approved"), *genuine[2:]]
    forked = [json.loads(line) for line in logged_export(rewritten, LOG)]
    assert report(forked).failures == []  # on its own, a re-signed log is consistent
    line = one_failure(forked, since=kept_checkpoint)
    assert line == "line 1: sequence 4: a forked log: two checkpoints of this size with different roots, both signed"
    # A longer rewritten log: its consistency proof from the kept checkpoint does not hold.
    longer = [json.loads(line) for line in logged_export([*rewritten, decision(4, "denied")], LOG)]
    proof = consistency_proof([record_leaf_hash(r) for r in [*rewritten, decision(4, "denied")]], 4)
    longer[0]["consistency"] = Consistency(old_size=4, proof=[node.hex() for node in proof]).model_dump()
    assert "removed, reordered or rewritten" in one_failure(longer, since=kept_checkpoint)
    # Truncated to fewer records than the kept checkpoint: the log shrank.
    shorter = [json.loads(line) for line in logged_export(genuine[:3], LOG)]
    assert "the log shrank" in one_failure(shorter, since=kept_checkpoint)


@pytest.mark.parametrize("evidence", [True, False], ids=["with-evidence", "without-evidence"])
def test_an_edit_in_the_store_fails_at_export_and_at_verify(store: DecisionStore, evidence: bool) -> None:
    records = demo_log()
    written(store, records)
    target = records[0] if evidence else records[1]  # the approval holds an ID token, the denial none
    (stored,) = [item for item in store.select() if item.record.record_id == target.record_id]
    body = stored.record.model_copy(update={"status": "denied" if evidence else "approved"}).model_dump_json()
    with store._connect() as connection:
        connection.execute(
            f"UPDATE {TABLE} SET body = {store.placeholder} WHERE record_id = {store.placeholder}",  # noqa: S608
            (body, target.record_id),
        )
    exported = export(store, RECORD_KEY, RecordQuery(), signer=LOG)
    problems = {item.record.record_id: item.problem for item in exported.records if item.problem}
    assert list(problems) == [target.record_id]
    assert problems[target.record_id] == (
        "the evidence does not open for this record (altered, or another record's)"
        if evidence
        else "the record was altered in the store (it no longer gives its leaf hash)"
    )
    line = one_failure([json.loads(line) for line in exported.lines])
    assert f"record {target.record_id}" in line and "not in the log as it stands" in line


def test_an_edit_in_the_store_that_recomputes_the_leaf_fails_the_mac(store: DecisionStore) -> None:
    records = demo_log()
    written(store, records)
    forged = records[1].model_copy(update={"status": "approved", "error": None})

    with store._connect() as connection:
        connection.execute(
            f"UPDATE {TABLE} SET body = {store.placeholder}, leaf_hash = {store.placeholder} "  # noqa: S608
            f"WHERE record_id = {store.placeholder}",
            (forged.model_dump_json(), record_leaf_hash(forged).hex(), forged.record_id),
        )
    exported = export(store, RECORD_KEY, RecordQuery(), signer=LOG)
    assert [item.problem for item in exported.records if item.problem] == [
        "the record was altered in the store (its MAC under the record key does not match)"
    ]
    # The checkpoint signed before the edit still holds the genuine root: export says so, and
    # verify places no record in that tree (their proofs come from the rewritten leaves).
    assert exported.log_problems == [
        "the store's log does not give the signed checkpoint's root at size 4 (rewritten in the store)"
    ]
    failures = [str(failure) for failure in report([json.loads(line) for line in exported.lines]).failures]
    assert f"record {forged.record_id} (sequence 1): not in the log as it stands" in failures[1]


def test_concurrent_appends_take_consecutive_numbers(store: DecisionStore) -> None:
    records = [decision(n, "denied") for n in range(60)]
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(lambda record: store.insert(record, RECORD_KEY), records))
    assert [leaf.seq for leaf in store.log_leaves()] == list(range(60))
    lines = [json.loads(line) for line in export(store, RECORD_KEY, RecordQuery(), signer=LOG).lines]
    assert report(lines).failures == []


CHILD = """
import sys
from temporal_ciba.records import DecisionRecord, EvidenceKeys, PostgresStore, SqliteStore
from pathlib import Path

kind, where, record_file = sys.argv[1:4]
store = SqliteStore(Path(where)) if kind == "sqlite" else PostgresStore(where)
next_seq = store._next_seq

def locked_then_wait(connection):
    seq = next_seq(connection)
    print("locked", flush=True)
    sys.stdin.read()  # blocks: the parent kills this process inside the transaction
    return seq

store._next_seq = locked_then_wait
store.insert(DecisionRecord.model_validate_json(Path(record_file).read_text()), EvidenceKeys([b"\\x01" * 32]))
"""


def test_a_writer_killed_mid_append_leaves_a_log_that_verifies(store: DecisionStore, tmp_path: Path) -> None:
    records = demo_log()
    written(store, records[:2])
    record_file = tmp_path / "record.json"
    record_file.write_text(records[2].model_dump_json())
    where = str(store.path) if isinstance(store, SqliteStore) else store._dsn  # type: ignore[attr-defined]
    kind = "sqlite" if isinstance(store, SqliteStore) else "postgres"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, where, str(record_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert [leaf.seq for leaf in store.log_leaves()] == [0, 1]
    assert (
        report([json.loads(line) for line in export(store, RECORD_KEY, RecordQuery(), signer=LOG).lines]).failures == []
    )
    # The retried write appends it once.
    assert store.insert(records[2], RECORD_KEY) is True and store.insert(records[2], RECORD_KEY) is False
    assert [leaf.seq for leaf in store.log_leaves()] == [0, 1, 2]
    assert (
        report([json.loads(line) for line in export(store, RECORD_KEY, RecordQuery(), signer=LOG).lines]).failures == []
    )


def test_the_sqlite_store_is_owner_only_and_refuses_a_world_writable_directory(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "records.sqlite3")
    store.create()
    store.insert(decision(0, "denied"), RECORD_KEY)
    assert (tmp_path / "records.sqlite3").stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(RecordStoreError, match=r"CIBA_RECORD_DB\) is in .*shared, which every user can write to"):
        SqliteStore(shared / "records.sqlite3").create()
    assert not (shared / "records.sqlite3").exists()


# A random log, and a random single alteration of its export -----------------------------------

STATUSES = ["approved", "denied", "expired", "error", "cancelled", "policy"]


def random_log(kinds: list[str], tag: str = "") -> list[DecisionRecord]:
    return [
        decision(n, "approved" if kind == "policy" else kind, f"{n + 1}.00", policy_none=kind == "policy", tag=tag)
        for n, kind in enumerate(kinds)
    ]


def altered(value: Any) -> Any:
    """A different value of the same shape."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value + "x"
        return (moment + timedelta(seconds=1)).isoformat()
    if isinstance(value, list):
        return [*value, value[0]] if value else ["x"]
    if isinstance(value, dict):
        return {**value, "added": "x"}
    return "x"


FIELDS = [name for name in DecisionRecord.model_fields if name != "format"]


@st.composite
def alteration(draw: st.DrawFn, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kind = draw(st.sampled_from(["field", "delete", "swap", "duplicate", "seq", "proof", "checkpoint"]))
    edited = [json.loads(json.dumps(line)) for line in lines]
    at = draw(st.integers(1, len(lines) - 1))
    if kind == "field":
        name = draw(st.sampled_from(FIELDS))
        edited[at][name] = altered(edited[at][name])
    elif kind == "delete":
        del edited[at]
    elif kind == "swap":
        other = draw(st.integers(1, len(lines) - 1).filter(lambda n: n != at))
        edited[at], edited[other] = edited[other], edited[at]
    elif kind == "duplicate":
        edited.insert(at, edited[at])
    elif kind == "seq":
        edited[at]["log"]["seq"] = altered(edited[at]["log"]["seq"])
    elif kind == "proof" and edited[at]["log"]["inclusion"]:
        node = draw(st.integers(0, len(edited[at]["log"]["inclusion"]) - 1))
        edited[at]["log"]["inclusion"][node] = "00" * 32
    else:
        name = draw(st.sampled_from(["size", "root_hash", "timestamp", "signature"]))
        checkpoint = edited[0]["checkpoint"]
        checkpoint[name] = "00" * 32 if name == "root_hash" else altered(checkpoint[name])
    return edited


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(STATUSES), min_size=2, max_size=7), data=st.data())
def test_a_random_single_alteration_of_a_random_log_always_fails(kinds: list[str], data: st.DataObject) -> None:
    lines = [json.loads(line) for line in logged_export(random_log(kinds), LOG)]
    assert report(lines).failures == []
    edited = data.draw(alteration(lines))
    if edited != lines:
        assert report(edited).failures != []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_records_written_before_the_log_join_it(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A table created before the log, its rows as they were written then: the first write adopts them."""
    store: DecisionStore = (
        SqliteStore(tmp_path / "records.sqlite3")
        if kind == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres").new_database())
    )
    older, newer = demo_log()[:2], demo_log()[2:]
    written_before_the_log(store, [(record, RECORD_KEY) for record in older])
    store.create()
    (outside,) = [item.problem for item in export(store, RECORD_KEY, RecordQuery(), signer=LOG).records[:1]]
    assert outside == "the record is not in the decision log (written before the log)"
    assert store.append_unlogged(RECORD_KEY) == []
    for record in newer:
        store.insert(record, RECORD_KEY)
    exported = export(store, RECORD_KEY, RecordQuery(), signer=LOG)
    assert [item.problem for item in exported.records] == [None] * 4
    lines = [json.loads(line) for line in exported.lines]
    assert [(line["record_id"], line["log"]["seq"]) for line in lines[1:]] == [
        (record.record_id, seq) for seq, record in enumerate([*older, *newer])
    ]
    assert report(lines).failures == []


def test_a_record_written_before_the_log_whose_evidence_does_not_open_stays_outside_it(tmp_path: Path) -> None:
    """Its leaf could not hold its ID token: it is named, and the records after it join the log."""
    store = SqliteStore(tmp_path / "records.sqlite3")
    approval, denial = demo_log()[:2]
    written_before_the_log(store, [(approval, EvidenceKeys([b"\x09" * 32])), (denial, RECORD_KEY)])  # a key since lost
    store.create()
    assert store.append_unlogged(RECORD_KEY) == [approval.record_id]
    places = {item.record.record_id: item.seq for item in store.select()}
    assert places == {approval.record_id: None, denial.record_id: 0}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(kinds=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=4), data=st.data())
def test_a_random_single_alteration_of_a_log_written_through_the_store_always_fails(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, kinds: list[str], data: st.DataObject
) -> None:
    """The same property on what each store exports, a fresh store for each example."""
    store: DecisionStore = (
        SqliteStore(tmp_path / f"{uuid.uuid4().hex}.sqlite3")
        if kind == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres").new_database())
    )
    store.create()
    for record in random_log(kinds):
        store.insert(record, RECORD_KEY)
    lines = [json.loads(line) for line in export(store, RECORD_KEY, RecordQuery(), signer=LOG).lines]
    assert report(lines).failures == []
    edited = data.draw(alteration(lines))
    if edited != lines:
        assert report(edited).failures != []


def test_the_log_key_is_read_from_its_text_or_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "log-key.txt"
    key_file.write_text(LOG.public_key_text + "\n")
    for source in (LOG.public_key_text, str(key_file)):
        assert load_log_key(source).public_bytes_raw() == LOG.public_key.public_bytes_raw()
    for wrong in ("not a key", str(tmp_path / "missing.txt"), base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValueError, match="--log-key"):
            load_log_key(wrong)


def test_the_log_key_may_be_url_safe_and_unpadded_but_nothing_else() -> None:
    """`audit log-key` prints standard base64; the same key in base64url without its padding is
    accepted (as pasted from elsewhere); a character of neither alphabet is refused."""
    raw = LOG.public_key.public_bytes_raw()
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert "=" not in url_safe and len(url_safe) % 4 != 0
    assert load_log_key(url_safe).public_bytes_raw() == raw
    # A key whose base64 has '-' and '_' where the standard alphabet has '+' and '/'.
    dashed = next(
        LogSigner(bytes([n]) * 32) for n in range(256) if {"+", "/"} <= set(LogSigner(bytes([n]) * 32).public_key_text)
    )
    text = dashed.public_key_text.replace("+", "-").replace("/", "_")
    assert load_log_key(text).public_bytes_raw() == dashed.public_key.public_bytes_raw()
    # Four stray characters: a lenient decoder would drop them and find the 32 bytes all the same.
    for wrong in (LOG.public_key_text[:10] + "!!!!" + LOG.public_key_text[10:],):
        with pytest.raises(ValueError, match="--log-key"):
            load_log_key(wrong)


def test_an_export_places_only_the_records_its_checkpoint_covers(store: DecisionStore) -> None:
    """Without the log key, the latest stored checkpoint: records written after it carry their
    sequence number alone; a kept checkpoint of the same size needs no proof nodes."""
    records = demo_log()
    for record in records[:2]:
        store.insert(record, RECORD_KEY)
    unsigned = export(store, RECORD_KEY, RecordQuery())
    assert json.loads(unsigned.header)["checkpoint"] is None
    assert [json.loads(item.line)["log"] for item in unsigned.records] == [
        {"seq": seq, "tree_size": None, "inclusion": None} for seq in (0, 1)
    ]
    kept = store.checkpoint(LOG)
    for record in records[2:]:
        store.insert(record, RECORD_KEY)
    exported = export(store, RECORD_KEY, RecordQuery(), since=kept)
    assert exported.log_problems == []
    header = json.loads(exported.header)
    assert Checkpoint.model_validate(header["checkpoint"]) == kept
    assert header["consistency"] == {"old_size": 2, "proof": []}
    places = [json.loads(item.line)["log"] for item in exported.records]
    assert [(place["seq"], place["tree_size"], place["inclusion"] and len(place["inclusion"])) for place in places] == [
        (0, 2, 1),
        (1, 2, 1),
        (2, None, None),
        (3, None, None),
    ]


def test_an_export_names_a_gap_in_the_store_s_log_and_a_kept_checkpoint_beyond_it(
    store: DecisionStore, tmp_path: Path
) -> None:
    records = demo_log()
    written(store, records)
    kept = store.latest_checkpoint()
    assert kept is not None
    with store._connect() as connection:
        connection.execute(
            f"DELETE FROM {TABLE} WHERE record_id = {store.placeholder}",  # noqa: S608
            (records[1].record_id,),
        )
    exported = export(store, RECORD_KEY, RecordQuery(), since=kept)
    assert exported.log_problems == [
        "the store's log has no record at sequence 1",
        "the store's log does not give the signed checkpoint's root at size 4 (rewritten in the store)",
    ]
    assert json.loads(exported.header)["consistency"] == {"old_size": 4, "proof": []}
    smaller = SqliteStore(tmp_path / "smaller.sqlite3")
    smaller.create()
    smaller.insert(records[0], RECORD_KEY)
    smaller.checkpoint(LOG)
    beyond = export(smaller, RECORD_KEY, RecordQuery(), since=kept)
    assert beyond.log_problems == ["the kept checkpoint has 4 records, the log's latest 1"]
    assert json.loads(beyond.header)["consistency"] is None


def test_a_checkpoint_grows_the_tree_from_the_last_one_at_any_size(store: DecisionStore) -> None:
    """The store keeps the last checkpoint's frontier (one subtree root per binary digit of its
    size: two at size 3) and extends it: the next root is the whole log's."""
    records = [decision(n, "denied") for n in range(5)]
    for record in records[:3]:
        store.insert(record, RECORD_KEY)
    kept = store.checkpoint(LOG)
    for record in records[3:]:
        store.insert(record, RECORD_KEY)
    latest = store.checkpoint(LOG)
    assert (kept.size, latest.size) == (3, 5)
    assert latest.root == Tree([leaf.leaf_hash for leaf in store.log_leaves()]).root
    exported = export(store, RECORD_KEY, RecordQuery(), since=kept)
    assert report([json.loads(line) for line in exported.lines], since=kept).failures == []


def test_a_leaf_rewritten_after_a_checkpoint_does_not_enter_the_next_one(store: DecisionStore) -> None:
    """The next checkpoint extends the last one's frontier, not the leaves the store holds now: a
    history rewritten in the store is never signed again, and export names the rewrite."""
    records = [decision(n, "denied") for n in range(5)]
    for record in records[:3]:
        store.insert(record, RECORD_KEY)
    kept = store.checkpoint(LOG)
    genuine = [leaf.leaf_hash for leaf in store.log_leaves()]
    with store._connect() as connection:
        connection.execute(
            f"UPDATE {TABLE} SET leaf_hash = {store.placeholder} WHERE seq = 0",  # noqa: S608
            ("ee" * 32,),
        )
    for record in records[3:]:
        store.insert(record, RECORD_KEY)
    latest = store.checkpoint(LOG)
    appended = [leaf.leaf_hash for leaf in store.log_leaves()][3:]
    assert latest.root == Tree([*genuine, *appended]).root
    assert verify_consistency(3, 5, kept.root, latest.root, consistency_proof([*genuine, *appended], 3))
    assert export(store, RECORD_KEY, RecordQuery()).log_problems == [
        "the store's log does not give the signed checkpoint's root at size 5 (rewritten in the store)"
    ]


def test_a_record_whose_place_was_erased_in_the_store_is_outside_the_log(store: DecisionStore) -> None:
    records = demo_log()
    written(store, records)
    with store._connect() as connection:
        connection.execute(
            f"UPDATE {TABLE} SET leaf_hash = NULL WHERE record_id = {store.placeholder}",  # noqa: S608
            (records[1].record_id,),
        )
    exported = export(store, RECORD_KEY, RecordQuery())
    assert [item.problem for item in exported.records] == [
        None,
        "the record is not in the decision log (written before the log)",
        None,
        None,
    ]
    assert exported.log_problems == [
        "the store's log has no record at sequence 1",
        "the store's log does not give the signed checkpoint's root at size 4 (rewritten in the store)",
    ]

"""`temporal-ciba audit`: export decision records as JSON Lines, and verify an export offline.

Export opens each record's evidence with the record key and writes the ID token in clear, with
the record's place in the decision log (records.log) and a signed checkpoint: the auditor then
needs no secret of the operator's, only the OP's public keys and the log's public key
(docs/operations/decision-records.md). Verify checks:

1. the checkpoint's signature under the log key, and, against a checkpoint the auditor kept,
   that the log only grew since (a consistency proof);
2. each record's place: its leaf (every field, the ID token included) at its sequence number
   in the checkpoint's tree, sequence numbers increasing, and in a complete export every
   position present; its record id recomputed;
3. the ID token's signature, against the OP's keys (a JWKS file, or fetched from jwks_uri), and
   its claims against the record: iss, aud (our client), sub, acr, amr, auth_time, the
   auth_req_id claim where present, and iat within the decision's time window;
4. the action: the request digest recomputed from the recorded binding message, scope,
   acr_values, authorization_details and action digest, and every `actionDigest` in the
   authorization_details equal to the recorded action digest;
5. an approval carries its evidence unless a policy let it through without asking anyone (and
   then it names no approver); no record id, auth_req_id or ID token appears twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from temporal_ciba.ciba import (
    ASYMMETRIC_ALGS,
    AUTH_REQ_ID_CLAIM,
    KeyNotFound,
    PublicKey,
    TokenRejected,
    ValidationPolicy,
    fetch_provider_metadata,
    parse_jwks,
    require_secure_url,
    verify_signature,
)
from temporal_ciba.records._evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records._log import (
    Checkpoint,
    Consistency,
    ExportHeader,
    LogPlace,
    LogSigner,
    record_leaf_hash,
)
from temporal_ciba.records._merkle import Tree, consistency_proof, verify_consistency, verify_inclusion
from temporal_ciba.records._model import DecisionRecord, canonical_json, request_digest
from temporal_ciba.records._store import DecisionStore, RecordQuery

# Clock skew allowed between the OP and the worker when the token's iat is compared with the
# decision's recorded times.
LEEWAY_SECONDS = 60
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Every asymmetric algorithm: an export may span years of OP configurations.
AUDIT_POLICY = ValidationPolicy(allowed_algs=tuple(sorted(ASYMMETRIC_ALGS)))


@dataclass(frozen=True)
class Exported:
    """One record line of an export; `problem` when the record did not open or is not the one written."""

    line: str
    record: DecisionRecord
    problem: str | None = None


@dataclass(frozen=True)
class Export:
    """An export: its header line (the checkpoint), its record lines, and what is wrong with the store's log."""

    header: str
    records: list[Exported]
    log_problems: list[str]

    @property
    def lines(self) -> list[str]:
        return [self.header, *(item.line for item in self.records)]


def export(
    store: DecisionStore,
    keys: EvidenceKeys,
    query: RecordQuery,
    *,
    signer: LogSigner | None = None,
    since: Checkpoint | None = None,
) -> Export:
    """The matching records with their evidence decrypted and their place in the log, in log order.

    With `signer` (the log key), a checkpoint of the log as it is now is signed first; without,
    the latest stored one is used. Each record carries its inclusion proof in that checkpoint's
    tree; the header carries the checkpoint, and with `since` a consistency proof from that earlier
    checkpoint. A record that does not open (evidence, leaf hash or MAC: altered in the store, or
    a key not configured) is exported as stored, without its evidence, and named in `problem`."""
    checkpoint = store.checkpoint(signer) if signer is not None else store.latest_checkpoint()
    leaves = store.log_leaves()
    problems: list[str] = []
    for expected, leaf in enumerate(leaves):
        if leaf.seq != expected:
            problems.append(f"the store's log has no record at sequence {expected}")
            break
    size = checkpoint.size if checkpoint is not None else 0
    hashes = [leaf.leaf_hash for leaf in leaves[:size]]
    tree = Tree(hashes)
    if checkpoint is not None and (len(hashes) != size or tree.root != checkpoint.root):
        problems.append(
            f"the store's log does not give the signed checkpoint's root at size {size} (rewritten in the store)"
        )
    consistency = None
    if since is not None:
        if since.size > size:
            problems.append(f"the kept checkpoint has {since.size} records, the log's latest {size}")
        else:
            between = consistency_proof(hashes, since.size) if len(hashes) == size else []
            consistency = Consistency(old_size=since.size, proof=[node.hex() for node in between])
    header = ExportHeader(checkpoint=checkpoint, complete=query.selects_all, consistency=consistency)
    exported = []
    for stored in store.select(query):
        try:
            record, problem = stored.open(keys), None
        except EvidenceError as exc:
            record, problem = stored.record, str(exc)
        place = None
        if stored.seq is not None:
            proof = tree.inclusion_proof(stored.seq) if stored.seq < tree.size else None
            place = LogPlace(
                seq=stored.seq,
                tree_size=size if proof is not None else None,
                inclusion=[node.hex() for node in proof] if proof is not None else None,
            )
        line = record.model_dump(mode="json")
        if place is not None:
            line["log"] = place.model_dump(mode="json")
        exported.append(Exported(canonical_json(line), record, problem))
    return Export(header.model_dump_json(), exported, problems)


@dataclass(frozen=True)
class Failure:
    """A line of the export (or a position of the log) that does not verify, and why (the first reason found)."""

    line_number: int | None
    subject: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line_number}: " if self.line_number is not None else ""
        return f"{where}{self.subject}: {self.reason}"


@dataclass
class Report:
    """What verify found: the failures, and whose evidence each verified record rests on."""

    failures: list[Failure] = field(default_factory=list)
    # Approvals whose ID token, signed by the OP, verified: the OP attests a person approved.
    signed_by_op: list[str] = field(default_factory=list)
    # Approvals a policy let through without asking anyone: only the log attests them.
    policy_approved: list[str] = field(default_factory=list)
    # Every other outcome (denied, expired, cancelled, rejected, error): only the log attests them.
    log_only: dict[str, list[str]] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    records: int = 0

    def summary(self) -> list[str]:
        """The report's lines for standard error."""
        size = self.checkpoint.size if self.checkpoint is not None else 0
        at = f", checkpoint signed {self.checkpoint.timestamp.isoformat()}" if self.checkpoint else ""
        lines = [f"{self.records} record(s) of a log of {size}{at}; {len(self.failures)} failure(s)"]
        lines.append(f"  approved, signed by the OP (an ID token verified against its keys): {len(self.signed_by_op)}")
        lines.append(
            f"  approved by a policy without asking anyone (only the log attests it): {len(self.policy_approved)}"
        )
        others = ", ".join(f"{status} {len(ids)}" for status, ids in sorted(self.log_only.items())) or "none"
        lines.append(f"  other outcomes (only the log attests them): {others}")
        return lines


def verify_export(
    lines: Iterable[str],
    keys: Sequence[PublicKey],
    log_key: Ed25519PublicKey,
    *,
    since: Checkpoint | None = None,
    allow_filtered: bool = False,
) -> Report:
    """Verify an export: its checkpoint's signature, each record and its place, the log's continuity.

    - the header's checkpoint is signed by `log_key`; with `since` (a checkpoint the auditor kept,
      signed by the same key), the header's consistency proof shows the new tree extends it;
    - each record: its id recomputed, its action digest, its evidence against the OP's `keys`,
      and its leaf (every field) at its sequence number in the checkpoint's tree;
    - sequence numbers increase; no record id, auth_req_id or ID token appears twice; in a
      complete export (unless `allow_filtered`), every position of the log is there."""
    report = Report()
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        report.failures.append(Failure(None, "export", "empty: no checkpoint, no record"))
        return report
    header_number, header_line = numbered[0]
    try:
        header = ExportHeader.model_validate_json(header_line)
    except ValidationError as exc:
        report.failures.append(
            Failure(header_number, "export", f"the first line is not an export header: {exc.errors()[0]['msg']}")
        )
        return report
    report.checkpoint = checkpoint = header.checkpoint
    root = _checked_checkpoint(header, log_key, since, report.failures, header_number)
    size = checkpoint.size if checkpoint is not None else 0
    seen: dict[str, dict[str, str]] = {"record id": {}, "auth_req_id": {}, "ID token": {}}
    positions: set[int] = set()
    last_seq = -1
    for number, line in numbered[1:]:
        report.records += 1
        record, place, malformed = _parse_line(line)
        if record is None:
            report.failures.append(Failure(number, "record ?", malformed or "malformed"))
            continue
        subject = f"record {record.record_id}" + (f" (sequence {place.seq})" if place is not None else "")
        reason = _check_place(record, place, size, root, last_seq, positions)
        reason = reason or check_record(record, keys)
        for name, value in (
            ("record id", record.record_id),
            ("auth_req_id", record.auth_req_id),
            ("ID token", record.id_token),
        ):
            if value is not None and reason is None and value in seen[name]:
                reason = f"its {name} is also {seen[name][value]}'s: two records of one decision"
            if value is not None:
                seen[name].setdefault(value, f"record {record.record_id}")
        if place is not None:
            positions.add(place.seq)
            last_seq = max(last_seq, place.seq)
        if reason is not None:
            report.failures.append(Failure(number, subject, reason))
        else:
            _classify(record, report)
    if checkpoint is not None and not (allow_filtered and not header.complete):
        for first, last in _ranges(sorted(set(range(size)) - positions)):
            span = f"sequence {first}" if first == last else f"sequences {first}-{last}"
            why = "missing from the export (deleted?)"
            if not header.complete:
                why = "not in this filtered export (pass --allow-filtered to verify a selection)"
            report.failures.append(Failure(None, span, why))
    return report


def _checked_checkpoint(
    header: ExportHeader,
    log_key: Ed25519PublicKey,
    since: Checkpoint | None,
    failures: list[Failure],
    number: int,
) -> bytes | None:
    """The checkpoint's root if it verifies (with the kept one), else None with the failures added."""
    checkpoint = header.checkpoint
    if checkpoint is None:
        failures.append(Failure(number, "checkpoint", "the export carries no signed checkpoint"))
        return None
    if not checkpoint.verifies(log_key):
        failures.append(Failure(number, f"checkpoint {checkpoint.size}", "not signed by the log key given"))
        return None
    try:
        root = checkpoint.root
    except ValueError:
        failures.append(Failure(number, f"checkpoint {checkpoint.size}", "its root hash is not hex"))
        return None
    if since is None:
        return root
    subject = f"sequence {since.size}"
    if not since.verifies(log_key):
        failures.append(Failure(None, "kept checkpoint", "not signed by the log key given"))
    elif since.size > checkpoint.size:
        failures.append(
            Failure(
                number,
                subject,
                f"the log shrank: the kept checkpoint has {since.size} records, this one {checkpoint.size}",
            )
        )
    elif since.size == checkpoint.size and since.root_hash != checkpoint.root_hash:
        failures.append(
            Failure(number, subject, "a forked log: two checkpoints of this size with different roots, both signed")
        )
    elif since.size < checkpoint.size:
        consistency = header.consistency
        proof = _hashes(consistency.proof) if consistency is not None and consistency.old_size == since.size else None
        if proof is None:
            failures.append(
                Failure(
                    number,
                    subject,
                    "the export has no consistency proof from the kept checkpoint (export --since-checkpoint)",
                )
            )
        elif not verify_consistency(since.size, checkpoint.size, since.root, root, proof):
            failures.append(
                Failure(
                    number,
                    subject,
                    "the log is not the kept checkpoint's with records appended: "
                    "something before it was removed, reordered or rewritten (or the log forked)",
                )
            )
    return root


def _hashes(nodes: Sequence[str]) -> list[bytes] | None:
    try:
        return [bytes.fromhex(node) for node in nodes]
    except ValueError:
        return None


def _check_place(
    record: DecisionRecord,
    place: LogPlace | None,
    size: int,
    root: bytes | None,
    last_seq: int,
    positions: set[int],
) -> str | None:
    """Why the record's place in the log does not verify, or None."""
    if place is None:
        return "it has no place in the log (no sequence number)"
    if place.seq in positions:
        return f"sequence {place.seq} appears twice (a record inserted?)"
    if place.seq < last_seq:
        return f"out of order: sequence {place.seq} after {last_seq} (reordered?)"
    if root is None:
        return None  # the checkpoint failed, reported once for the whole export
    if place.seq >= size or place.inclusion is None:
        return f"sequence {place.seq} is after the checkpoint (size {size}): not covered by a signed checkpoint"
    proof = _hashes(place.inclusion)
    if place.tree_size != size or proof is None:
        return "its inclusion proof is not for the export's checkpoint"
    if not verify_inclusion(place.seq, size, record_leaf_hash(record), proof, root):
        return "not in the log as it stands: altered, moved or inserted (its inclusion proof fails)"
    if record.expected_record_id() != record.record_id:
        return "its record id is not the one its workflow, run and auth_req_id give"
    return None


def _parse_line(line: str) -> tuple[DecisionRecord | None, LogPlace | None, str | None]:
    try:
        document = json.loads(line)
        if not isinstance(document, dict):
            return None, None, "not a decision record: not a JSON object"
        log = document.pop("log", None)
        place = LogPlace.model_validate(log) if log is not None else None
        return DecisionRecord.model_validate(document), place, None
    except ValueError as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
        return None, None, f"not a decision record: {errors[0]['msg']}"


def _classify(record: DecisionRecord, report: Report) -> None:
    if record.status != "approved":
        report.log_only.setdefault(record.status, []).append(record.record_id)
    elif record.policy is not None and record.policy.approval == "none":
        report.policy_approved.append(record.record_id)
    else:
        report.signed_by_op.append(record.record_id)


def _ranges(numbers: list[int]) -> Iterator[tuple[int, int]]:
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None and previous is not None:
            yield start, previous
        start = previous = number
    if start is not None and previous is not None:
        yield start, previous


def load_jwks(source: str) -> list[PublicKey]:
    """Keys from a JWKS file, or from an https URL (a jwks_uri; http only on loopback)."""
    if source.startswith(("https://", "http://")):
        url = require_secure_url(source, "--jwks")
        response = httpx.get(url, timeout=HTTP_TIMEOUT, follow_redirects=False)
        response.raise_for_status()
        document = response.json()
    else:
        document = json.loads(Path(source).read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{source}: not a JWKS (RFC 7517 §5)")
    return parse_jwks(document)


async def discover_jwks(issuers: Iterable[str]) -> list[PublicKey]:
    """The current keys of each issuer, from its discovery document's jwks_uri."""
    keys: list[PublicKey] = []
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        for issuer in sorted(set(issuers)):
            metadata = await fetch_provider_metadata(http, require_secure_url(issuer, "issuer"), timeout=HTTP_TIMEOUT)
            response = await http.get(metadata.jwks_uri)
            response.raise_for_status()
            keys += parse_jwks(response.json())
    return keys


def parse_export(lines: Iterable[str]) -> Iterator[tuple[int, DecisionRecord | None, str | None]]:
    """(line number, record, why it does not parse) for each record line (the header skipped)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip() or '"format":"temporal-ciba.decision-export.v1"' in line.replace(" ", ""):
            continue
        record, _, malformed = _parse_line(line)
        yield number, record, malformed


def verify(
    lines: Iterable[str], keys: Sequence[PublicKey], log_key: Ed25519PublicKey, **options: Any
) -> Iterator[Failure]:
    """Each failure `verify_export` finds."""
    yield from verify_export(lines, keys, log_key, **options).failures


def check_record(record: DecisionRecord, keys: Sequence[PublicKey]) -> str | None:
    """Why `record` does not verify, or None."""
    return _check_action(record) or _check_evidence(record, keys)


def _check_action(record: DecisionRecord) -> str | None:
    recomputed = request_digest(
        login_hint=record.login_hint,
        binding_message=record.binding_message,
        scope=record.scope,
        acr_values=record.acr_values,
        authorization_details=record.authorization_details,
        action_digest=record.action_digest,
    )
    if recomputed != record.request_digest:
        return "the action (binding message, authorization_details, scope or action digest) was altered"
    for entry in record.authorization_details or []:
        if "actionDigest" in entry and entry["actionDigest"] != record.action_digest:
            return "an authorization_details entry names another action digest"
    return None


def _check_evidence(record: DecisionRecord, keys: Sequence[PublicKey]) -> str | None:
    if record.policy is not None and record.policy.approval == "none" and (record.id_token or record.sub):
        return "a policy let it through without asking anyone, yet it names an approver"
    if record.id_token is None:
        asked = record.policy is None or record.policy.approval != "none"
        return "an approval without its ID token (evidence)" if record.status == "approved" and asked else None
    try:
        _, claims = verify_signature(record.id_token, keys, AUDIT_POLICY)
    except KeyNotFound as exc:
        return f"no key of the OP verifies it: {exc.reason}"
    except TokenRejected as exc:
        return f"the ID token does not verify: {exc.reason}"
    return _check_claims(record, claims)


def _check_claims(record: DecisionRecord, claims: dict[str, Any]) -> str | None:
    expected: dict[str, Any] = {"iss": record.issuer, "sub": record.sub, "acr": record.acr}
    for name, value in expected.items():
        if claims.get(name) != value:
            return f"the ID token's {name} differs from the record's"
    if "amr" in claims and claims["amr"] != record.amr:
        return "the ID token's amr differs from the record's"
    if "auth_time" in claims and claims["auth_time"] != record.auth_time:
        return "the ID token's auth_time differs from the record's"
    if AUTH_REQ_ID_CLAIM in claims and claims[AUTH_REQ_ID_CLAIM] != record.auth_req_id:
        return "the ID token answers another auth_req_id"
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    if record.client_id not in audiences:
        return "the ID token is not for the recorded client"
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or isinstance(iat, bool):
        return "the ID token has no iat"
    if record.requested_at is not None and iat < record.requested_at.timestamp() - LEEWAY_SECONDS:
        return "the ID token was issued before the request (another decision's)"
    if iat > record.decided_at.timestamp() + LEEWAY_SECONDS:
        return "the ID token was issued after the decision (another decision's)"
    return None

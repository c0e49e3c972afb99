"""`temporal-ciba audit`: export decision records as JSON Lines, and verify an export offline.

Export opens each record's evidence with the record key and writes the ID token in clear: the
auditor then needs no secret of the operator's, only the OP's public keys, which they fetch
themselves (docs/operations/decision-records.md). Verify re-checks each record on its own:

1. the ID token's signature, against the OP's keys (a JWKS file, or fetched from jwks_uri);
2. its claims against the record: iss, aud (our client), sub, acr, amr, auth_time, the
   auth_req_id claim where present, and iat within the decision's time window;
3. the action: the request digest recomputed from the recorded binding message, scope,
   acr_values, authorization_details and action digest, and every `actionDigest` in the
   authorization_details equal to the recorded action digest;
4. an approval carries its evidence (unless the policy let the action through without asking);
   no record id appears twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
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
from temporal_ciba.records._model import DecisionRecord, request_digest
from temporal_ciba.records._store import DecisionStore, RecordQuery

# Clock skew allowed between the OP and the worker when the token's iat is compared with the
# decision's recorded times.
LEEWAY_SECONDS = 60
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Every asymmetric algorithm: an export may span years of OP configurations.
AUDIT_POLICY = ValidationPolicy(allowed_algs=tuple(sorted(ASYMMETRIC_ALGS)))


@dataclass(frozen=True)
class Exported:
    """One line of an export; `problem` when the record's evidence did not open."""

    line: str
    record: DecisionRecord
    problem: str | None = None


def export(store: DecisionStore, keys: EvidenceKeys, query: RecordQuery) -> Iterator[Exported]:
    """The matching records with their evidence decrypted, oldest decision first.

    A record whose evidence does not open (altered in the store, or a key not configured) is
    exported without it, so `audit verify` reports it too."""
    for stored in store.select(query):
        try:
            record, problem = stored.open(keys), None
        except EvidenceError as exc:
            record, problem = stored.record, str(exc)
        yield Exported(record.model_dump_json(), record, problem)


@dataclass(frozen=True)
class Failure:
    """A line of the export that does not verify, and why (the first reason found)."""

    line_number: int
    record_id: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_number}: record {self.record_id}: {self.reason}"


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
    """(line number, record, why it does not parse) for each non-empty line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, DecisionRecord.model_validate_json(line), None
        except ValidationError as exc:
            yield number, None, f"not a decision record: {exc.errors()[0]['msg']}"


def verify(lines: Iterable[str], keys: Sequence[PublicKey]) -> Iterator[Failure]:
    """Each record of the export that does not verify."""
    seen: set[str] = set()
    for number, record, malformed in parse_export(lines):
        if record is None:
            yield Failure(number, "?", malformed or "malformed")
            continue
        reason = check_record(record, keys)
        if reason is None and record.record_id in seen:
            reason = "the record id appears twice in the export"
        seen.add(record.record_id)
        if reason is not None:
            yield Failure(number, record.record_id, reason)


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

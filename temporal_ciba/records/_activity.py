"""`ciba.record_decision`: the activity that writes an approval's decision record.

The approval state machine (temporal_ciba._approval) runs it once its outcome is final, before it
returns the outcome: the record is written before anyone acts on the decision. A retry, or a
replay after a worker crash, writes the same record id with the same content: a no-op.

A worker can die after the write and before the workflow task that ran it completes. The
approval then decides again, and differently: the OP no longer redeems its auth_req_id
(invalid_grant), or its deadline has passed. The record holds the first decision, so the
activity answers with the outcome kept beside it (RecordedDecision.outcome), and the approval
returns that: record and outcome agree, and an approval's tokens are not lost with the worker. The
write appends the record to the decision log in the same transaction (records.store); the
recorder signs a checkpoint of the log every CHECKPOINT_EVERY_RECORDS records it writes or
CHECKPOINT_EVERY_SECONDS after the first one not yet signed, and when the worker stops
(`checkpoint_now`, from CibaPlugin).
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba._models import ApprovalOutcome
from temporal_ciba.crypto import SealError, TokenSealer, id_token_context
from temporal_ciba.records._evidence import EvidenceError, EvidenceKeys
from temporal_ciba.records._log import CHECKPOINT_EVERY_RECORDS, CHECKPOINT_EVERY_SECONDS, LogSigner
from temporal_ciba.records._model import RecordDecisionInput, RecordedDecision, auth_req_record_id
from temporal_ciba.records._store import DecisionStore, RecordConflict, RecordStoreError

RECORD_CONFLICT = "RecordConflict"
logger = logging.getLogger(__name__)


class DecisionRecorder:
    """Writes decision records to `store`, their evidence encrypted under `keys`, and signs the log's checkpoints.

    `sealer` opens the ID token the validating activity sealed (the worker's CIBA_TOKEN_KEY);
    `signer` holds the log signing key (CIBA_LOG_SIGNING_KEY)."""

    def __init__(self, store: DecisionStore, keys: EvidenceKeys, sealer: TokenSealer, signer: LogSigner) -> None:
        self._store = store
        self._keys = keys
        self._sealer = sealer
        self._signer = signer
        self._created = False
        self._lock = asyncio.Lock()
        # Records written since this recorder's last checkpoint, and when the first of them was.
        self._unsigned = 0
        self._unsigned_since = 0.0

    @property
    def store(self) -> DecisionStore:
        return self._store

    @activity.defn(name="ciba.record_decision")
    async def record_decision(self, input: RecordDecisionInput) -> RecordedDecision:
        """Write the record of `input.outcome` exactly once; its id, and the decision on record if another."""
        id_token = self._open_id_token(input)
        record = input.record(id_token)
        await self._ready()
        try:
            written = await asyncio.to_thread(
                self._store.insert, record, self._keys, outcome=input.outcome.model_dump_json()
            )
        except RecordConflict as exc:
            # A worker died after writing this approval's record, before the workflow task that
            # wrote it completed; the approval has decided again. The first decision stands.
            on_record = await self._kept_outcome(record.record_id, record.workflow_id, record.auth_req_id)
            if on_record is None:  # retrying cannot help: the store holds another decision
                raise ApplicationError(str(exc), type=RECORD_CONFLICT, non_retryable=True) from None
            activity.logger.warning(
                "decision record %s already holds this approval's decision (%s, not %s): the approval returns it",
                record.record_id,
                on_record.status,
                record.status,
            )
            return RecordedDecision(record_id=record.record_id, outcome=on_record)
        activity.logger.info(
            "decision record %s %s (%s)", record.record_id, "written" if written else "already written", record.status
        )
        if written:
            if self._unsigned == 0:
                self._unsigned_since = time.monotonic()
            self._unsigned += 1
        if self._checkpoint_due():
            try:
                await self.checkpoint_now()
            except RecordStoreError as exc:  # recorded all the same; the next record or tick signs it
                activity.logger.warning("the decision log's checkpoint was not signed: %s", exc)
        return RecordedDecision(record_id=record.record_id)

    async def decision_on_record(self, workflow_id: str, first_run_id: str, auth_req_id: str) -> ApprovalOutcome | None:
        """The outcome on record for this approval's auth_req_id, if its decision is recorded.

        The redeem asks before its token request: a decision on record was taken by an earlier
        workflow task that never completed, and asking the OP again would meet invalid_grant,
        which revokes the tokens the first request got (RFC 6749 §4.1.2's rule for a reused
        code, as OPs apply it to a reused auth_req_id). RecordStoreError when the store cannot
        say: the redeem is retried rather than risk that."""
        await self._ready()
        record_id = auth_req_record_id(workflow_id=workflow_id, first_run_id=first_run_id, auth_req_id=auth_req_id)
        return await self._kept_outcome(record_id, workflow_id, auth_req_id)

    async def _kept_outcome(self, record_id: str, workflow_id: str, auth_req_id: str | None) -> ApprovalOutcome | None:
        """The outcome kept beside record `record_id`, if the record holds one of this approval.

        Only one that opens under the record key (bound to its record), belongs to this
        approval's workflow and auth_req_id, and states the record's decision."""
        try:
            found = await asyncio.to_thread(self._store.recorded_outcome, record_id, self._keys)
            if found is None:
                return None
            stored, outcome_json = found
            outcome = ApprovalOutcome.model_validate_json(outcome_json)
        except EvidenceError as exc:
            activity.logger.warning("decision record %s: its kept outcome does not open: %s", record_id, exc)
            return None
        except ValueError as exc:  # by its type alone: a ValidationError quotes the outcome's fields
            activity.logger.warning(
                "decision record %s: its kept outcome does not open: %s", record_id, type(exc).__name__
            )
            return None
        if (outcome.workflow_id, outcome.auth_req_id, outcome.status) != (workflow_id, auth_req_id, stored.status):
            activity.logger.warning("decision record %s: its kept outcome is not its decision", record_id)
            return None
        return outcome

    async def _ready(self) -> None:
        """Create the store's tables once, and append to the log the records written before it."""
        async with self._lock:
            if not self._created:
                await asyncio.to_thread(self._store.create)
                left_out = await asyncio.to_thread(self._store.append_unlogged, self._keys)
                for record_id in left_out:
                    activity.logger.warning(
                        "decision record %s, written before the log, stays outside it: its evidence does not open",
                        record_id,
                    )
                self._created = True

    def _checkpoint_due(self) -> bool:
        if self._unsigned == 0:
            return False
        waited = time.monotonic() - self._unsigned_since
        return self._unsigned >= CHECKPOINT_EVERY_RECORDS or waited >= CHECKPOINT_EVERY_SECONDS

    async def checkpoint_now(self) -> None:
        """Sign a checkpoint of the log if this recorder wrote records since its last one."""
        if self._unsigned == 0:
            return
        unsigned, self._unsigned = self._unsigned, 0
        try:
            await asyncio.to_thread(self._store.checkpoint, self._signer)
        except BaseException:
            self._unsigned += unsigned
            raise

    async def checkpoint_every(self, seconds: float = CHECKPOINT_EVERY_SECONDS) -> None:
        """Sign a checkpoint every `seconds` while records are written (runs until cancelled)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.checkpoint_now()
            except Exception as exc:  # the store down: the next record or tick signs it
                logger.warning("the decision log's checkpoint was not signed: %s", exc)

    def _open_id_token(self, input: RecordDecisionInput) -> str | None:
        auth_req_id = input.outcome.auth_req_id
        if input.sealed_id_token is None or auth_req_id is None:
            return None
        context = id_token_context(auth_req_id, activity.info().workflow_id or "")
        try:
            return self._sealer.unseal(input.sealed_id_token, context=context)
        except SealError:
            # A token key rotated mid-approval: the decision is recorded, without its evidence
            # (`audit verify` reports an approval without evidence).
            activity.logger.warning("decision record for auth_req_id=%s: the ID token did not open", auth_req_id)
            return None

"""`ciba.record_decision`: the activity that writes an approval's decision record.

The approval state machine (temporal_ciba._approval) runs it once its outcome is final, before it
returns the outcome: the record is written before anyone acts on the decision. A retry, or a
replay after a worker crash, writes the same record id with the same content: a no-op.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_ciba.crypto import SealError, TokenSealer, id_token_context
from temporal_ciba.records._evidence import EvidenceKeys
from temporal_ciba.records._model import RecordDecisionInput
from temporal_ciba.records._store import DecisionStore, RecordConflict

RECORD_CONFLICT = "RecordConflict"


class DecisionRecorder:
    """Writes decision records to `store`, their evidence encrypted under `keys`.

    `sealer` opens the ID token the validating activity sealed (the worker's CIBA_TOKEN_KEY)."""

    def __init__(self, store: DecisionStore, keys: EvidenceKeys, sealer: TokenSealer) -> None:
        self._store = store
        self._keys = keys
        self._sealer = sealer
        self._created = False
        self._lock = asyncio.Lock()

    @activity.defn(name="ciba.record_decision")
    async def record_decision(self, input: RecordDecisionInput) -> str:
        """Write the record of `input.outcome` exactly once; its id."""
        id_token = self._open_id_token(input)
        record = input.record(id_token)
        async with self._lock:
            if not self._created:
                await asyncio.to_thread(self._store.create)
                self._created = True
        try:
            written = await asyncio.to_thread(self._store.insert, record, self._keys)
        except RecordConflict as exc:
            # Retrying cannot help: the store holds another decision under this id.
            raise ApplicationError(str(exc), type=RECORD_CONFLICT, non_retryable=True) from None
        activity.logger.info(
            "decision record %s %s (%s)", record.record_id, "written" if written else "already written", record.status
        )
        return record.record_id

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

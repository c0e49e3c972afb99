"""CibaPlugin: what a Temporal client and worker need for approvals, added to what they have.

    client = await Client.connect(address, plugins=[CibaPlugin(payload_key=key)])
    worker = Worker(client, task_queue=..., workflows=[MyAgent], plugins=[CibaPlugin.from_env()])

On a client it adds encryption: the caller's payload converter is kept (the SDK's default one
is replaced by pydantic's, which our models need) and the AES-GCM codec is chained after the
caller's own codec, so compression or a KMS codec still runs, inside the encryption. A payload
the codec refuses (plaintext, another key, altered, another workflow's) decodes to a refusal
marker, which the payload converter refuses for the one value it stood for (`RefusesMarked`):
a signal is dropped, an update rejected, and a workflow task never fails because someone sent
what the key did not seal. On a
worker it registers the approval workflow and its activities, built from the OP settings and
closed when the last worker using them stops, and lets workflow code import `temporal_ciba`
without `imports_passed_through()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultPayloadConverter,
    PayloadCodec,
    PayloadConverter,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, WorkflowInboundInterceptor, WorkflowInterceptorClassInput, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from temporal_ciba._activities import CibaActivities
from temporal_ciba._models.signals import Notification
from temporal_ciba._policy import PolicySource
from temporal_ciba._settings import (
    ConfigError,
    OPSettings,
    RecordSettings,
    WorkerSettings,
    decode_payload_key,
    load_settings,
)
from temporal_ciba._workflow import PLUGIN_MARKER, CibaApprovalWorkflow
from temporal_ciba.ciba import CibaClient, CibaError, DiscoveryError, TransportError
from temporal_ciba.crypto import AesGcmCodec, NotificationProofs, NotificationTokens, TokenSealer, refusal
from temporal_ciba.records import DecisionRecorder, EvidenceKeys, LogSigner, RecordStoreError, open_store

logger = logging.getLogger("temporal_ciba.worker")

PLUGIN_NAME = "temporal_ciba.CibaPlugin"
# How long a starting worker waits for the OP's discovery document before it says the OP is
# unreachable and starts anyway (the approvals retry until the OP answers).
START_CHECK_SECONDS = 5.0
# Workflow code of the package (models, the workflow, require_approval) is deterministic; the
# sandbox need not re-import it (nor httpx, which the models' module pulls in) per workflow run.
PASSTHROUGH_MODULES = ("temporal_ciba",)


class ChainedCodec(PayloadCodec, WithSerializationContext):
    """Codecs applied in order on encode and in reverse on decode."""

    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        self.codecs = tuple(codecs)

    def with_context(self, context: SerializationContext) -> ChainedCodec:
        """Each codec that uses the serialization context (ours: the workflow id) gets it."""
        return ChainedCodec(
            [
                codec.with_context(context) if isinstance(codec, WithSerializationContext) else codec
                for codec in self.codecs
            ]
        )

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in self.codecs:
            result = await codec.encode(result)
        return result

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in reversed(self.codecs):
            result = await codec.decode(result)
        return result


def _has_codec(codec: PayloadCodec | None, key_id: str) -> bool:
    if isinstance(codec, AesGcmCodec):
        return codec.key_id == key_id
    if isinstance(codec, ChainedCodec):
        return any(_has_codec(inner, key_id) for inner in codec.codecs)
    return False


# The ApplicationError type a refused payload raises where a workflow would otherwise fail its task.
PAYLOAD_REFUSED = "CibaPayloadRefused"


class RefusesMarked(PayloadConverter):
    """A payload converter that refuses the codec's refusal markers (temporal_ciba.crypto._codec).

    Mixed into the converter a client or worker has (`refusing_converter_class`). For a value of
    a Notification type (the ping and push signals) a marker becomes `Notification.undecodable`,
    which the approval drops and counts. For any other value it raises: an ApplicationError
    (non-retryable, type CibaPayloadRefused, its cause the PayloadDecryptionError) for a payload
    nobody's key sealed, so the SDK drops a signal, rejects an update, and fails a workflow whose
    start input it is rather than its task; the PayloadDecryptionError itself for a payload
    sealed under another key id, which a worker with the wrong CIBA_PAYLOAD_KEY would see on
    every payload (its tasks fail and retry until the key is right, and no run ends for it)."""

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        hints = list(type_hints or [])
        refused = [(index, error) for index, payload in enumerate(payloads) if (error := refusal(payload)) is not None]
        if not refused:
            return super().from_payloads(payloads, type_hints)  # type: ignore[safe-super]
        index, error = refused[0]
        hint = hints[index] if index < len(hints) else None
        if len(payloads) == 1 and isinstance(hint, type) and issubclass(hint, Notification):
            return [hint.undecodable(str(error))]
        if error.kind == "other_key":
            raise error
        raise ApplicationError(str(error), type=PAYLOAD_REFUSED, non_retryable=True) from error


_REFUSING: dict[type[PayloadConverter], type[PayloadConverter]] = {}


def refusing_converter_class(base: type[PayloadConverter]) -> type[PayloadConverter]:
    """`base` with RefusesMarked mixed in (itself if it has it already); one class per base."""
    if issubclass(base, RefusesMarked):
        return base
    if base not in _REFUSING:
        _REFUSING[base] = type(f"Refusing{base.__name__}", (RefusesMarked, base), {"__module__": __name__})
    return _REFUSING[base]


def with_encryption(converter: DataConverter | None, payload_key: bytes) -> DataConverter:
    """`converter` (the SDK default when None) with the AES-GCM codec as its outermost codec.

    Its payload converter refuses the codec's refusal markers (RefusesMarked)."""
    converter = converter or DataConverter.default
    codec = AesGcmCodec(payload_key, mark_refused=True)
    if _has_codec(converter.payload_codec, codec.key_id):
        return converter
    payload_converter_class = converter.payload_converter_class
    if payload_converter_class is DefaultPayloadConverter:
        payload_converter_class = PydanticPayloadConverter
    payload_converter_class = refusing_converter_class(payload_converter_class)
    chained = codec if converter.payload_codec is None else ChainedCodec([converter.payload_codec, codec])
    return dataclasses.replace(converter, payload_converter_class=payload_converter_class, payload_codec=chained)


def _with_passthrough(runner: WorkflowRunner | None) -> WorkflowRunner:
    runner = runner or SandboxedWorkflowRunner()
    if isinstance(runner, SandboxedWorkflowRunner):
        restrictions = runner.restrictions.with_passthrough_modules(*PASSTHROUGH_MODULES)
        return dataclasses.replace(runner, restrictions=restrictions)
    return runner


def _key_argument(value: object, name: str) -> bytes:
    """A key given as bytes, or as the base64 text CIBA_PAYLOAD_KEY holds (standard or URL-safe,
    padding optional); ValueError (TypeError for another type) with one line naming the argument."""
    if isinstance(value, bytes | bytearray | memoryview):
        key = bytes(value)
        if not key:
            raise ValueError(f"CibaPlugin: {name} is empty")
        return key
    if isinstance(value, str):
        try:
            return decode_payload_key(value)
        except ValueError as exc:
            raise ValueError(f"CibaPlugin: {name} {exc} (32 random bytes, as in CIBA_PAYLOAD_KEY)") from None
    raise TypeError(f"CibaPlugin: {name} must be bytes or base64 text, not {type(value).__name__}")


def _plugin_present() -> bool:
    return True


class PluginMarker(Interceptor):
    """A worker interceptor that tells workflow code the worker has CibaPlugin.

    It offers the extern function PLUGIN_MARKER, which require_approval looks for."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        input.unsafe_extern_functions[PLUGIN_MARKER] = _plugin_present
        return None


class CibaPlugin(SimplePlugin):
    """Adds approvals to a Temporal client and worker; composes with other plugins.

    - `payload_key`: the codec key (CIBA_PAYLOAD_KEY); alone, it configures a client. Bytes, or
      the base64 text the environment holds (standard or URL-safe, padding optional); so is
      `token_key`. A bad key raises ValueError naming the argument.
    - `op` and `token_key`: a worker builds the approval activities from them (CIBA_TOKEN_KEY
      seals tokens and notification tokens, and must differ from the payload key).
    - `records`: where a worker built from `op` writes decision records (CIBA_RECORD_*; default:
      the SQLite file ciba-records.sqlite3, evidence key derived from `token_key`).
    - `activities`: the approval activities, built by the caller instead (tests, custom clients);
      they include a DecisionRecorder's `record_decision`.
    - `interceptors`: e.g. temporalio.contrib.opentelemetry's TracingInterceptor.
    - `policy_file`: the approval policy (CIBA_POLICY_FILE) that workflows read through the
      local activity `ciba.approval_policy`; read and checked here, so a malformed one stops
      the worker at start (PolicyFileError, one line naming the file and the key).
    """

    def __init__(
        self,
        *,
        payload_key: bytes | str,
        token_key: bytes | str | None = None,
        op: OPSettings | None = None,
        records: RecordSettings | None = None,
        activities: Sequence[Callable[..., Any]] = (),
        interceptors: Sequence[Any] = (),
        policy_file: Path | None = None,
    ) -> None:
        payload_key = _key_argument(payload_key, "payload_key")
        token_key = None if token_key is None else _key_argument(token_key, "token_key")
        if op is not None and token_key is None:
            raise ValueError("CibaPlugin: a worker that builds its activities from `op` needs `token_key`")
        if op is not None and activities:
            raise ValueError("CibaPlugin: pass `op` (activities built from settings) or `activities`, not both")
        if token_key is not None and token_key == payload_key:
            raise ValueError("CibaPlugin: token_key must differ from payload_key (operators hold the payload key)")
        self._payload_key = payload_key
        self._token_key = token_key
        self._op = op
        # Read and checked now: a malformed policy file stops the worker at start.
        self._policy = PolicySource(policy_file)
        self._records = records or RecordSettings()
        self._given_activities = list(activities)
        self._ciba: CibaClient | None = None
        self._built_activities: list[Callable[..., Any]] = []
        self._recorder: DecisionRecorder | None = None
        self._running_workers = 0
        self._checked = False
        registers_workflows = op is not None or bool(activities)
        super().__init__(
            PLUGIN_NAME,
            data_converter=self._data_converter,
            activities=self._activities if registers_workflows else None,
            workflows=self._workflows if registers_workflows else None,
            workflow_runner=_with_passthrough,
            interceptors=[*interceptors, PluginMarker()],
            run_context=self._run_context,
        )

    @classmethod
    def from_env(cls, *, interceptors: Sequence[Any] = ()) -> CibaPlugin:
        """A worker's plugin from the CIBA_* environment (docs/operations/configuration.md).

        A missing or malformed setting raises ConfigError naming it."""
        keys = load_settings(WorkerSettings)
        return cls(
            payload_key=keys.payload_key_bytes,
            token_key=keys.token_key_bytes,
            op=load_settings(OPSettings),
            records=load_settings(RecordSettings),
            interceptors=interceptors,
            policy_file=keys.policy_file,
        )

    def _data_converter(self, existing: DataConverter | None) -> DataConverter:
        return with_encryption(existing, self._payload_key)

    def _workflows(self, existing: Sequence[type] | None) -> list[type]:
        workflows = list(existing or [])
        return workflows if CibaApprovalWorkflow in workflows else [*workflows, CibaApprovalWorkflow]

    def _activities(self, existing: Sequence[Callable[..., Any]] | None) -> list[Callable[..., Any]]:
        activities = list(existing or [])
        ours = [*(self._given_activities or self._build_activities()), self._policy.approval_policy]
        return activities + [activity for activity in ours if activity not in activities]

    def _build_activities(self) -> list[Callable[..., Any]]:
        assert self._op is not None and self._token_key is not None
        if self._ciba is None:
            self._ciba = self._op.ciba_client()
            issue = NotificationTokens(self._token_key).issue if self._op.delivery_mode != "poll" else None
            dsn = self._records.record_dsn
            store = open_store(path=self._records.record_db, dsn=dsn.get_secret_value() if dsn else None)
            try:
                store.check_at_rest()
            except RecordStoreError as exc:  # one line naming CIBA_RECORD_DB: the worker does not start
                raise ConfigError(str(exc)) from None
            recorder = DecisionRecorder(
                store,
                EvidenceKeys(self._records.record_key_bytes(self._token_key)),
                TokenSealer(self._token_key),
                LogSigner(self._records.log_key_bytes(self._token_key)),
            )
            handlers = CibaActivities(
                self._ciba,
                TokenSealer(self._token_key),
                notification_token=issue,
                login_hint_subjects=self._op.login_hint_subjects,
                dialect=self._op.request_dialect(),
                notification_proofs=NotificationProofs(self._token_key),
                decision_on_record=recorder.decision_on_record,
            )
            self._recorder = recorder
            self._built_activities = [*handlers.all, recorder.record_decision]
        return self._built_activities

    async def check_op(self) -> None:
        """The OP's discovery, checked once as a worker starts; ConfigError when CIBA_ISSUER is not the OP's.

        A worker whose CIBA_ISSUER is not the OP's issuer exactly (OIDC Discovery §4.3: the
        document's issuer must be identical to the configured one) could never run an approval:
        ConfigError, one line naming the value to set. The issuer is not normalized: both forms
        are real issuers (Auth0's end in a slash, most do not), and only the OP's own document
        says which one it is. An OP that does not answer (or answers 5xx) is said once, in one
        line naming CIBA_ISSUER; the worker starts anyway and the approvals retry until it
        answers. Any other discovery problem is said once too (the approvals report it).

        `temporal-ciba worker` calls it before the worker starts; a worker built otherwise checks
        as it starts and logs an issuer mismatch as an error instead of raising (the SDK's
        `async with worker` would wait for ever on a worker whose plugin failed to start)."""
        if self._op is None or self._checked:
            return
        self._checked = True
        self._build_activities()
        assert self._ciba is not None
        issuer = self._op.issuer
        try:
            async with asyncio.timeout(START_CHECK_SECONDS):
                await self._ciba.metadata()
        except DiscoveryError as exc:
            if exc.document_issuer is not None:
                raise ConfigError(
                    f"CIBA_ISSUER={issuer} is not the issuer the OP names in its discovery document "
                    f"({exc.document_issuer}; OIDC Discovery §4.3 requires them identical): "
                    f"set CIBA_ISSUER={exc.document_issuer}"
                ) from None
            logger.warning("the OP at CIBA_ISSUER=%s cannot be used as configured: %s", issuer, exc)
        except (TransportError, TimeoutError) as exc:
            cause = str(exc) if isinstance(exc, TransportError) else f"no answer within {START_CHECK_SECONDS:g} s"
            logger.warning(
                "the OP at CIBA_ISSUER=%s is unreachable (%s): the worker starts, and approvals wait and retry "
                "until it answers",
                issuer,
                cause,
            )
        except CibaError as exc:
            logger.warning("the OP at CIBA_ISSUER=%s: %s", issuer, exc)

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        try:
            await self.check_op()
        except ConfigError as exc:
            logger.error("%s", exc)
        self._running_workers += 1
        recorder = self._recorder
        signing = asyncio.create_task(recorder.checkpoint_every()) if recorder is not None else None
        try:
            yield
        finally:
            self._running_workers -= 1
            if signing is not None:
                signing.cancel()
            if recorder is not None:
                await _final_checkpoint(recorder)
                if self._running_workers == 0:
                    await asyncio.to_thread(recorder.store.close)
            if self._running_workers == 0 and self._ciba is not None:
                ciba, self._ciba = self._ciba, None
                await ciba.aclose()


async def _final_checkpoint(recorder: DecisionRecorder) -> None:
    """Sign the decision log's checkpoint as the worker stops; a store that is down is logged, not raised."""
    try:
        await recorder.checkpoint_now()
    except Exception as exc:
        logger.warning("the decision log's checkpoint was not signed as the worker stopped: %s", exc)

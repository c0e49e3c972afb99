"""What CibaPlugin gives a worker, built from explicit settings, without a Temporal server.

A plugin of a client only adds nothing to a worker; one given activities, or the OP's settings,
registers the approval workflow and its activities (once), the policy activity and the marker
interceptor. Built from the settings, the activities talk to the OP the settings name (an
in-process OP behind httpx.MockTransport), issue notification tokens only outside poll mode,
seal and prove under the token key, pin approvers, shape requests in the OP's dialect, and
record decisions in the configured store, their evidence and checkpoints under the keys derived
from the token key. The worker checks the OP once as it starts and closes what it opened when
the last worker using it stops. And the codec's pieces: the refusal markers, and the chained
codec's serialization context.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError
from temporalio.worker import Interceptor, WorkflowInterceptorClassInput

from temporal_ciba import _plugin as plugin_module
from temporal_ciba._models import (
    ApprovalOutcome,
    ApprovalRequest,
    PingNotice,
    PushDelivery,
    RedeemInput,
    RevokeTokensInput,
    SendRequestInput,
    VerifyNotificationInput,
)
from temporal_ciba._plugin import (
    PAYLOAD_REFUSED,
    ChainedCodec,
    CibaPlugin,
    PluginMarker,
    refusing_converter_class,
    with_encryption,
)
from temporal_ciba._policy import PolicyFileError
from temporal_ciba._settings import ConfigError, OPSettings, RecordSettings
from temporal_ciba._workflow import PLUGIN_MARKER, CibaApprovalWorkflow
from temporal_ciba.ciba import CibaClient
from temporal_ciba.crypto import (
    AesGcmCodec,
    NotificationProofs,
    NotificationTokens,
    PayloadDecryptionError,
    TokenSealer,
    id_token_context,
    refusal,
    tokens_context,
)
from temporal_ciba.crypto._codec import refusal_marker
from temporal_ciba.records import EvidenceKeys, LogSigner, RecordDecisionInput, SqliteStore
from tests.support.mock_op import MockOP, env
from tests.support.tokens import (
    ACCESS_TOKEN,
    AUTH_REQ_ID,
    CLIENT_ID,
    ISSUER,
    METADATA,
    binding,
    claims,
    token_response,
)

PAYLOAD_KEY = os.urandom(32)
TOKEN_KEY = os.urandom(32)
POLICY = '[[rules]]\nname = "everything"\napproval = "none"\n'


class SettingsOP(MockOP):
    """The OP the settings name: offers poll and ping, records each backchannel request's form,
    and answers its discovery document with `issuer` (another one: a misconfigured worker)."""

    def __init__(self, *, issuer: str = ISSUER) -> None:
        super().__init__()
        self.issuer = issuer
        self.requests: list[dict[str, str]] = []
        self.discoveries = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            self.discoveries += 1
            document = {**METADATA, "issuer": self.issuer, "revocation_endpoint": f"{ISSUER}/revoke"}
            return httpx.Response(
                200, json={**document, "backchannel_token_delivery_modes_supported": ["poll", "ping"]}
            )
        if request.url.path == "/bc":
            self.requests.append(dict(httpx.QueryParams(request.content.decode())))
        return await super().__call__(request)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[CibaClient]:
    """Each CibaClient the settings build, over an in-process transport to OP_OF[issuer]."""
    built: list[CibaClient] = []

    def ciba_client(settings: OPSettings) -> CibaClient:
        op = OP_OF.get(settings.issuer, SettingsOP())
        http = httpx.AsyncClient(transport=httpx.MockTransport(op))
        client = CibaClient(
            issuer=settings.issuer, client_auth=settings.client_auth(), delivery_mode=settings.delivery_mode, http=http
        )
        built.append(client)
        return client

    monkeypatch.setattr(OPSettings, "ciba_client", ciba_client)
    OP_OF.clear()
    return built


# The OP each issuer's clients reach (SettingsOP() when not named).
OP_OF: dict[str, Callable[[httpx.Request], Any]] = {}


def op_settings(**settings: Any) -> OPSettings:
    return OPSettings(issuer=ISSUER, client_id=CLIENT_ID, client_secret="secret", **settings)  # type: ignore[arg-type]


def worker_plugin(tmp_path: Path, **settings: Any) -> CibaPlugin:
    records = RecordSettings(record_db=tmp_path / "records.sqlite3")
    return CibaPlugin(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY, op=op_settings(**settings), records=records)


class NoClientInterceptors:
    """The worker config's client: the SDK reads its interceptors to leave them out of the worker's."""

    def config(self, *, active_config: bool = False) -> dict[str, Any]:
        return {}


def worker_config(plugin: CibaPlugin, **config: Any) -> dict[str, Any]:
    return dict(plugin.configure_worker({"client": NoClientInterceptors(), "task_queue": "q", **config}))  # type: ignore[typeddict-item]


def named(activities: Sequence[Callable[..., Any]], name: str) -> Callable[..., Any]:
    [found] = [fn for fn in activities if activity._Definition.must_from_callable(fn).name == name]
    return found


@activity.defn(name="mine")
async def mine() -> None: ...


@activity.defn(name="given.send")
async def given_send() -> None: ...


class Tracing(Interceptor):
    """Stands in for a caller's worker interceptor (e.g. OpenTelemetry's)."""


class OwnWorkflow:
    """Stands in for the caller's workflow class."""


# --- What a worker is given ---


def test_a_client_s_plugin_adds_no_workflow_nor_activity_to_a_worker() -> None:
    config = worker_config(CibaPlugin(payload_key=PAYLOAD_KEY), workflows=[OwnWorkflow], activities=[mine])
    assert (config["workflows"], config["activities"]) == ([OwnWorkflow], [mine])
    assert "workflows" not in worker_config(CibaPlugin(payload_key=PAYLOAD_KEY))


def test_the_caller_s_interceptors_come_before_the_marker() -> None:
    tracing = Tracing()
    config = worker_config(CibaPlugin(payload_key=PAYLOAD_KEY, interceptors=[tracing]))
    [first, marker] = config["interceptors"]
    assert first is tracing and isinstance(marker, PluginMarker)


async def test_given_activities_come_with_the_approval_workflow_and_the_policy_activity(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    plugin = CibaPlugin(payload_key=PAYLOAD_KEY, activities=[given_send], policy_file=policy_file)
    config = worker_config(plugin, workflows=[OwnWorkflow], activities=[mine])
    assert config["workflows"] == [OwnWorkflow, CibaApprovalWorkflow]
    assert config["activities"][:2] == [mine, given_send]
    policy = named(config["activities"], "ciba.approval_policy")
    assert config["activities"] == [mine, given_send, policy]
    assert (await policy()).rules[0].name == "everything"  # the file's policy, read at construction
    # Registered already (a worker given them, or a second plugin): each once, where it was.
    again = worker_config(plugin, workflows=[CibaApprovalWorkflow, OwnWorkflow], activities=[given_send, mine])
    assert again["workflows"] == [CibaApprovalWorkflow, OwnWorkflow]
    assert again["activities"] == [given_send, mine, policy]
    alone = worker_config(plugin)
    assert (alone["workflows"], alone["activities"]) == ([CibaApprovalWorkflow], [given_send, policy])


def test_a_malformed_policy_file_stops_the_plugin_at_construction(tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text("rules = [")
    with pytest.raises(PolicyFileError):
        CibaPlugin(payload_key=PAYLOAD_KEY, activities=[given_send], policy_file=broken)


def test_settings_and_activities_each_need_what_goes_with_them() -> None:
    op = op_settings()
    with pytest.raises(ValueError, match="needs `token_key`"):
        CibaPlugin(payload_key=PAYLOAD_KEY, op=op)
    with pytest.raises(ValueError, match="not both"):
        CibaPlugin(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY, op=op, activities=[given_send])
    # Each alone is a worker's plugin; a token key alone (distinct) is allowed too.
    CibaPlugin(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY, op=op)
    CibaPlugin(payload_key=PAYLOAD_KEY, activities=[given_send])
    CibaPlugin(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY)


# --- The activities built from the settings ---


def send_input() -> SendRequestInput:
    request = ApprovalRequest(login_hint="alice@example.com", binding_message="Approve it")
    return SendRequestInput(request=request, workflow_id="wf", first_run_id="run")


async def test_a_worker_s_activities_talk_to_the_op_of_the_settings_in_its_dialect(
    tmp_path: Path, clients: list[CibaClient]
) -> None:
    op = SettingsOP()
    OP_OF[ISSUER] = op
    plugin = worker_plugin(
        tmp_path, login_hint_subjects={"alice@example.com": "sub-alice"}, audience="https://api.example"
    )
    config = worker_config(plugin, workflows=[OwnWorkflow])
    assert config["workflows"] == [OwnWorkflow, CibaApprovalWorkflow]
    [ciba] = clients
    assert plugin._ciba is ciba  # the one client: closed when the last worker stops
    sent = await env().run(named(config["activities"], "ciba.send_authentication_request"), send_input())
    assert sent.auth_req_id == AUTH_REQ_ID
    [form] = op.requests
    assert "client_notification_token" not in form  # poll mode: the OP calls nobody back
    assert form["audience"] == "https://api.example"  # the dialect of the settings
    assert sent.binding is not None and sent.binding.expected_subject == "sub-alice"  # the subjects it knows


async def test_in_ping_mode_each_request_carries_a_notification_token_of_the_token_key(
    tmp_path: Path, clients: list[CibaClient]
) -> None:
    op = SettingsOP()
    OP_OF[ISSUER] = op
    config = worker_config(worker_plugin(tmp_path, delivery_mode="ping"))
    await env().run(named(config["activities"], "ciba.send_authentication_request"), send_input())
    [form] = op.requests
    opened = NotificationTokens(TOKEN_KEY).open(form["client_notification_token"])
    assert opened is not None and (opened.workflow_id, opened.first_run_id) == ("wf", "run")


def push_proof(key: bytes) -> str:
    """The callback's proof, under `key`, of a push of access_denied to the approval `wf` of run `run`."""
    return NotificationProofs(key).prove(
        workflow_id="wf",
        first_run_id="run",
        signal=NotificationProofs.PUSH,
        auth_req_id=AUTH_REQ_ID,
        content=(None, "access_denied", None),
    )


async def test_tokens_open_and_pushes_are_proven_under_the_token_key(tmp_path: Path, clients: list[CibaClient]) -> None:
    op = SettingsOP()
    OP_OF[ISSUER] = op
    activities = worker_config(worker_plugin(tmp_path))["activities"]
    sealed = TokenSealer(TOKEN_KEY).seal(
        token_response(op.keys.sign(claims())).model_dump_json(), context=tokens_context(AUTH_REQ_ID, "wf")
    )
    revoke = named(activities, "ciba.revoke_tokens")
    assert await env().run(revoke, RevokeTokensInput(sealed_tokens=sealed, auth_req_id=AUTH_REQ_ID))
    assert op.revoked[0]["token"] == ACCESS_TOKEN
    push = PushDelivery(auth_req_id=AUTH_REQ_ID, error="access_denied", first_run_id="run", proof=push_proof(TOKEN_KEY))
    verify = named(activities, "ciba.verify_notification")
    assert await env().run(verify, VerifyNotificationInput(delivery=push, first_run_id="run"))
    forged = push.model_copy(update={"proof": push_proof(PAYLOAD_KEY)})  # operators hold the payload key
    assert not await env().run(verify, VerifyNotificationInput(delivery=forged, first_run_id="run"))


def decision(sealed_id_token: str) -> RecordDecisionInput:
    outcome = ApprovalOutcome(
        status="approved",
        workflow_id="wf",
        auth_req_id=AUTH_REQ_ID,
        reason="approved",
        decided_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )
    request = ApprovalRequest(login_hint="alice", binding_message="Pay EUR 5.00")
    return RecordDecisionInput(
        outcome=outcome, request=request, first_run_id="run", run_id="run", sealed_id_token=sealed_id_token
    )


async def test_decisions_are_recorded_in_the_store_of_the_settings_under_keys_of_the_token_key(
    tmp_path: Path, clients: list[CibaClient]
) -> None:
    plugin = worker_plugin(tmp_path)
    activities = worker_config(plugin)["activities"]
    record_decision = named(activities, "ciba.record_decision")
    assert record_decision.__self__ is plugin._recorder  # type: ignore[attr-defined]  # the one its run context signs for
    id_token = MockOP().keys.sign(claims())
    sealed = TokenSealer(TOKEN_KEY).seal(id_token, context=id_token_context(AUTH_REQ_ID, "wf"))
    await env().run(record_decision, decision(sealed))
    assert plugin._recorder is not None
    await plugin._recorder.checkpoint_now()
    records = RecordSettings(record_db=tmp_path / "records.sqlite3")
    store = SqliteStore(records.record_db)  # the file of the settings
    [stored] = store.select()
    # The evidence: the ID token the token key unsealed, encrypted under the key derived from it.
    assert stored.open(EvidenceKeys(records.record_key_bytes(TOKEN_KEY))).id_token == id_token
    checkpoint = store.latest_checkpoint()
    assert checkpoint is not None and checkpoint.verifies(LogSigner(records.log_key_bytes(TOKEN_KEY)).public_key)
    # The redeem reads the same records: a decision on record is answered without a token request.
    redeem = named(activities, "ciba.redeem")
    asked = RedeemInput(binding=binding(), holder_workflow_id="agent", holder_run_id="r", first_run_id="run")
    result = await env().run(redeem, asked)
    assert result.kind == "recorded" and result.recorded is not None and result.recorded.status == "approved"


def test_the_store_is_the_postgresql_one_when_a_dsn_is_set(
    tmp_path: Path, clients: list[CibaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[Path, str | None]] = []

    def open_store(*, path: Path, dsn: str | None) -> SqliteStore:
        opened.append((path, dsn))
        return SqliteStore(tmp_path / "stand-in.sqlite3")

    monkeypatch.setattr(plugin_module, "open_store", open_store)
    dsn = "postgresql://ciba:pw@127.0.0.1:1/records"
    records = RecordSettings(record_db=tmp_path / "records.sqlite3", record_dsn=dsn)  # type: ignore[arg-type]
    CibaPlugin(payload_key=PAYLOAD_KEY, token_key=TOKEN_KEY, op=op_settings(), records=records)._build_activities()
    worker_plugin(tmp_path)._build_activities()
    assert opened == [(tmp_path / "records.sqlite3", dsn), (tmp_path / "records.sqlite3", None)]


# --- As the worker starts and stops ---


async def test_a_worker_checks_the_op_once_as_it_starts_and_the_last_to_stop_closes_what_it_opened(
    tmp_path: Path, clients: list[CibaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[object] = []
    monkeypatch.setattr(SqliteStore, "close", lambda self: closed.append(self))
    op = SettingsOP()
    OP_OF[ISSUER] = op
    plugin = worker_plugin(tmp_path)
    worker_config(plugin)
    [ciba] = clients

    async def aclose() -> None:
        closed.append(ciba)

    ciba.aclose = aclose  # type: ignore[method-assign]
    ran: list[int] = []

    async def run(worker: object) -> None:
        ran.append(op.discoveries)
        async with plugin._run_context():  # a second worker of the same plugin
            pass
        assert closed == []  # one worker still runs

    await plugin.run_worker(SimpleNamespace(), run)  # type: ignore[arg-type]
    assert ran == [1]  # the OP was asked for its discovery document before the worker ran
    assert plugin._recorder is not None and closed == [plugin._recorder.store, ciba]
    assert plugin._ciba is None


async def test_an_issuer_the_op_does_not_name_stops_the_worker_naming_both(
    tmp_path: Path, clients: list[CibaClient]
) -> None:
    OP_OF[ISSUER] = SettingsOP(issuer=ISSUER + "/")
    plugin = worker_plugin(tmp_path)
    with pytest.raises(ConfigError) as raised:
        await plugin.check_op()
    assert f"CIBA_ISSUER={ISSUER} is not" in str(raised.value)
    assert str(raised.value).endswith(f"set CIBA_ISSUER={ISSUER}/")


async def test_an_op_that_cannot_be_reached_is_said_once_with_why(
    tmp_path: Path, clients: list[CibaClient], caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[str] = []

    async def refusing(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused by the test")

    OP_OF[ISSUER] = refusing
    plugin = worker_plugin(tmp_path)
    with caplog.at_level(logging.WARNING, logger="temporal_ciba.worker"):
        await plugin.check_op()
        await plugin.check_op()  # checked once: a second worker of the plugin asks nothing
    [line] = [record.getMessage() for record in caplog.records]
    assert f"CIBA_ISSUER={ISSUER} is unreachable (" in line and "connection refused by the test" in line
    assert len(attempts) >= 1 and len(set(attempts)) == 1
    again = len(attempts)
    await plugin.check_op()
    assert len(attempts) == again


async def test_an_op_that_does_not_answer_in_time_is_said_with_the_time_waited(
    tmp_path: Path, clients: list[CibaClient], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError

    OP_OF[ISSUER] = silent
    monkeypatch.setattr(plugin_module, "START_CHECK_SECONDS", 0.05)
    with caplog.at_level(logging.WARNING, logger="temporal_ciba.worker"):
        await asyncio.wait_for(worker_plugin(tmp_path).check_op(), 10)
    [line] = [record.getMessage() for record in caplog.records]
    assert f"CIBA_ISSUER={ISSUER} is unreachable (no answer within 0.05 s)" in line


def test_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    for name, value in {
        "CIBA_PAYLOAD_KEY": base64.b64encode(PAYLOAD_KEY).decode(),
        "CIBA_TOKEN_KEY": base64.b64encode(TOKEN_KEY).decode(),
        "CIBA_ISSUER": ISSUER,
        "CIBA_CLIENT_ID": CLIENT_ID,
        "CIBA_CLIENT_SECRET": "secret",
        "CIBA_RECORD_DB": str(tmp_path / "env.sqlite3"),
        "CIBA_POLICY_FILE": str(policy_file),
    }.items():
        monkeypatch.setenv(name, value)
    tracing = Tracing()
    plugin = CibaPlugin.from_env(interceptors=[tracing])
    client = plugin.configure_client({"data_converter": DataConverter.default})  # type: ignore[typeddict-item]
    codec = client["data_converter"].payload_codec
    assert isinstance(codec, AesGcmCodec) and codec.key_id == AesGcmCodec(PAYLOAD_KEY).key_id
    assert plugin._token_key == TOKEN_KEY
    assert plugin._op is not None and (plugin._op.issuer, plugin._op.client_id) == (ISSUER, CLIENT_ID)
    assert plugin._records.record_db == tmp_path / "env.sqlite3"
    assert plugin._policy.current().rules[0].name == "everything"
    assert worker_config(plugin)["interceptors"][0] is tracing


# --- The codec's pieces ---


def test_the_marker_interceptor_tells_workflow_code_the_plugin_is_there() -> None:
    functions: dict[str, Callable[..., Any]] = {}
    given = WorkflowInterceptorClassInput(unsafe_extern_functions=functions)
    assert PluginMarker().workflow_interceptor_class(given) is None
    assert functions[PLUGIN_MARKER]() is True


async def test_the_codec_marks_what_it_refuses_rather_than_failing_the_task() -> None:
    codec = with_encryption(None, PAYLOAD_KEY).payload_codec
    assert codec is not None
    plaintext = Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')
    [marked] = await codec.decode([plaintext])
    assert refusal(marked) is not None


class SeesContext(PayloadCodec, WithSerializationContext):
    def __init__(self, context: SerializationContext | None = None) -> None:
        self.context = context

    def with_context(self, context: SerializationContext) -> SeesContext:
        return SeesContext(context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


class Blind(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_each_chained_codec_that_uses_the_serialization_context_gets_it() -> None:
    blind = Blind()
    context = WorkflowSerializationContext(namespace="default", workflow_id="wf")
    sees, kept = ChainedCodec([SeesContext(), blind]).with_context(context).codecs
    assert isinstance(sees, SeesContext) and sees.context is context
    assert kept is blind


MARKER = refusal_marker(PayloadDecryptionError("refused a payload that is not encrypted with the payload key"))
OTHER_KEY = refusal_marker(PayloadDecryptionError("payload encrypted with key 'x'", kind="other_key"))


def converter() -> Any:
    return refusing_converter_class(PydanticPayloadConverter)()


def test_a_refused_notification_is_a_stand_in_carrying_why() -> None:
    [notice] = converter().from_payloads([MARKER], [PingNotice])
    assert isinstance(notice, PingNotice)
    assert notice.undecodable_reason == "refused a payload that is not encrypted with the payload key"


@pytest.mark.parametrize(
    ("payloads", "hints"),
    [
        ([MARKER], [str]),
        ([MARKER], None),
        ([MARKER], []),  # fewer hints than payloads
        ([MARKER, MARKER], [PingNotice, PingNotice]),  # a notification stands in only for a signal's one value
        (["plain", MARKER], [str, PingNotice]),
    ],
    ids=["not_a_notification", "no_hints", "too_few_hints", "two_markers", "second_of_two"],
)
def test_any_other_refused_value_is_a_non_retryable_refusal_naming_why(
    payloads: list[Any], hints: list[type] | None
) -> None:
    refusing = converter()
    encoded = [refusing.to_payloads([p])[0] if isinstance(p, str) else p for p in payloads]
    with pytest.raises(ApplicationError) as raised:
        refusing.from_payloads(encoded, hints)
    error = raised.value
    assert (error.type, error.non_retryable) == (PAYLOAD_REFUSED, True)
    assert error.message == "refused a payload that is not encrypted with the payload key"
    assert isinstance(error.__cause__, PayloadDecryptionError)


def test_a_payload_under_another_key_raises_the_codec_s_error_itself() -> None:
    """A worker with the wrong payload key sees it on every payload: its tasks fail and retry."""
    with pytest.raises(PayloadDecryptionError) as raised:
        converter().from_payloads([OTHER_KEY], [str])
    assert raised.value.kind == "other_key"
    [plain] = converter().to_payloads(["fine"])
    assert converter().from_payloads([plain], [str]) == ["fine"]

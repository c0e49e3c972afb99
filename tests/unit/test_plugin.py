"""CibaPlugin composes.

The caller's payload converter and codec, and other frameworks' Temporal plugins (OpenAI Agents,
PydanticAI), keep working, and every payload is sealed by our codec.

Plugins are applied the way `temporalio.client.Client` applies them: each plugin's
`configure_client`, in list order, on the config the caller gave. The last tests connect real
clients with these plugins to the time-skipping test server and run a workflow through a worker.

One order cannot work: `[CibaPlugin, OpenAIAgentsPlugin]`. CibaPlugin replaces the SDK's
`DefaultPayloadConverter` by pydantic's (our models need it), and the OpenAI plugin accepts only
`DefaultPayloadConverter` itself (which it replaces by `OpenAIPayloadConverter`) or a converter
that is an `OpenAIPayloadConverter` instance, and raises ValueError otherwise. Under temporalio
1.35 even a client given `OpenAIPayloadConverter` is refused: `DataConverter.payload_converter`
is the SDK's transfer-type wrapper, never an `OpenAIPayloadConverter`. So CibaPlugin goes after
OpenAIAgentsPlugin."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, Plugin
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadConverter,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._plugin import CibaPlugin, RefusesMarked, with_encryption
from temporal_ciba.crypto import AesGcmCodec
from temporal_ciba.crypto._codec import ENCODING as ENCRYPTED
from tests.support.converters import (
    KEY,
    SECRET_TEXT,
    ZLIB,
    ZlibCodec,
    approval_request,
    assert_sealed_round_trip,
    configured,
)
from tests.support.temporal import venv_tool

# The workflow below is defined here, so the sandbox re-imports this module: the frameworks are
# passed through, as a workflow module that imports them would do.
with workflow.unsafe.imports_passed_through():
    from pydantic_ai.durable_exec.temporal import PydanticAIPayloadConverter, PydanticAIPlugin
    from temporalio.openai_agents import OpenAIAgentsPlugin, OpenAIPayloadConverter

USER_JSON = b"json/user"


def user_encoding_converters() -> list[EncodingPayloadConverter]:
    """The SDK's converters, with JSON written under the caller's own encoding name."""
    return [
        JSONPlainPayloadConverter(encoding=USER_JSON.decode()) if isinstance(c, JSONPlainPayloadConverter) else c
        for c in DefaultPayloadConverter.default_encoding_payload_converters
    ]


class UserDefaultConverter(DefaultPayloadConverter):
    """The caller's own converter class, derived from the SDK's default one."""

    def __init__(self) -> None:
        CompositePayloadConverter.__init__(self, *user_encoding_converters())


class UserCompositeConverter(CompositePayloadConverter):
    """The caller's own composite converter."""

    def __init__(self) -> None:
        super().__init__(*user_encoding_converters())


class UserFailureConverter(DefaultFailureConverter):
    """The caller's own failure converter class."""


def refusing(converter_class: type[PayloadConverter], kept: type[PayloadConverter]) -> bool:
    """The class is the caller's `kept` one (or derived from it), refusing the codec's refusal markers."""
    return issubclass(converter_class, kept) and issubclass(converter_class, RefusesMarked)


# --- The caller's converter and codec ---


@pytest.mark.parametrize("converter_class", [UserDefaultConverter, UserCompositeConverter])
async def test_keeps_the_callers_converter_and_runs_its_codec_inside_the_encryption(
    converter_class: type[PayloadConverter],
) -> None:
    codec = ZlibCodec()
    user = DataConverter(payload_converter_class=converter_class, payload_codec=codec)

    converter = configured([CibaPlugin(payload_key=KEY)], user)

    assert refusing(converter.payload_converter_class, converter_class)
    value = {"memo": SECRET_TEXT, "amount": "1250.00"}
    payloads = await converter.encode([value])
    assert codec.encoded == 1
    assert [p.metadata["encoding"] for p in payloads] == [ENCRYPTED]
    assert SECRET_TEXT.encode() not in payloads[0].data
    # Our key alone opens the outer layer and finds the caller's codec's output beneath it,
    # and beneath that the caller's converter's JSON.
    [compressed] = await AesGcmCodec(KEY).decode(payloads)
    assert compressed.metadata["encoding"] == ZLIB
    [plain] = await codec.decode([compressed])
    assert plain.metadata["encoding"] == USER_JSON
    assert json.loads(plain.data) == value
    # And the converter undoes both codecs.
    assert await converter.decode(payloads, [dict]) == [value]


async def test_swaps_only_the_sdk_default_converter_for_pydantic() -> None:
    converter = configured([CibaPlugin(payload_key=KEY)])

    assert refusing(converter.payload_converter_class, PydanticPayloadConverter)
    assert isinstance(converter.payload_codec, AesGcmCodec)
    await assert_sealed_round_trip(converter, approval_request(), PydanticPayloadConverter)


async def test_keeps_the_rest_of_the_callers_data_converter() -> None:
    user = DataConverter(failure_converter_class=UserFailureConverter, payload_codec=ZlibCodec())
    converter = with_encryption(user, KEY)
    for field in dataclasses.fields(DataConverter):
        if field.init and field.name not in ("payload_converter_class", "payload_codec"):
            assert getattr(converter, field.name) == getattr(user, field.name), field.name
    assert converter.failure_converter_class is UserFailureConverter


@pytest.mark.parametrize("twice", ["same plugin", "two plugins with one key"])
async def test_applied_twice_encrypts_once(twice: str) -> None:
    codec = ZlibCodec()
    user = DataConverter(payload_converter_class=UserDefaultConverter, payload_codec=codec)
    plugin = CibaPlugin(payload_key=KEY)
    second = plugin if twice == "same plugin" else CibaPlugin(payload_key=KEY)

    once = configured([plugin], user)
    converter = configured([plugin, second], user)

    assert refusing(converter.payload_converter_class, UserDefaultConverter)
    assert with_encryption(once, KEY) is once
    payloads = await converter.encode([{"memo": SECRET_TEXT}])
    assert codec.encoded == 1
    # One decryption reaches the caller's codec: there is no second layer of ours.
    [inner] = await AesGcmCodec(KEY).decode(payloads)
    assert inner.metadata["encoding"] == ZLIB


# --- Other frameworks' plugins, in both orders ---


def ciba() -> CibaPlugin:
    return CibaPlugin(payload_key=KEY)


# Plugins in the order given to the client, and the payload converter class that must come out.
COMPOSING: dict[str, tuple[Sequence[Callable[[], Plugin]], type[PayloadConverter]]] = {
    "openai, ciba": ((OpenAIAgentsPlugin, ciba), OpenAIPayloadConverter),
    "pydantic-ai, ciba": ((PydanticAIPlugin, ciba), PydanticAIPayloadConverter),
    # PydanticAI keeps a subclass of pydantic's converter, which ours (refusing markers) is.
    "ciba, pydantic-ai": ((ciba, PydanticAIPlugin), PydanticPayloadConverter),
}
CIBA_THEN_OPENAI: Sequence[Callable[[], Plugin]] = (ciba, OpenAIAgentsPlugin)


def plugins(makers: Sequence[Callable[[], Plugin]]) -> list[Plugin]:
    return [make() for make in makers]


@pytest.mark.parametrize("case", COMPOSING)
@pytest.mark.parametrize("with_codec", [False, True], ids=["no codec", "caller's codec"])
async def test_composes_with_framework_plugins(case: str, with_codec: bool) -> None:
    makers, survivor = COMPOSING[case]
    codec = ZlibCodec() if with_codec else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PydanticAI warns when it replaces a non-pydantic converter
        converter = configured(plugins(makers), DataConverter(payload_codec=codec))

    assert refusing(converter.payload_converter_class, survivor)
    await assert_sealed_round_trip(converter, approval_request(), survivor, codec)
    if codec is not None:
        assert codec.encoded == 1


async def test_ciba_before_openai_is_refused_by_the_openai_plugin() -> None:
    """CibaPlugin must swap the SDK default converter (it cannot serialize our pydantic models).

    The OpenAI plugin then finds neither that default nor its own converter, and refuses."""
    with pytest.raises(ValueError, match="must be of type OpenAIPayloadConverter"):
        configured(plugins(CIBA_THEN_OPENAI))


# --- Real clients and a worker on the time-skipping test server ---


@activity.defn
async def echo(request: ApprovalRequest) -> ApprovalRequest:
    return request


@workflow.defn
class EchoWorkflow:
    """Sends a pydantic model through an activity and back: every payload kind in history."""

    @workflow.run
    async def run(self, request: ApprovalRequest) -> ApprovalRequest:
        return await workflow.execute_activity(echo, request, start_to_close_timeout=timedelta(seconds=30))


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[str]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_tool("temporal-test-server")
    ) as environment:
        yield environment.client.service_client.config.target_host


def history_payloads(events: Sequence[Any]) -> list[Payload]:
    """The inputs and results in a history (what the data converter wrote)."""
    payloads: list[Payload] = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads += event.workflow_execution_started_event_attributes.input.payloads
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payloads += event.activity_task_scheduled_event_attributes.input.payloads
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            payloads += event.activity_task_completed_event_attributes.result.payloads
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            payloads += event.workflow_execution_completed_event_attributes.result.payloads
    return payloads


@pytest.mark.parametrize("case", COMPOSING)
async def test_worker_with_framework_plugins_runs_and_history_is_sealed(
    server: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The OpenAI plugin's worker builds an OpenAI client for its model activity; no model is called.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    makers, survivor = COMPOSING[case]
    client = await Client.connect(server, plugins=plugins(makers))
    assert refusing(client.data_converter.payload_converter_class, survivor)
    task_queue = f"plugin-{uuid.uuid4().hex[:8]}"
    request = approval_request()

    async with Worker(client, task_queue=task_queue, workflows=[EchoWorkflow], activities=[echo]):
        handle = await client.start_workflow(EchoWorkflow.run, request, id=task_queue, task_queue=task_queue)
        assert await handle.result() == request

    raw = await Client.connect(server)  # no codec: what the server stores
    history = await raw.get_workflow_handle(handle.id).fetch_history()
    payloads = history_payloads(history.events)
    assert len(payloads) == 4
    assert {p.metadata["encoding"] for p in payloads} == {ENCRYPTED}
    assert SECRET_TEXT.encode() not in b"".join(event.SerializeToString() for event in history.events)


async def test_client_with_ciba_before_openai_fails_at_connect(server: str) -> None:
    with pytest.raises(ValueError, match="must be of type OpenAIPayloadConverter"):
        await Client.connect(server, plugins=plugins(CIBA_THEN_OPENAI))


# --- The keys as the environment holds them ---


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        " " + base64.b64encode(KEY).decode() + "\n",
    ],
    ids=["standard", "url_safe_unpadded", "surrounding_whitespace"],
)
def test_keys_given_as_the_environments_base64_text_are_the_same_keys(text: str) -> None:
    """`CibaPlugin(payload_key=os.environ["CIBA_PAYLOAD_KEY"])` encrypts as with the decoded bytes."""
    as_text, as_bytes = configured([CibaPlugin(payload_key=text)]), configured([CibaPlugin(payload_key=KEY)])
    assert isinstance(as_text.payload_codec, AesGcmCodec) and isinstance(as_bytes.payload_codec, AesGcmCodec)
    assert as_text.payload_codec.key_id == as_bytes.payload_codec.key_id
    # The token key too: the same text as the payload key is the same key, refused as such.
    with pytest.raises(ValueError, match="token_key must differ from payload_key"):
        CibaPlugin(payload_key=KEY, token_key=text)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"payload_key": "not base64!"}, "payload_key"),
        ({"payload_key": base64.b64encode(b"short").decode()}, "payload_key"),
        ({"payload_key": KEY, "token_key": "%%%"}, "token_key"),
        ({"payload_key": b""}, "payload_key"),
        ({"payload_key": 42}, "payload_key"),
    ],
    ids=["not_base64", "not_32_bytes", "bad_token_key", "empty", "not_a_key"],
)
def test_a_bad_key_fails_at_construction_in_one_line_naming_the_argument(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        CibaPlugin(**arguments)
    message = str(raised.value)
    assert message.startswith(f"CibaPlugin: {named}") and "\n" not in message, message

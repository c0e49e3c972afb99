"""The caller's own codec, and a check that a value is sealed under our key.

Beneath the encryption lies the caller's converter (and codec) untouched."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, Plugin
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    PayloadConverter,
)
from temporalio.service import ServiceClient

from temporal_ciba._models import ApprovalRequest
from temporal_ciba.crypto import AesGcmCodec
from temporal_ciba.crypto._codec import ENCODING as ENCRYPTED

KEY = os.urandom(32)


ZLIB = b"binary/zlib"


SECRET_TEXT = "Pay 1,250.00 EUR to ACME Ltd"


class ZlibCodec(PayloadCodec):
    """The caller's own codec: compresses each payload, and counts what it encoded."""

    def __init__(self) -> None:
        self.encoded = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.encoded += len(payloads)
        return [Payload(metadata={"encoding": ZLIB}, data=zlib.compress(p.SerializeToString())) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload.FromString(zlib.decompress(p.data)) if p.metadata["encoding"] == ZLIB else p for p in payloads]


def configured(plugins: Sequence[Plugin], data_converter: DataConverter = DataConverter.default) -> DataConverter:
    """The data converter of a client built with `plugins`, through Client's own code path
    (Client.connect ends in Client.__init__, which applies configure_client in list order)."""
    client = Client(cast(ServiceClient, object()), data_converter=data_converter, plugins=plugins)
    return client.data_converter


def approval_request() -> ApprovalRequest:
    return ApprovalRequest(
        login_hint="alice@example.com",
        binding_message=SECRET_TEXT,
        policy_deadline=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


async def assert_sealed_round_trip(
    converter: DataConverter,
    value: Any,
    converter_class: type[PayloadConverter],
    inner_codec: ZlibCodec | None = None,
) -> None:
    """`value` encodes to ciphertext that only our key opens.

    Beneath it (and beneath the caller's codec, if any) lie exactly the bytes `converter_class`
    writes; and it decodes back."""
    payloads = await converter.encode([value])
    assert [p.metadata["encoding"] for p in payloads] == [ENCRYPTED]
    assert SECRET_TEXT.encode() not in payloads[0].data
    inner = await AesGcmCodec(KEY).decode(payloads)
    if inner_codec is not None:
        assert inner[0].metadata["encoding"] == ZLIB
        inner = await inner_codec.decode(inner)
    assert inner == converter_class().to_payloads([value])
    assert await converter.decode(payloads, [type(value)]) == [value]

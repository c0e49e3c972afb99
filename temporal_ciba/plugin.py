"""CibaPlugin: one object that gives a Temporal client and worker what approvals need."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.plugin import SimplePlugin

from temporal_ciba.codec import AesGcmCodec
from workflows.approval import CibaApprovalWorkflow


def ciba_data_converter(payload_key: bytes) -> DataConverter:
    """pydantic JSON payloads, encrypted with AES-256-GCM."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=AesGcmCodec(payload_key))


class CibaPlugin(SimplePlugin):
    """Registers the data converter (pydantic + encryption) on a client, and the approval
    workflow and activities on a worker.

        client = await Client.connect(..., plugins=[CibaPlugin(payload_key=key)])
        worker = Worker(client, task_queue=..., plugins=[CibaPlugin(payload_key=key, activities=acts.all)])

    A client needs only the key; a worker also needs the activities (activities.approval).
    `interceptors` adds e.g. temporalio.contrib.opentelemetry's TracingInterceptor.
    """

    def __init__(
        self,
        *,
        payload_key: bytes,
        activities: Sequence[Callable[..., Any]] = (),
        workflows: Sequence[type] = (),
        interceptors: Sequence[Any] = (),
    ) -> None:
        super().__init__(
            "temporal_ciba.CibaPlugin",
            data_converter=ciba_data_converter(payload_key),
            activities=list(activities) or None,
            workflows=[CibaApprovalWorkflow, *workflows] if activities else None,
            interceptors=list(interceptors) or None,
        )

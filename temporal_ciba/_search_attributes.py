"""The search attributes that let operators find approvals in the Temporal UI and CLI.

They are registered on the namespace before any workflow uses them.

An unregistered search attribute makes every workflow task that upserts it fail, forever;
so the worker registers them at start when they are missing.
"""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

CIBA_STATUS = SearchAttributeKey.for_keyword("CibaStatus")
CIBA_AUTH_REQ_ID = SearchAttributeKey.for_keyword("CibaAuthReqId")
CIBA_DEADLINE = SearchAttributeKey.for_datetime("CibaDeadline")
ALL = (CIBA_STATUS, CIBA_AUTH_REQ_ID, CIBA_DEADLINE)

logger = logging.getLogger("temporal_ciba")


class SearchAttributesMissing(Exception):
    """The namespace lacks our search attributes and this client may not add them."""


def registration_command(namespace: str, missing: dict[str, IndexedValueType.ValueType]) -> str:
    """The `temporal` CLI command that registers `missing` on `namespace`."""
    names = " ".join(
        f"--name {name} --type {IndexedValueType.Name(kind).removeprefix('INDEXED_VALUE_TYPE_').title()}"
        for name, kind in sorted(missing.items())
    )
    return f"`temporal operator search-attribute create --namespace {namespace} {names}`"


async def ensure_search_attributes(client: Client) -> list[str]:
    """Add whichever of CibaStatus, CibaAuthReqId, CibaDeadline the namespace lacks; return those added."""
    namespace = client.namespace
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as exc:
        # The time-skipping test server cannot list search attributes, only add them.
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL if key.name not in known}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return []
        raise SearchAttributesMissing(
            f"namespace {namespace!r} lacks search attributes {', '.join(sorted(missing))} and this worker may not "
            f"add them ({exc.status.name}: {exc.message.strip().splitlines()[0] if exc.message.strip() else '-'}): "
            f"register them once as an operator, {registration_command(namespace, missing)} "
            "(Temporal Cloud: `tcld namespace search-attributes add`), then start the worker again"
        ) from None
    logger.info("registered search attributes %s on namespace %s", ", ".join(sorted(missing)), namespace)
    return sorted(missing)

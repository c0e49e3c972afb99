"""CIBA requests as the protocol e2e tests make them against the test OP, without Temporal."""

from __future__ import annotations

import time
from typing import Any

from temporal_ciba.ciba import (
    Acknowledgement,
    AuthenticationRequest,
    CibaClient,
    RequestBinding,
)
from temporal_ciba.ciba._backchannel import new_client_notification_token
from tests.support.op import TestOP
from tests.support.stack import PING_CLIENT

DETAILS = [
    {
        "type": "payment_initiation",
        "instructedAmount": {"currency": "EUR", "amount": "120.00"},
        "creditorName": "ACME GmbH",
        "creditorAccount": {"iban": "DE02100100109307118603"},
        "remittanceInformationUnstructured": "Invoice 2026-118",
    }
]


MODES = {"poll": "poll-basic", "ping": PING_CLIENT}


def request_for(mode: str, **fields: Any) -> AuthenticationRequest:
    values: dict[str, Any] = {
        "scope": "openid payments",
        "login_hint": "alice",
        "binding_message": "Pay EUR 120.00 to ACME GmbH",
        "authorization_details": DETAILS,
        **fields,
    }
    if mode == "ping":
        values["client_notification_token"] = new_client_notification_token()
    return AuthenticationRequest(**values)


async def approved(op: TestOP, ciba: CibaClient, mode: str, **fields: Any) -> tuple[Acknowledgement, RequestBinding]:
    """Send a request, have alice approve it; return its acknowledgement and binding."""
    request = request_for(mode, **fields)
    requested_at = time.time()
    ack = await ciba.authenticate(request)
    binding = RequestBinding.for_request(
        request,
        ack,
        issuer=op.issuer,
        client_id=ciba.client_id,
        requested_at=requested_at,
        delivery_mode=mode,  # type: ignore[arg-type]
        expected_subject="alice",
    )
    op.approve(ack.auth_req_id)
    return ack, binding

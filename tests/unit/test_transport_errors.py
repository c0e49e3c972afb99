"""Transport failures keep their cause (certificate, name resolution, refused connection) in
the message, and never a secret."""

from __future__ import annotations

import typing

import httpx
import pytest

from temporal_ciba._cli import LIST_STATUSES, build_parser
from temporal_ciba._models import ApprovalPhase
from temporal_ciba.ciba import CibaClient, ClientSecretBasic, TransportError
from temporal_ciba.ciba._discovery import fetch_provider_metadata
from tests.support.tokens import CLIENT_ID, ISSUER, METADATA, NOW

CERT_FAILURE = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"


def failing(error: Exception, *, fail_path: str | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if fail_path is None or request.url.path == fail_path:
            raise error
        return httpx.Response(200, json=METADATA)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "error,plain_words",
    [
        (httpx.ConnectError(CERT_FAILURE), "TLS certificate verification failed"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "host name does not resolve"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused"),
    ],
    ids=["certificate", "name_resolution", "refused"],
)
async def test_discovery_keeps_the_cause(error: Exception, plain_words: str) -> None:
    with pytest.raises(TransportError) as raised:
        await fetch_provider_metadata(failing(error), ISSUER, timeout=httpx.Timeout(1.0))
    message = str(raised.value)
    assert str(error) in message and plain_words in message and "ConnectError" in message
    assert len(message.splitlines()) == 1


async def test_cause_of_a_chained_error_is_kept() -> None:
    try:
        try:
            raise OSError("certificate verify failed: unable to get local issuer certificate")
        except OSError as cause:
            raise httpx.ConnectError("") from cause
    except httpx.ConnectError as error:
        chained = error
    with pytest.raises(TransportError, match="unable to get local issuer certificate"):
        await fetch_provider_metadata(failing(chained), ISSUER, timeout=httpx.Timeout(1.0))


async def test_client_requests_keep_the_cause_and_no_secret() -> None:
    ciba = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "very-secret-value"),
        http=failing(httpx.ConnectError(CERT_FAILURE), fail_path="/token"),
        clock=lambda: NOW,
    )
    with pytest.raises(TransportError) as raised:
        await ciba.request_token("req-1")
    assert CERT_FAILURE in str(raised.value) and not raised.value.request_sent
    assert "very-secret-value" not in str(raised.value)

    broken = CibaClient(
        issuer=ISSUER,
        client_auth=ClientSecretBasic(CLIENT_ID, "s"),
        http=failing(httpx.ReadError("connection reset by peer"), fail_path="/token"),
        clock=lambda: NOW,
    )
    with pytest.raises(TransportError, match="connection reset by peer") as dropped:
        await broken.request_token("req-1")
    assert dropped.value.request_sent


def test_list_statuses_are_the_phases() -> None:
    phases: set[str] = set()
    for part in typing.get_args(ApprovalPhase):
        phases.update(typing.get_args(part) or (part,))
    assert set(LIST_STATUSES) == phases
    assert build_parser().parse_args(["list", "--status", "approved"]).status == "approved"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["list", "--status", "aproved"])
    assert exited.value.code == 2

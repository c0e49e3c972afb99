"""The example agent registers itself: its workflow and its payment activity, on any worker
that also has a CibaPlugin (which brings the approval workflow it waits on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import field_validator
from temporalio.plugin import SimplePlugin

from temporal_ciba import TokenKeySettings
from temporal_ciba.ciba import ClientCertificate, require_secure_url
from temporal_ciba.crypto import TokenSealer
from temporal_ciba_examples.payment_agent.activities import PaymentActivities
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow

PAYMENT_API_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class PaymentAgentSettings(TokenKeySettings):
    """CIBA_PAYMENT_API_URL: where the payment agent pays (its worker and the runners need it)."""

    payment_api_url: str | None = None

    @field_validator("payment_api_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return require_secure_url(url, "payment_api_url") if url else None


def payment_http_client(client_certificate: ClientCertificate | None = None) -> httpx.AsyncClient:
    """The client the payment activities call the API with. RFC 8705 §3: certificate-bound
    tokens open the API only over a connection presenting that certificate."""
    return httpx.AsyncClient(
        timeout=PAYMENT_API_TIMEOUT,
        follow_redirects=False,
        verify=client_certificate.ssl_context() if client_certificate is not None else True,
    )


class PaymentAgentPlugin(SimplePlugin):
    """Registers PaymentAgentWorkflow and its payment activity; closes the HTTP client on stop."""

    def __init__(
        self,
        *,
        api_url: str,
        token_key: bytes,
        dpop: bool = False,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self._api_url = api_url
        self._dpop = dpop
        self._client_certificate = client_certificate
        self._sealer = TokenSealer(token_key)
        self._http: httpx.AsyncClient | None = None
        super().__init__(
            "temporal_ciba_examples.PaymentAgentPlugin",
            workflows=[PaymentAgentWorkflow],
            activities=self._activities,
            run_context=self._run_context,
        )

    def _activities(self, existing: Sequence[Callable[..., Any]] | None) -> list[Callable[..., Any]]:
        if self._http is None:
            self._http = payment_http_client(self._client_certificate)
        payments = PaymentActivities(self._http, self._api_url, self._sealer, dpop=self._dpop)
        return [*(existing or []), payments.execute_payment]

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._http is not None:
                http, self._http = self._http, None
                await http.aclose()
